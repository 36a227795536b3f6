"""The one detector registry; families register factories on import."""

from __future__ import annotations

import importlib

from silhouette.detectors.base import Detector
from silhouette.errors import SilhouetteError
from silhouette.registry import Registry

DETECTORS: Registry[Detector] = Registry("detector")

# Modules that register detector factories when imported.
FAMILY_MODULES = ["silhouette.detectors.onnx_zoo", "silhouette.detectors.torchvision_family"]
_loaded = False


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for mod in FAMILY_MODULES:
            importlib.import_module(mod)
        _loaded = True


def detector_names() -> list[str]:
    """Every registered detector name."""
    _load_families()
    return DETECTORS.names()


def create_detector(spec: str, **kwargs: object) -> Detector:
    """Build a detector from a name, or an ensemble from 'a+b' / 'a*0.5+b*2' (weights optional)."""
    _load_families()
    spec = spec.strip()
    if "+" not in spec:
        return DETECTORS.create(spec, **kwargs)
    from silhouette.detectors.ensemble import EnsembleDetector

    members: list[Detector] = []
    weights: list[float] = []
    for part in spec.split("+"):
        name, _, w = part.strip().partition("*")
        try:
            weights.append(float(w) if w else 1.0)
        except ValueError as exc:
            raise SilhouetteError(f"detector spec {spec!r}: weight {w!r} is not a number") from exc
        members.append(DETECTORS.create(name.strip(), **kwargs))
    return EnsembleDetector(members, weights)
