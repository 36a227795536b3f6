"""Frozen pretrained detectors behind one interface (ONNX zoo and torchvision families).

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "base": "PERSON Candidates Detections Detector DetectorInfo",
    "registry": "DETECTORS create_detector detector_names",
})
