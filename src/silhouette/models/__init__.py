"""silhouette.models: the obfuscator/deobfuscator autoencoders, checkpoints and cost counting.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MODELS": "autoencoder",
    "MobileAutoencoder": "autoencoder",
    "build_deobfuscator": "autoencoder",
    "build_model": "autoencoder",
    "build_obfuscator": "autoencoder",
    "export_checkpoint": "checkpoint",
    "load_deobfuscator": "checkpoint",
    "load_obfuscator": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "count_macs": "cost",
    "count_params": "cost",
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
