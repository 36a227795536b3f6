"""silhouette.training: the alternating obfuscator/deobfuscator game with a frozen detector.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

_EXPORTS = {
    "Config": "config",
    "config_from_dict": "config",
    "load_config": "config",
    "AdversarialEngine": "engine",
    "TrainingDiverged": "engine",
    "Trainer": "trainer",
    "evaluate": "trainer",
    "train": "trainer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
