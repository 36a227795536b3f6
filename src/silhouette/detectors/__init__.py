"""Frozen pretrained detectors behind one interface (ONNX zoo and torchvision families).

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
