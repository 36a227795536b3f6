"""The one image convention: float32 RGB in [0, 1], NCHW; helpers to cross it.

The numpy helpers (file headers, decoding, BGR <-> float CHW arrays) are the camera's route and import no torch;
the tensor helpers import torch when called, so a camera without torch can use this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    import torch

# The largest image any command or the service decodes: checked from the header before any pixel is decoded,
# so a small file that claims a huge canvas (a decompression bomb) costs nothing.
MAX_PIXELS = 4096 * 4096


# --- numpy: the camera's route ---


def bgr_to_chw(image: np.ndarray) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> float32 [3,H,W] RGB in [0,1] (as bgr_to_tensor, without torch)."""
    arr = image[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def bgr_batch(images: list[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 BGR frames (same size) -> float32 [B,3,H,W] RGB in [0,1]."""
    return np.stack([bgr_to_chw(im) for im in images])


def batch_to_bgr(batch: np.ndarray) -> list[np.ndarray]:
    """float [B,3,H,W] RGB in [0,1] -> HxWx3 uint8 BGR frames, rounded to nearest (as tensor_to_bgr)."""
    u8 = np.clip(np.rint(np.clip(batch, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(x.transpose(1, 2, 0)[..., ::-1]) for x in u8]


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit to apply: `max_pixels`, or MAX_PIXELS when None."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise SilhouetteError(f"--max-pixels {max_pixels!r}: must be a whole number >= 1")
    return int(limit)


def check_pixels(name: str, width: int, height: int, max_pixels: int | None = None, kind: str = "image") -> None:
    """Refuse an image (kind 'image') or a video's frames (kind 'video frame') over the pixel limit, in one line."""
    limit = pixel_limit(max_pixels)
    if width * height <= limit:
        return
    scale = (limit / (width * height)) ** 0.5
    fit = f"{max(1, int(width * scale))}x{max(1, int(height * scale))}"  # same aspect ratio, within the limit
    fix = "resize it" if kind == "image" else "downscale the video"
    raise SilhouetteError(
        f"{name}: {kind} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,}; "
        f"{fix} (e.g. to {fit}) or raise --max-pixels"
    )


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(W, H) of an image file from its header alone (no pixel decoded); refused if over the pixel limit."""
    import warnings

    from PIL import Image

    path = Path(path)
    limit = pixel_limit(max_pixels)
    if not path.is_file():
        raise SilhouetteError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # the header claims more than twice Pillow's own limit
        bomb = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
        raise SilhouetteError(
            f"{path}: image is over {bomb:,} pixels, more than Pillow reads (a likely decompression bomb) and over "
            f"the limit of {limit:,}; resize it"
        ) from exc
    except Exception as exc:  # Pillow raises many types (UnidentifiedImageError, SyntaxError, struct.error) on junk
        raise SilhouetteError(f"{path}: cannot read as an image (corrupt or unsupported format)") from exc
    check_pixels(str(path), width, height, limit)
    return width, height


def decode_image_file(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file once into HxWx3 uint8 BGR, after its header passed the pixel limit."""
    import cv2

    path = Path(path)
    image_size(path, max_pixels)
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV asserts instead of returning None, e.g. over OPENCV_IO_MAX_IMAGE_PIXELS
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise SilhouetteError(
                f"{path}: image is over OpenCV's decoder limit (environment variable OPENCV_IO_MAX_IMAGE_PIXELS, "
                "2^30 pixels by default); resize it or raise that limit"
            ) from exc
        raise SilhouetteError(f"{path}: OpenCV cannot decode it ({' '.join(str(exc).split())})") from exc
    if img is None:
        raise SilhouetteError(f"{path}: cannot read as an image (corrupt or unsupported format)")
    return img


# --- torch tensors: training, evaluation and the service's detectors ---


def bgr_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 BGR (OpenCV) -> 3xHxW float RGB in [0, 1]."""
    import torch

    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise SilhouetteError(f"expected an HxWx3 uint8 BGR image, got dtype {img.dtype} shape {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)


def tensor_to_bgr(t: torch.Tensor) -> np.ndarray:
    """3xHxW float RGB in [0, 1] -> HxWx3 uint8 BGR, rounded to nearest."""
    import torch

    check_image(t.unsqueeze(0) if t.ndim == 3 else t)
    t = t.squeeze(0) if t.ndim == 4 else t
    arr = t.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr[:, :, ::-1])


def check_image(x: torch.Tensor) -> None:
    """Raise a clear error unless `x` is a float Bx3xHxW tensor."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise SilhouetteError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise SilhouetteError(f"expected a float image batch in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    if x.ndim != 4 or x.shape[1] != 3:
        raise SilhouetteError(f"expected an image batch of shape [B, 3, H, W], got {tuple(x.shape)}")


def read_image(path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file into 3xHxW float RGB in [0, 1] (refused over `max_pixels`, default MAX_PIXELS)."""
    return bgr_to_tensor(decode_image_file(path, max_pixels))


def write_image(path: str | Path, t: torch.Tensor, jpeg_quality: int = 95) -> None:
    """Write 3xHxW float RGB atomically as PNG or JPEG (by suffix)."""
    import cv2

    from silhouette.fileio import atomic_path

    with atomic_path(path) as tmp:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if Path(path).suffix.lower() in {".jpg", ".jpeg"} else []
        if not cv2.imwrite(str(tmp), tensor_to_bgr(t), params):
            raise SilhouetteError(f"{path}: could not write image (unsupported suffix?)")
