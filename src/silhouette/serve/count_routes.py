"""The count queries: GET /v1/cameras, /v1/counts/{camera_id} (summary, time range, buckets) and its CSV export.

All of them read the count store, so every worker process answers the same. A bad parameter is a 422 with one line.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Security
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyHeader

from silhouette.serve.detection import check_camera
from silhouette.serve.metrics import CAMERAS_PATH
from silhouette.serve.schemas import CameraCounts, CameraInfo, CameraList, CountBucket, Error
from silhouette.serve.storage import CountStore
from silhouette.wire import API_KEY_HEADER, COUNTS_PATH

MAX_BUCKETS = 100_000  # per query: a year of 5-minute buckets; more is a mistake, not a chart
BUCKET_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_BUCKET_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|min|h|d)?$")
_TIME_DOC = "unix seconds (e.g. 1714564800) or ISO 8601 (e.g. 2024-05-01T12:00:00Z; no zone = UTC)"


def _shown(text: str) -> str:
    """A user's value quoted for a one-line message (escaped, cut short)."""
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def parse_time(text: str | None, name: str) -> float | None:
    """Unix seconds from a query value (unix seconds or ISO 8601); 422 otherwise."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.strip())
        except ValueError:
            raise HTTPException(422, f"{name}={_shown(text)}: give {_TIME_DOC}") from None
        value = (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    if not (math.isfinite(value) and 0 <= value < 1e11):
        raise HTTPException(422, f"{name}={_shown(text)}: must lie between 1970 and the year 5000")
    return value


def parse_bucket(text: str | None) -> float:
    """Bucket length in seconds from e.g. 10s, 1m, 1h, 1d or 30 (seconds); 422 otherwise."""
    match = _BUCKET_RE.match((text or "1m").strip().lower())
    seconds = float(match.group(1)) * BUCKET_UNITS[match.group(2) or "s"] if match else math.nan
    if not 1 <= seconds <= 366 * 86400:
        raise HTTPException(422, f"bucket={_shown(text or '')}: give 1s to 366d, e.g. 10s, 1m, 1h or 1d")
    return seconds


def parse_range(start: str | None, end: str | None) -> tuple[float | None, float | None]:
    """The [from, to) range of a query; 422 when `to` is before `from`."""
    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    if t0 is not None and t1 is not None and t1 < t0:
        raise HTTPException(422, f"to={_shown(end or '')} is before from={_shown(start or '')}")
    return t0, t1


def _camera(store: CountStore, camera_id: str) -> None:
    """404 unless the camera was ever seen."""
    check_camera(camera_id)
    if not store.cameras(camera_id):
        raise HTTPException(404, f"no frames seen from camera {camera_id!r}")


def summary(store: CountStore, camera_id: str, window: int) -> dict[str, Any]:
    """The old rolling summary, now of the camera's `window` most recent stored frames (every worker answers alike)."""
    rows = store.recent(camera_id, window)
    if not rows:
        _camera(store, camera_id)  # 404 for an unknown camera
        raise HTTPException(404, f"no frames of camera {camera_id!r} are stored any more (--keep-days pruned them)")
    counts = [r.count for r in rows]
    return {"camera_id": camera_id, "frames": len(rows), "window": window, "last": counts[0],
            "mean": sum(counts) / len(counts), "max": max(counts), "since": rows[-1].received_at,
            "until": rows[0].received_at}


def _csv(store: CountStore, camera_id: str, start: str | None, end: str | None) -> StreamingResponse:
    """The camera's detections in [from, to) as a streamed CSV download."""
    t0, t1 = parse_range(start, end)
    _camera(store, camera_id)
    return StreamingResponse(
        store.export_csv(camera_id, t0, t1), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{camera_id}.csv"', "Cache-Control": "no-store"},
    )


def add_count_routes(app: FastAPI, store: CountStore, window: int) -> None:
    """GET /v1/cameras, /v1/counts/{camera_id}.csv and /v1/counts/{camera_id} (sync handlers: the store blocks)."""
    key_scheme = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key"))
    from_q = Query(None, alias="from", description=f"start of the range (inclusive): {_TIME_DOC}")
    to_q = Query(None, alias="to", description=f"end of the range (exclusive): {_TIME_DOC}")
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Error, "description": f"missing or wrong {API_KEY_HEADER} header"},
        404: {"model": Error, "description": "no frames seen from this camera (or none stored any more)"},
        422: {"model": Error, "description": "bad camera id, from, to, bucket or format"},
    }
    csv_doc = {200: {"content": {"text/csv": {}}, "description": "one row per stored frame, oldest first"}}

    @app.get(CAMERAS_PATH, response_model=CameraList, dependencies=[key_scheme], summary="Cameras in the count database",
             responses={401: errors[401]})
    def cameras() -> CameraList:
        """Every camera that sent a frame, by id: first/last frame time, frames counted, latest count."""
        return CameraList(cameras=[CameraInfo(**vars(c)) for c in store.cameras()])

    @app.get(COUNTS_PATH + "/{camera_id}.csv", dependencies=[key_scheme], response_class=StreamingResponse,
             responses={**errors, **csv_doc}, summary="CSV export of one camera's stored frames")
    def counts_csv(camera_id: str, start: str | None = from_q, end: str | None = to_q) -> StreamingResponse:
        """Columns id, camera_id, idempotency_key, captured_at, received_at (ISO 8601 UTC), count, boxes, scores,
        obfuscator_id, detector_id; streamed from the database. Same as `?format=csv` on the counts endpoint."""
        return _csv(store, camera_id, start, end)

    @app.get(COUNTS_PATH + "/{camera_id}", response_model=CameraCounts, response_model_exclude_none=True,
             dependencies=[key_scheme], responses={**errors, **csv_doc}, summary="Person counts of one camera")
    def camera_counts(
        camera_id: str, start: str | None = from_q, end: str | None = to_q,
        bucket: str | None = Query(None, description="bucket length: 10s, 1m, 1h, 1d or seconds (default 1m when from or to is given)"),
        fmt: str = Query("json", alias="format", description="json, or csv for the export of the stored frames"),
    ) -> Any:
        """Summary of the camera's most recent stored frames; with from, to or bucket also per-bucket counts."""
        if fmt not in ("json", "csv"):
            raise HTTPException(422, f"format={_shown(fmt)}: json or csv")
        if fmt == "csv":
            return _csv(store, camera_id, start, end)
        check_camera(camera_id)
        t0, t1 = parse_range(start, end)
        seconds = parse_bucket(bucket)
        if t0 is not None and t1 is not None and (t1 - t0) / seconds > MAX_BUCKETS:
            raise HTTPException(422, f"from-to spans more than {MAX_BUCKETS} buckets of {seconds:g} s; give a larger bucket")
        body = summary(store, camera_id, window)
        if start is None and end is None and bucket is None:
            return CameraCounts(**body)
        buckets = [CountBucket(**vars(b)) for b in store.counts(camera_id, t0, t1, seconds)]
        return CameraCounts(**body, from_=t0, to=t1, bucket_s=seconds, buckets=buckets)
