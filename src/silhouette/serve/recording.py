"""Every answer stored in the count store: the frame's headers, one row per image, replays of a repeated key.

The database is the source of truth for counts and for exactly-once: a (camera, Idempotency-Key) is looked up there
before the detector runs, and the store's unique index decides between workers racing on the same key. Requests
without `camera_id` are counted under the camera id DEFAULT_CAMERA.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

from fastapi import HTTPException, Request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from silhouette.serve.live import LatestFrames
from silhouette.serve.schemas import DetectResult
from silhouette.serve.storage import MAX_KEY, MAX_MODEL_ID, CountStore, Frame
from silhouette.serve.storage import Detection as StoredDetection
from silhouette.wire import CAPTURE_TIME_HEADER, IDEMPOTENCY_HEADER, OBFUSCATOR_HEADER

log = logging.getLogger("silhouette.serve")

DEFAULT_CAMERA = "default"  # requests without camera_id are stored and counted under this camera id
OBFUSCATOR_ID_RE = re.compile(r"^[\x20-\x7e]{1,%d}$" % MAX_MODEL_ID)  # like Idempotency-Key, as long as the column
MAX_CAPTURE_TIME = 1e11  # unix seconds (year 5138): beyond it the header is garbage, not a clock that is off


@dataclass(frozen=True)
class Meta:
    """What a detect request says about its frames, read and checked before the body."""

    camera_id: str | None  # as given in the query (echoed in the answer)
    key: str | None
    captured_at: float | None
    obfuscator_id: str | None
    received_at: float
    endpoint: str

    @property
    def camera(self) -> str:
        """The camera id the frames are stored under."""
        return self.camera_id or DEFAULT_CAMERA


@dataclass(frozen=True)
class Found:
    """One image's detector result, rounded as the service answers it."""

    boxes: list[list[float]]
    scores: list[float]
    width: int
    height: int


def _one_header(request: Request, name: str) -> str | None:
    """The value of a header sent at most once (400 when repeated)."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise HTTPException(400, f"send {name} once, not {len(values)} times")
    return values[0] if values else None


def capture_time(request: Request) -> float | None:
    """X-Capture-Time as unix seconds (None without it); 400 unless a finite number in [0, 1e11)."""
    text = _one_header(request, CAPTURE_TIME_HEADER)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value < MAX_CAPTURE_TIME):
        raise HTTPException(400, f"{CAPTURE_TIME_HEADER} must be the capture time in unix seconds, e.g. 1714564800.25")
    return value


def obfuscator_id(request: Request) -> str | None:
    """X-Silhouette-Obfuscator (None without it); 400 unless 1-128 printable ASCII characters."""
    text = _one_header(request, OBFUSCATOR_HEADER)
    if text is not None and not OBFUSCATOR_ID_RE.match(text):
        raise HTTPException(400, f"{OBFUSCATOR_HEADER} must be 1-{MAX_MODEL_ID} printable ASCII characters")
    return text


def read_meta(request: Request, camera_id: str | None, key: str | None, endpoint: str) -> Meta:
    """The request's Meta (camera id and key already checked); its receive time is now."""
    return Meta(camera_id, key, capture_time(request), obfuscator_id(request), time.time(), endpoint)


def row_keys(key: str, n: int) -> list[str]:
    """The stored key of each image of a request: the key itself for the first, `key#i` for the others."""
    # the first image keeps the plain key, so a key reused across /v1/detect and /v1/detect/batch collides in the
    # unique index (and is refused as a reuse) instead of being counted twice
    keys = [key]
    for i in range(1, n):
        suffix = f"#{i}"
        base = key if len(key) + len(suffix) <= MAX_KEY else "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:48]
        keys.append(base + suffix)
    return keys


def _reused(key: str) -> HTTPException:
    """422 for a key already used by this camera for another request."""
    return HTTPException(422, f"{IDEMPOTENCY_HEADER} {key!r} was already used by this camera for a different request "
                              "(other images or endpoint); send a new key for each frame")


def _unavailable(exc: BaseException, store: CountStore) -> HTTPException:
    """503 for a database that failed; logged as one line without the URL's password."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    log.warning("count store %s failed: %s", store.url, reason)
    return HTTPException(503, "the count database is unavailable; retry shortly")


class Recorder:
    """Stores the results of each request and finds the first answer of a repeated key."""

    def __init__(self, store: CountStore, detector_id: str, frames: LatestFrames) -> None:
        self.store = store
        self.detector_id = detector_id[:MAX_MODEL_ID]
        self.frames = frames

    def lookup(self, meta: Meta, sha: str, n: int) -> list[StoredDetection] | None:
        """The rows stored first under this request's key, None when it is new; 422 if they came from another request."""
        assert meta.key is not None
        keys = row_keys(meta.key, n)
        try:
            found = self.store.find(meta.camera, keys)
        except SQLAlchemyError as exc:
            raise _unavailable(exc, self.store) from None
        if not found:
            return None
        rows = [found.get(k) for k in keys]
        # rows stored before schema v3 carry no fingerprint: they are trusted as the same request
        if any(r is None or (r.request_sha256 is not None and r.request_sha256 != sha) for r in rows):
            raise _reused(meta.key)
        return rows  # type: ignore[return-value]  # no None left

    def save(self, meta: Meta, sha: str, found: Sequence[Found]) -> tuple[list[StoredDetection], bool]:
        """Store one row per image (all or none); (rows, replayed): replayed when another worker stored the key first."""
        keys = None if meta.key is None else row_keys(meta.key, len(found))
        frames = [Frame(len(f.boxes), f.boxes, f.scores) for f in found]
        try:
            recorded = self.store.record_many(
                meta.camera, frames, self.detector_id, keys=keys, captured_at=meta.captured_at,
                obfuscator_id=meta.obfuscator_id, received_at=meta.received_at, request_sha256=sha,
            )
        except IntegrityError as exc:  # some keys taken (422 from lookup), or the first rows vanished meanwhile
            first = None if meta.key is None else self.lookup(meta, sha, len(found))
            if first is None:
                raise _unavailable(exc, self.store) from None
            return first, True
        except SQLAlchemyError as exc:
            raise _unavailable(exc, self.store) from None
        rows = [r.detection for r in recorded]
        if recorded and recorded[0].replayed and any(r.request_sha256 not in (None, sha) for r in rows):
            raise _reused(meta.key or "")
        return rows, bool(recorded and recorded[0].replayed)

    def keep_frame(self, meta: Meta, data: bytes, found: Found) -> None:
        """Keep the request's last obfuscated image in memory for the dashboard (never on disk)."""
        boxes = [[*b, s] for b, s in zip(found.boxes, found.scores)]
        self.frames.keep(meta.camera, data, boxes)


def stored_answers(rows: Sequence[StoredDetection], sizes: Sequence[tuple[int, int]], meta: Meta) -> list[DetectResult]:
    """The answer of a request, built from its stored rows: a first answer and its replays are the same bytes."""
    return [
        DetectResult(boxes=row.boxes, scores=row.scores, count=row.count, detector=row.detector_id.partition("@")[0],
                     width=w, height=h, camera_id=meta.camera_id)
        for row, (w, h) in zip(rows, sizes)
    ]


def detector_id(name: str, pair_id: str | None) -> str:
    """What is stored as the detector of each row: its name, plus the private pair's id ('name@pair')."""
    return name if pair_id is None else f"{name}@{pair_id}"


def found_from(dets: Any, width: int, height: int) -> Found:
    """A detector's person detections of one image, rounded as answered (2 decimals for boxes, 4 for scores)."""
    return Found(
        boxes=[[round(float(v), 2) for v in b] for b in dets.boxes.tolist()],
        scores=[round(float(s), 4) for s in dets.scores.tolist()],
        width=int(width), height=int(height),
    )
