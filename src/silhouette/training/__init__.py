"""silhouette.training: the alternating obfuscator/deobfuscator game with a frozen detector.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "config": "Config config_from_dict load_config",
    "engine": "AdversarialEngine TrainingDiverged",
    "trainer": "Trainer train",
    "validation": "evaluate",
})
