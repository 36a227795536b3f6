"""The service's response models and its OpenAPI texts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from silhouette.wire import API_KEY_HEADER, IDEMPOTENCY_HEADER, REPLAYED_HEADER


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
    """Rolling person counts of one camera."""

    camera_id: str
    frames: int = Field(description="frames in the window")
    window: int = Field(description="window length in frames")
    last: int = Field(description="count of the most recent frame")
    mean: float
    max: int
    since: float = Field(description="unix time of the oldest frame in the window")
    until: float = Field(description="unix time of the newest frame")

class Error(BaseModel):
    detail: str


SERVICE_DOC = (
    "Counts persons on **obfuscated** frames sent by silhouette edge cameras. "
    f"Every /v1 endpoint needs the `{API_KEY_HEADER}` header. Images are never stored or logged: uploads are parsed "
    f"in memory and dropped after detection. Send an `{IDEMPOTENCY_HEADER}` header (e.g. `cam1:frame:17`) with each "
    "frame, so that a retry is answered with the first result and counted once."
)
IDEMPOTENCY_DOC = (
    "Optional key of this frame, 1-200 printable ASCII characters, e.g. `cam1:frame:17`. The service counts each "
    "(camera_id, key) once: a repeat (a retry) is answered with the first result and the header "
    f"`{REPLAYED_HEADER}: true`, and a repeat sent while the first is still in progress waits for it. Recent keys are "
    "kept in memory per worker process (least recently used forgotten); a key reused with other images gets 422."
)


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
        400: {"model": Error, "description": f"not an image, no image in the request, or a malformed {IDEMPOTENCY_HEADER}"},
        401: {"model": Error, "description": f"missing or wrong {API_KEY_HEADER} header"},
        413: {"model": Error, "description": "body larger than --max-bytes, an image larger than --max-pixels, more images or "
              "more pixels in one request than --max-request-pixels allows"},
        415: {"model": Error, "description": "image format not accepted"},
        422: {"model": Error, "description": f"truncated or corrupt image, bad camera_id, or an {IDEMPOTENCY_HEADER} reused for other images"},
        503: {"model": Error, "description": "more requests in progress than --max-concurrency; retry"},
    }
