"""The HTTP protocol between camera and cloud: API paths, header names, identifiers, the API key, content types.

Both sides import this module and nothing of each other: `silhouette.edge` posts frames, `silhouette.serve` answers
them. The frame bytes themselves are encoded and decoded by `silhouette.imaging` (encode_frame, decode_frame).
Standard library only: no torch, no web framework, no image library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from silhouette.errors import SilhouetteError

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

# frame bytes: what the camera sends (imaging.encode_frame), under which Content-Type
FRAME_FORMATS = ("png", "jpg")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


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
