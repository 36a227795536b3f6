"""Where the shared read-only assets (footage, detector weights) live."""

from __future__ import annotations

import os
from pathlib import Path

from silhouette.errors import SilhouetteError

ENV_SHARED = "SILHOUETTE_SHARED"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
DEFAULT_CHECKPOINT = ASSETS_DIR / "obfuscator_default.pt"  # what every command uses without --checkpoint
# the same obfuscator exported to ONNX: what the camera runs without --checkpoint, so it needs no torch
DEFAULT_ONNX = DEFAULT_CHECKPOINT.with_suffix(".onnx")


def shared_dir(required: bool = True) -> Path:
    """Return the shared folder: $SILHOUETTE_SHARED, else ../shared beside the checkout or CWD."""
    env = os.environ.get(ENV_SHARED)
    if env:
        path = Path(env).expanduser()
        if required and not path.is_dir():
            raise SilhouetteError(f"{ENV_SHARED}={env} is not a folder; point it at the shared data/weights folder")
        return path
    for cand in (REPO_ROOT.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if cand.is_dir():
            return cand
    if required:
        raise SilhouetteError(f"shared folder not found; set {ENV_SHARED} to the folder holding data/ and weights/")
    return REPO_ROOT.parent / "shared"


def weights_dir() -> Path:
    """Folder of the shared ONNX detector zoo."""
    return shared_dir() / "weights"


def data_dir() -> Path:
    """Folder of the shared footage."""
    return shared_dir() / "data"
