"""silhouette.training: the alternating obfuscator/deobfuscator game with a frozen detector.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
