"""The one image convention, and every step across it.

On the frame path every picture is a numpy HxWx3 uint8 *frame* in BGR order (OpenCV's): what the camera decodes, what
it resizes and encodes for the wire, and what the service decodes from an upload. Models see float32 RGB in [0, 1],
NCHW. This module holds every step between the two: decoding files and uploaded bytes (pixel limits checked from the
header first), colour normalisation, resizing, encoding the wire bytes, and the array and tensor conversions.
The numpy helpers import no torch (the camera runs without it); the tensor helpers import torch when called.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    import torch

# The largest image any command or the service decodes: checked from the header before any pixel is decoded,
# so a small file that claims a huge canvas (a decompression bomb) costs nothing.
MAX_PIXELS = 4096 * 4096
DEFAULT_SIZE = (320, 200)  # (W, H): the paper's frame size, what the obfuscator sees
DECODABLE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}  # what decode_frame accepts from an upload (Pillow's names)


# --- limits ---


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


# --- frames: numpy HxWx3 uint8 BGR, the camera's route (no torch) ---


def as_bgr(image: np.ndarray, name: str) -> np.ndarray:
    """A decoder's output (grey, BGR or BGRA, 8-bit) as an HxWx3 uint8 BGR frame; one-line error for other depths."""
    import cv2

    if image.dtype != np.uint8:
        raise SilhouetteError(f"{name}: decoded frames have dtype {image.dtype}; only 8-bit footage is supported")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def resize_frame(image: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """An HxWx3 frame resized to size=(W, H) with INTER_AREA (the dataset recipe); returned as is when it fits."""
    import cv2

    w, h = int(size[0]), int(size[1])
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def bgr_to_chw(image: np.ndarray) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> float32 [3,H,W] RGB in [0,1] (as bgr_to_tensor, without torch)."""
    arr = image[..., ::-1].astype(np.float32)
    arr /= np.float32(255.0)  # a true division, as torch's: the camera's floats equal the tensor helpers' bit for bit
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def bgr_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 BGR frames (same size) -> float32 [B,3,H,W] RGB in [0,1]."""
    return np.stack([bgr_to_chw(im) for im in images])


def batch_to_bgr(batch: np.ndarray) -> list[np.ndarray]:
    """float [B,3,H,W] RGB in [0,1] -> HxWx3 uint8 BGR frames, rounded to nearest (as tensor_to_bgr)."""
    u8 = np.clip(np.rint(np.clip(batch, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(x.transpose(1, 2, 0)[..., ::-1]) for x in u8]


# --- image files (commands): header first, then one decode ---


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


# --- frame bytes: what the camera encodes and the service decodes (the HTTP side is silhouette.wire) ---


def encode_frame(image: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 BGR frame as JPEG (quality 1-100) or PNG (lossless)."""
    import cv2

    fmt = fmt.lower().lstrip(".")
    if fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", image)
    else:
        raise SilhouetteError(f"--format {fmt!r}: choose png or jpg")
    if not ok:
        raise SilhouetteError(f"could not encode a {image.shape} frame as {fmt}")
    return buf.tobytes()


class ImageError(Exception):
    """An upload that is not a usable image; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _open_frame(data: bytes, max_pixels: int) -> Any:
    """Open an upload lazily (header only), check format and size; raise ImageError (400/413/415/422) otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(400, "empty upload: send one image (JPEG or PNG) as the request body or a multipart 'file' field")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(400, "the upload is not an image (JPEG, PNG, BMP or WebP expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning raises under -W error
        # Pillow's own ceiling (2x Image.MAX_IMAGE_PIXELS) fired before our check: still an oversized image, so 413
        raise ImageError(413, f"image declares more pixels than Pillow will open, more than the limit of {max_pixels}") from None
    except Exception as exc:  # Pillow raises assorted errors for hostile headers
        raise ImageError(400, f"the upload is not a readable image ({type(exc).__name__})") from None
    w, h = img.size
    problem = None
    if img.format not in DECODABLE_FORMATS:
        problem = ImageError(415, f"image format {img.format} is not accepted; send JPEG, PNG, BMP or WebP")
    elif w * h > max_pixels:  # from the header, before any pixel is decoded: a decompression bomb costs nothing
        problem = ImageError(413, f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    elif w < 1 or h < 1:
        problem = ImageError(422, f"image has an empty size {w}x{h}")
    if problem is not None:
        img.close()
        raise problem
    return img


def probe_frame(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an upload from its header alone, format and size checked; no pixel is decoded."""
    img = _open_frame(data, max_pixels)
    try:
        return img.size
    finally:
        img.close()


def decode_frame(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded JPEG/PNG/BMP/WebP into an HxWx3 uint8 BGR frame; raise ImageError (400/413/415/422) otherwise.

    The frame is a channel-reversed view of the decoded RGB pixels (no copy); bgr_batch_to_tensor reverses it back
    without copying either. Take np.ascontiguousarray of it before handing it to an OpenCV call that writes into it.
    """
    img = _open_frame(data, max_pixels)
    try:
        img.load()
        # an RGB image is copied once into the array; other modes are converted first (the copy is freed at once)
        rgb = np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(422, f"the {img.format} image is truncated or corrupt and cannot be decoded ({exc})") from None
    finally:
        img.close()
    return rgb[:, :, ::-1]


def limit_png_text() -> None:
    """Cap PNG text/ICC chunks, which Pillow decompresses while reading the header (64 MiB per image by default)."""
    from PIL import PngImagePlugin

    # the service never reads PNG metadata; a small cap keeps the header pass of a 64-image batch cheap
    PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, 1024 * 1024)
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 4 * 1024 * 1024)


# --- torch tensors: training, evaluation and the service's detectors ---


def _check_frame(image: np.ndarray) -> None:
    """Raise a clear error unless `image` is an HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"dtype {image.dtype} shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise SilhouetteError(f"expected an HxWx3 uint8 BGR image, got {got}")


def bgr_batch_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 BGR frames of one size -> float32 [B,3,H,W] RGB in [0, 1] (one uint8 copy, then the floats)."""
    import torch

    if not images:
        raise SilhouetteError("expected at least one frame, got none")
    for im in images:
        _check_frame(im)
    # reversing the channels while stacking costs no extra copy; a decoded upload (a reversed view) comes back to
    # its contiguous RGB memory and is not copied at all when it is alone
    rgb = [im[:, :, ::-1] for im in images]
    stacked = np.ascontiguousarray(rgb[0])[None] if len(rgb) == 1 else np.stack(rgb)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)


def bgr_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 BGR (OpenCV) -> 3xHxW float RGB in [0, 1]."""
    return bgr_batch_to_tensor([img])[0]


def _hwc_u8(t: torch.Tensor) -> np.ndarray:
    """3xHxW (or 1x3xHxW) float RGB in [0, 1] -> an HxWx3 uint8 RGB view, rounded to nearest."""
    import torch

    check_image(t.unsqueeze(0) if t.ndim == 3 else t)
    t = t.squeeze(0) if t.ndim == 4 else t
    return t.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def tensor_to_rgb(t: torch.Tensor) -> np.ndarray:
    """3xHxW float RGB in [0, 1] -> HxWx3 uint8 RGB, rounded to nearest (for RGB libraries: MTCNN, matplotlib)."""
    return np.ascontiguousarray(_hwc_u8(t))


def tensor_to_bgr(t: torch.Tensor) -> np.ndarray:
    """3xHxW float RGB in [0, 1] -> HxWx3 uint8 BGR frame, rounded to nearest."""
    return np.ascontiguousarray(_hwc_u8(t)[:, :, ::-1])


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
