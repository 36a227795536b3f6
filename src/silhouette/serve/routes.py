"""The HTTP routes: POST /v1/detect and /v1/detect/batch, GET /healthz and /metrics (the count queries: count_routes)."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI, Header, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from silhouette.serve.detection import Detection
from silhouette.serve.metrics import Metrics
from silhouette.serve.schemas import CAPTURE_TIME_DOC, IDEMPOTENCY_DOC, OBFUSCATOR_DOC, DetectResult, errors_doc, image_body_doc
from silhouette.wire import (
    API_KEY_HEADER, CAPTURE_TIME_HEADER, DETECT_BATCH_PATH, DETECT_PATH, HEALTH_PATH, IDEMPOTENCY_HEADER, METRICS_PATH,
    OBFUSCATOR_HEADER,
)


def add_detect_routes(app: FastAPI, svc: Detection) -> None:
    """POST /v1/detect and /v1/detect/batch."""
    key_scheme = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key"))
    camera_q = Query(None, description="camera id the frames are counted under (without one: camera 'default')")
    # document the headers in OpenAPI; they are read and validated in Detection.answer, before the body
    key_h = Header(None, alias=IDEMPOTENCY_HEADER, description=IDEMPOTENCY_DOC)
    time_h = Header(None, alias=CAPTURE_TIME_HEADER, description=CAPTURE_TIME_DOC)
    obf_h = Header(None, alias=OBFUSCATOR_HEADER, description=OBFUSCATOR_DOC)

    @app.post(
        DETECT_PATH, response_model=DetectResult, responses=errors_doc(), dependencies=[key_scheme],
        summary="Detect persons on one obfuscated image", openapi_extra=image_body_doc(False),
    )
    async def detect(
        request: Request, response: Response, camera_id: str | None = camera_q,
        idempotency_key: str | None = key_h, capture_time: str | None = time_h, obfuscator: str | None = obf_h,  # noqa: ARG001
    ) -> DetectResult:
        """One image as multipart field `file` or as the raw body (image/jpeg, image/png)."""
        return (await svc.answer(request, response, camera_id, DETECT_PATH))[0]

    @app.post(
        DETECT_BATCH_PATH, response_model=list[DetectResult], responses=errors_doc(), dependencies=[key_scheme],
        summary="Detect persons on several obfuscated images", openapi_extra=image_body_doc(True),
    )
    async def detect_batch(
        request: Request, response: Response, camera_id: str | None = camera_q,
        idempotency_key: str | None = key_h, capture_time: str | None = time_h, obfuscator: str | None = obf_h,  # noqa: ARG001
    ) -> list[DetectResult]:
        """Several images as multipart fields `files`, decoded one after another, answered in order; all fail if one is bad."""
        return await svc.answer(request, response, camera_id, DETECT_BATCH_PATH)


def add_other_routes(app: FastAPI, metrics: Metrics, health: Callable[[], dict[str, Any]]) -> None:
    """GET /healthz and /metrics."""

    @app.get(HEALTH_PATH, summary="Liveness and readiness")
    async def healthz() -> dict[str, Any]:
        """Always answers while the process serves; no authentication."""
        return health()

    @app.get(METRICS_PATH, summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prom_metrics() -> Response:
        """Requests, errors, latency histogram, images and persons counted (this worker process only)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
