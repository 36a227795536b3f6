"""Frozen pretrained detectors behind one interface (ONNX zoo and torchvision families).

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PERSON": "base",
    "Candidates": "base",
    "Detections": "base",
    "Detector": "base",
    "DetectorInfo": "base",
    "DETECTORS": "registry",
    "create_detector": "registry",
    "detector_names": "registry",
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
