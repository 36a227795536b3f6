"""Frozen pretrained detectors behind one interface (ONNX zoo and torchvision families)."""

from silhouette.detectors.base import PERSON, Candidates, Detections, Detector, DetectorInfo
from silhouette.detectors.registry import DETECTORS, create_detector, detector_names

__all__ = ["PERSON", "Candidates", "Detections", "Detector", "DetectorInfo", "DETECTORS", "create_detector", "detector_names"]
