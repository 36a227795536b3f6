"""The wire format between camera and cloud: API paths, header names, the API key, and the frame bytes sent.

Both sides import this module and nothing of each other: `silhouette.edge` encodes and posts frames,
`silhouette.serve` decodes and answers them. It needs numpy, Pillow and OpenCV only (no torch, no web framework).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from silhouette.errors import SilhouetteError
from silhouette.imaging import MAX_PIXELS

# API paths
DETECT_PATH = "/v1/detect"
DETECT_BATCH_PATH = "/v1/detect/batch"
COUNTS_PATH = "/v1/counts"  # GET /v1/counts/{camera_id}
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
API_PREFIX = "/v1/"  # every path under it needs the API key
ENDPOINTS = (DETECT_PATH, DETECT_BATCH_PATH, COUNTS_PATH, HEALTH_PATH, METRICS_PATH)

# headers
API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"  # one per frame: a retried frame is answered again, counted once
REPLAYED_HEADER = "Idempotent-Replayed"  # the service marks an answer replayed from an earlier request
PAIR_HEADER = "X-Silhouette-Pair"  # a private-mode camera names the obfuscator/detector pair it needs
CAPTURE_TIME_HEADER = "X-Capture-Time"  # unix seconds when the camera captured the frame (a spooled frame keeps it)
OBFUSCATOR_HEADER = "X-Silhouette-Obfuscator"  # which obfuscator made the frame (sha256 prefix of its model file)
DEFAULT_API_KEY_ENV = "SILHOUETTE_API_KEY"

# identifiers
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # the `camera_id` query parameter
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x20-\x7e]{1,200}$")  # printable ASCII, e.g. "cam1:run:17"

# frame bytes
FRAME_FORMATS = ("png", "jpg")  # what the camera sends
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}  # what the service decodes (Pillow's names)


def frame_key(camera_id: str | None, run_id: str, index: int | str) -> str:
    """The Idempotency-Key of one frame: camera id, the client run's random id and the frame index (or a call tag)."""
    return f"{camera_id or 'camera'}:{run_id}:{index}"


def load_api_key(env_name: str | None = DEFAULT_API_KEY_ENV, file: str | os.PathLike[str] | None = None) -> str:
    """The API key from a file (first line) or an environment variable; clear error if neither gives one."""
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise SilhouetteError(f"--api-key-file {path}: file not found")
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise SilhouetteError(f"--api-key-file {path}: file is empty; write the API key on its first line")
        return key
    key = os.environ.get(env_name or "", "").strip()
    if not key:
        raise SilhouetteError(f"no API key: set ${env_name or DEFAULT_API_KEY_ENV} or pass --api-key-file FILE")
    return key


def content_type(fmt: str) -> str:
    """The Content-Type of a frame encoded as `fmt` (png or jpg)."""
    fmt = "jpg" if fmt.lower().lstrip(".") in ("jpg", "jpeg") else fmt.lower().lstrip(".")
    if fmt not in CONTENT_TYPES:
        raise SilhouetteError(f"--format {fmt!r}: choose png or jpg")
    return CONTENT_TYPES[fmt]


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
    if img.format not in ALLOWED_FORMATS:
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
    """Decode an uploaded JPEG/PNG/BMP/WebP into HxWx3 uint8 RGB; raise ImageError (400/413/415/422) otherwise."""
    img = _open_frame(data, max_pixels)
    try:
        img.load()
        # an RGB image is copied once into the array; other modes are converted first (the copy is freed at once)
        rgb = np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(422, f"the {img.format} image is truncated or corrupt and cannot be decoded ({exc})") from None
    finally:
        img.close()
    return rgb


def limit_png_text() -> None:
    """Cap PNG text/ICC chunks, which Pillow decompresses while reading the header (64 MiB per image by default)."""
    from PIL import PngImagePlugin

    # the service never reads PNG metadata; a small cap keeps the header pass of a 64-image batch cheap
    PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, 1024 * 1024)
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 4 * 1024 * 1024)
