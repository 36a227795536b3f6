"""The service's response models and its OpenAPI texts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from silhouette.wire import API_KEY_HEADER, CAPTURE_TIME_HEADER, IDEMPOTENCY_HEADER, OBFUSCATOR_HEADER, REPLAYED_HEADER


class DetectResult(BaseModel):
    """Person detections on one image."""

    boxes: list[list[float]] = Field(description="person boxes [x1, y1, x2, y2] in pixels of the uploaded image")
    scores: list[float] = Field(description="detector confidence per box")
    count: int = Field(description="number of persons detected")
    detector: str = Field(description="detector that produced the boxes")
    width: int = Field(description="width of the uploaded image in pixels")
    height: int = Field(description="height of the uploaded image in pixels")
    camera_id: str | None = Field(default=None, description="camera id given in the query, if any")


class CountsSummary(BaseModel):
    """Person counts of one camera's most recent stored frames."""

    camera_id: str
    frames: int = Field(description="stored frames in the window")
    window: int = Field(description="window length: the camera's most recent frames, at most this many")
    last: int = Field(description="count of the most recent frame")
    mean: float
    max: int
    since: float = Field(description="unix time the oldest frame in the window was received")
    until: float = Field(description="unix time the newest frame was received")


class CountBucket(BaseModel):
    """Counts of the frames received in [start, start + bucket_s); buckets without frames are left out."""

    start: float = Field(description="unix time the bucket starts (buckets are aligned to the epoch)")
    frames: int
    mean: float
    max: int
    last: int = Field(description="count of the bucket's most recent frame")


class CameraCounts(CountsSummary):
    """The summary, plus per-bucket counts when from, to or bucket is given."""

    model_config = ConfigDict(populate_by_name=True)

    from_: float | None = Field(default=None, alias="from", description="start of the range, unix seconds (inclusive)")
    to: float | None = Field(default=None, description="end of the range, unix seconds (exclusive)")
    bucket_s: float | None = Field(default=None, description="bucket length in seconds")
    buckets: list[CountBucket] | None = Field(default=None, description="per-bucket counts in the range, oldest first")


class CameraInfo(BaseModel):
    """A camera the service has stored frames of."""

    id: str
    first_seen: float = Field(description="unix time its first frame was received")
    last_seen: float = Field(description="unix time its latest frame was received")
    frames: int = Field(description="frames counted over its lifetime (kept when old detections are pruned)")
    last_count: int | None = Field(description="count of its latest stored frame; null once all were pruned")


class CameraList(BaseModel):
    """Every camera in the count database."""

    cameras: list[CameraInfo]


class Error(BaseModel):
    detail: str


SERVICE_DOC = (
    "Counts persons on **obfuscated** frames sent by silhouette edge cameras. "
    f"Every /v1 endpoint needs the `{API_KEY_HEADER}` header. Each result (camera, times, count, boxes, scores) is "
    "stored in the count database (`--db`), shared by all worker processes and kept across restarts for "
    "`--keep-days`; images are never stored or logged: uploads are parsed in memory and only the latest frame of each "
    f"camera is kept, in RAM, for the dashboard at `/`. Send an `{IDEMPOTENCY_HEADER}` header (e.g. `cam1:frame:17`) "
    "with each frame, so that a retry is answered with the first result and counted once."
)
IDEMPOTENCY_DOC = (
    "Optional key of this frame, 1-200 printable ASCII characters, e.g. `cam1:frame:17`. The service counts each "
    "(camera_id, key) once: a repeat (a retry) is answered with the first result and the header "
    f"`{REPLAYED_HEADER}: true`, and a repeat sent while the first is still in progress waits for it. Keys are stored "
    "with the results in the count database, so this holds across worker processes and restarts (until `--keep-days` "
    "prunes the frame); a key reused with other images gets 422."
)
CAPTURE_TIME_DOC = "Optional: when the camera captured the frame, unix seconds (e.g. `1714564800.25`); stored as captured_at."
OBFUSCATOR_DOC = "Optional: id of the obfuscator that made the frame (1-128 printable ASCII characters); stored as obfuscator_id."


def image_body_doc(multiple: bool) -> dict[str, Any]:
    """OpenAPI requestBody: multipart upload, or (single image only) the raw image as the body."""
    field_name = "files" if multiple else "file"
    schema: dict[str, Any] = {"type": "string", "format": "binary"}
    prop = {"type": "array", "items": schema} if multiple else schema
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": {field_name: prop}, "required": [field_name]}}
    }
    if not multiple:
        for mime in ("image/jpeg", "image/png"):
            content[mime] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


def errors_doc() -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses of the detect endpoints."""
    return {
        400: {"model": Error, "description": f"not an image, no image in the request, or a malformed {IDEMPOTENCY_HEADER}, "
              f"{CAPTURE_TIME_HEADER} or {OBFUSCATOR_HEADER}"},
        401: {"model": Error, "description": f"missing or wrong {API_KEY_HEADER} header"},
        413: {"model": Error, "description": "body larger than --max-bytes, an image larger than --max-pixels, more images or "
              "more pixels in one request than --max-request-pixels allows"},
        415: {"model": Error, "description": "image format not accepted"},
        422: {"model": Error, "description": f"truncated or corrupt image, bad camera_id, or an {IDEMPOTENCY_HEADER} reused for other images"},
        503: {"model": Error, "description": "more requests in progress than --max-concurrency, or the count database "
              "is unavailable; retry"},
    }
