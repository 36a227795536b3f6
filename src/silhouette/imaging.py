"""The one image convention: float32 RGB in [0, 1], NCHW torch tensors; helpers to cross it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from silhouette.errors import SilhouetteError


def bgr_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 BGR (OpenCV) -> 3xHxW float RGB in [0, 1]."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise SilhouetteError(f"expected an HxWx3 uint8 BGR image, got dtype {img.dtype} shape {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)


def tensor_to_bgr(t: torch.Tensor) -> np.ndarray:
    """3xHxW float RGB in [0, 1] -> HxWx3 uint8 BGR, rounded to nearest."""
    check_image(t.unsqueeze(0) if t.ndim == 3 else t)
    t = t.squeeze(0) if t.ndim == 4 else t
    arr = t.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr[:, :, ::-1])


def check_image(x: torch.Tensor) -> None:
    """Raise a clear error unless `x` is a float Bx3xHxW tensor."""
    if not isinstance(x, torch.Tensor):
        raise SilhouetteError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise SilhouetteError(f"expected a float image batch in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    if x.ndim != 4 or x.shape[1] != 3:
        raise SilhouetteError(f"expected an image batch of shape [B, 3, H, W], got {tuple(x.shape)}")


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file into 3xHxW float RGB in [0, 1]."""
    import cv2

    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SilhouetteError(f"{path}: cannot read as an image (missing, corrupt or unsupported format)")
    return bgr_to_tensor(img)


def write_image(path: str | Path, t: torch.Tensor, jpeg_quality: int = 95) -> None:
    """Write 3xHxW float RGB atomically as PNG or JPEG (by suffix)."""
    import cv2

    from silhouette.fileio import atomic_path

    with atomic_path(path) as tmp:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if Path(path).suffix.lower() in {".jpg", ".jpeg"} else []
        if not cv2.imwrite(str(tmp), tensor_to_bgr(t), params):
            raise SilhouetteError(f"{path}: could not write image (unsupported suffix?)")
