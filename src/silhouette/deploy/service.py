"""The cloud side: a FastAPI person-detection service for obfuscated frames (stateless but for rolling counts)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter as Tally
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, ClassVar

import h11
import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from silhouette.errors import SilhouetteError
from silhouette.imaging import MAX_PIXELS

log = logging.getLogger("silhouette.serve")

API_KEY_HEADER = "X-API-Key"
PAIR_HEADER = "X-Silhouette-Pair"  # a private-mode camera names the obfuscator/detector pair it needs
IDEMPOTENCY_HEADER = "Idempotency-Key"  # the edge client sends it; keep the name in step with deploy/edge.py
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x20-\x7e]{1,200}$")  # printable ASCII, e.g. "cam1:frame:17"
DEFAULT_API_KEY_ENV = "SILHOUETTE_API_KEY"
ENV_CONFIG = "SILHOUETTE_SERVE_CONFIG"  # JSON ServiceConfig handed to each uvicorn worker process
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = MAX_PIXELS  # alias of silhouette.imaging.MAX_PIXELS, kept for code that imported it from here
REQUEST_PIXELS_PER_MAX = 4  # default --max-request-pixels: 4 x --max-pixels, header-declared pixels of one request
DEFAULT_MAX_REQUEST_PIXELS = REQUEST_PIXELS_PER_MAX * MAX_PIXELS
# default --max-decoded-pixels: --max-pixels, one largest image at a time; through YOLOX-Nano's float interface a
# pixel costs ~40 bytes at its peak (measured: +0.7 GB for one 4096x4096 image), so this bounds detection memory
DEFAULT_MAX_DECODED_PIXELS = MAX_PIXELS
DEFAULT_MAX_CONCURRENCY = 32  # /v1 requests in progress per worker; each may hold a body of up to --max-bytes
DEFAULT_IDEMPOTENCY_CACHE = 10_000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE = 5.0
DEFAULT_MAX_CONNECTIONS = 1000
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; h11 answers 400 to more
FD_RESERVE = 128  # descriptors left for everything but client sockets (listener, model files, logs, event loop)
# listen queue, and also how many sockets asyncio accepts per loop turn; an accepted socket reaches connection_made()
# (which may refuse it) two turns later and its descriptor is freed a turn after that, so a flood holds up to about
# ACCEPT_HEADROOM descriptors beyond --max-connections; they must fit under ulimit -n (uvicorn's backlog of 2048 did not)
BACKLOG = 128
ACCEPT_HEADROOM = 4 * BACKLOG
DROP_LOG_EVERY_S = 10.0
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENDPOINTS = ("/v1/detect", "/v1/detect/batch", "/v1/counts", "/healthz", "/metrics")
_BUSY_TEXT = b"too many open connections\n"
# written to a connection refused at --max-connections before any byte of it is read; then the socket is closed
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BUSY_TEXT)).encode() + b"\r\n\r\n" + _BUSY_TEXT
)


def _require_positive(name: str, value: Any, integer: bool) -> None:
    """One-line SilhouetteError naming the CLI option unless `value` is a positive finite number (a whole one if `integer`)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (integer and not isinstance(value, int)) or not math.isfinite(value) or value <= 0:
        kind = "a whole number >= 1" if integer else "a positive number of seconds"
        raise SilhouetteError(f"--{name.replace('_', '-')} {value!r}: must be {kind}")


@dataclass(frozen=True)
class ConnectionLimits:
    """Socket-level limits of one server, applied by GuardedH11Protocol below the ASGI app."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # request line + headers must be complete within this, however they trickle
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # the whole body must arrive within this after the headers
    keep_alive: float = DEFAULT_KEEP_ALIVE  # idle time allowed between requests on one connection
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open client sockets per worker (lowered to fit ulimit -n)

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            _require_positive(name, getattr(self, name), integer=False)
        _require_positive("max_connections", self.max_connections, integer=True)


@dataclass
class ServiceConfig:
    """Everything a worker process needs to build the app (the API key travels by env-var name or file, never inline)."""

    detector: str = "yolox_nano"
    api_key_env: str | None = DEFAULT_API_KEY_ENV
    api_key_file: str | None = None
    no_auth: bool = False
    batch_size: int = 1
    batch_wait_ms: float = 5.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_batch_images: int = 64
    counts_window: int = 600
    max_cameras: int = 1024
    threads: int | None = None
    max_request_pixels: int | None = None  # None: 4 x max_pixels
    max_decoded_pixels: int | None = None  # None: max_pixels
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    idempotency_cache: int = DEFAULT_IDEMPOTENCY_CACHE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive: float = DEFAULT_KEEP_ALIVE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pair: str | None = None  # a private-mode checkpoint: serve the detector saved beside it, for its cameras only

    def limits(self) -> ConnectionLimits:
        """The socket-level part of the config (validated: a bad value raises a one-line SilhouetteError)."""
        return ConnectionLimits(self.header_timeout, self.body_timeout, self.keep_alive, self.max_connections)

    def check(self) -> None:
        """Validate every limit before a socket is bound or a detector loaded."""
        self.limits()
        _resolve_app_limits(
            self.batch_size, self.max_bytes, self.max_pixels, self.max_request_pixels, self.max_decoded_pixels,
            self.max_concurrency, self.idempotency_cache, self.max_batch_images,
        )


def _resolve_app_limits(
    batch_size: int, max_bytes: int, max_pixels: int, max_request_pixels: int | None, max_decoded_pixels: int | None,
    max_concurrency: int, idempotency_cache: int, max_batch_images: int,
) -> tuple[int, int]:
    """(max_request_pixels, max_decoded_pixels), defaults derived from max_pixels; one-line SilhouetteError for a bad limit."""
    if not isinstance(max_bytes, int) or not isinstance(max_pixels, int) or max_bytes < 1024 or max_pixels < 64:
        raise SilhouetteError("--max-bytes must be >= 1024 and --max-pixels >= 64")
    max_request_pixels = REQUEST_PIXELS_PER_MAX * max_pixels if max_request_pixels is None else max_request_pixels
    max_decoded_pixels = max_pixels if max_decoded_pixels is None else max_decoded_pixels
    for name, value in (
        ("batch_size", batch_size), ("max_request_pixels", max_request_pixels), ("max_decoded_pixels", max_decoded_pixels),
        ("max_concurrency", max_concurrency), ("idempotency_cache", idempotency_cache), ("max_batch_images", max_batch_images),
    ):
        _require_positive(name, value, integer=True)
    for name, value in (("max_request_pixels", max_request_pixels), ("max_decoded_pixels", max_decoded_pixels)):
        if value < max_pixels:  # else an image allowed by --max-pixels could never be served
            raise SilhouetteError(f"--{name.replace('_', '-')} {value}: must be >= --max-pixels ({max_pixels})")
    return max_request_pixels, max_decoded_pixels


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


class ImageError(Exception):
    """An upload that is not a usable image; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _open_image(data: bytes, max_pixels: int) -> Any:
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


def probe_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an upload from its header alone, format and size checked; no pixel is decoded."""
    img = _open_image(data, max_pixels)
    try:
        return img.size
    finally:
        img.close()


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded JPEG/PNG/BMP/WebP into HxWx3 uint8 RGB; raise ImageError (400/413/415/422) otherwise."""
    img = _open_image(data, max_pixels)
    try:
        img.load()
        # an RGB image is copied once into the array; other modes are converted first (the copy is freed at once)
        rgb = np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(422, f"the {img.format} image is truncated or corrupt and cannot be decoded ({exc})") from None
    finally:
        img.close()
    return rgb


def _limit_png_text() -> None:
    """Cap PNG text/ICC chunks, which Pillow decompresses while reading the header (64 MiB per image by default)."""
    from PIL import PngImagePlugin

    # the service never reads PNG metadata; a small cap keeps the header pass of a 64-image batch cheap
    PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, 1024 * 1024)
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 4 * 1024 * 1024)


class RollingCounts:
    """Per-camera person counts of the last `window` frames; at most `max_cameras` cameras (least recently seen evicted)."""

    def __init__(self, window: int = 600, max_cameras: int = 1024) -> None:
        self.window = window
        self.max_cameras = max_cameras
        self._data: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, camera_id: str, count: int) -> None:
        """Record one frame's person count."""
        with self._lock:
            buf = self._data.get(camera_id)
            if buf is None:
                buf = self._data[camera_id] = deque(maxlen=self.window)
                while len(self._data) > self.max_cameras:
                    self._data.popitem(last=False)
            self._data.move_to_end(camera_id)
            buf.append((time.time(), int(count)))

    def summary(self, camera_id: str) -> dict[str, Any] | None:
        """Frames, last/mean/max count and time span over the window, or None for an unknown camera."""
        with self._lock:
            buf = self._data.get(camera_id)
            if not buf:
                return None
            rows = list(buf)
        counts = [n for _, n in rows]
        return {
            "camera_id": camera_id, "frames": len(rows), "window": self.window, "last": counts[-1],
            "mean": float(np.mean(counts)), "max": int(max(counts)), "since": rows[0][0], "until": rows[-1][0],
        }

    def __len__(self) -> int:
        return len(self._data)


class Batcher:
    """Collects concurrent requests into detector batches of up to `batch_size` frames of the same size."""

    def __init__(self, predict: Callable[[list[np.ndarray]], list[Any]], batch_size: int, wait_s: float, on_batch: Callable[[int], None]) -> None:
        self.predict = predict
        self.batch_size = max(1, int(batch_size))
        self.wait_s = max(0.0, wait_s)
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Any]]] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, image: np.ndarray) -> Any:
        """Detections for one HxWx3 RGB frame."""
        assert self.queue is not None, "Batcher.start() was not awaited"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((image, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            items = await self._collect()
            await self._run(items)
            del items  # no frame stays referenced while the loop waits for the next request

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future[Any]]]:
        """The next batch: the first queued frame plus whatever arrives within wait_s, up to batch_size."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.wait_s
        while len(items) < self.batch_size:
            try:
                items.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> None:
        """Run the detector once per frame size and hand each result (or the error) to its request."""
        from starlette.concurrency import run_in_threadpool

        groups: dict[tuple[int, ...], list[tuple[np.ndarray, asyncio.Future[Any]]]] = {}
        for item in items:
            groups.setdefault(item[0].shape, []).append(item)
        for group in groups.values():
            try:
                self.on_batch(len(group))
                results = await run_in_threadpool(self.predict, [im for im, _ in group])
            except Exception as exc:  # handed to every waiting request; the loop keeps serving
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), res in zip(group, results):
                if not fut.done():
                    fut.set_result(res)


class PixelBudget:
    """Decoded pixels held at once by all requests of this worker; acquire() waits, first come first served, until they fit."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, pixels: int) -> None:
        """Reserve `pixels` (at most the capacity), waiting behind earlier requests while the budget is spent."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.capacity}")
        if not self._waiting and self.used + pixels <= self.capacity:
            self.used += pixels
            return
        item = (pixels, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        try:
            await item[1]
        except asyncio.CancelledError:
            if item[1].cancelled():  # still queued: leave the queue, which may let the next waiter in
                if item in self._waiting:
                    self._waiting.remove(item)
                self._grant()
            else:  # granted just before the cancel: hand the pixels back
                self.release(pixels)
            raise

    def release(self, pixels: int) -> None:
        """Return pixels reserved by acquire()."""
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            pixels, fut = self._waiting.popleft()
            if not fut.done():
                self.used += pixels
                fut.set_result(None)


class _Reply:
    """The answer to one (camera_id, Idempotency-Key): pending until the first request with it is done."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        self.ready = asyncio.Event()
        self.result: Any = None
        self.error: HTTPException | None = None

    async def wait(self) -> Any:
        """The first request's result, or its error raised again."""
        await self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.result


class IdempotencyCache:
    """Answers of recent requests by (camera_id, Idempotency-Key), in memory per worker, least recently used evicted."""

    def __init__(self, size: int = DEFAULT_IDEMPOTENCY_CACHE) -> None:
        self.size = size
        self._replies: OrderedDict[tuple[str, str], _Reply] = OrderedDict()

    def claim(self, slot: tuple[str, str], fingerprint: bytes) -> tuple[_Reply, bool]:
        """The reply of `slot`, and True when this request is the first with it (so it does the work and counts)."""
        reply = self._replies.get(slot)
        if reply is not None:
            self._replies.move_to_end(slot)
            if reply.fingerprint != fingerprint:
                raise HTTPException(
                    422, f"{IDEMPOTENCY_HEADER} {slot[1]!r} was already used by this camera for a different request "
                    "(other images or endpoint); send a new key for each frame",
                )
            return reply, False
        reply = self._replies[slot] = _Reply(fingerprint)
        while len(self._replies) > self.size:
            self._replies.popitem(last=False)  # an evicted in-flight reply still reaches the waiters holding it
        return reply, True

    def finish(self, slot: tuple[str, str], reply: _Reply, result: Any = None, error: HTTPException | None = None) -> None:
        """Publish the first request's outcome; a failure is forgotten, so a later retry is processed afresh."""
        reply.result, reply.error = result, error
        if error is not None and self._replies.get(slot) is reply:
            del self._replies[slot]
        reply.ready.set()

    def __len__(self) -> int:
        return len(self._replies)


def check_idempotency_key(values: list[str]) -> str | None:
    """The request's Idempotency-Key (None without one); HTTP 400 unless it is one header of 1-200 printable characters."""
    if not values:
        return None
    if len(values) > 1 or not IDEMPOTENCY_KEY_RE.match(values[0]):
        raise HTTPException(400, f"{IDEMPOTENCY_HEADER} must be one header of 1-200 printable ASCII characters, e.g. 'cam1:frame:17'")
    return values[0]


def _fingerprint(endpoint: str, uploads: list[bytes]) -> bytes:
    """What a repeat must match: endpoint and image bytes (not the multipart framing, whose boundary is random)."""
    digest = hashlib.sha256(endpoint.encode())
    for data in uploads:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class _TooManyFiles(Exception):
    """More file parts than the endpoint accepts."""


class _PartCollector:
    """python-multipart callbacks that keep file parts in memory (bounded by --max-bytes) and skip plain form fields."""

    def __init__(self, max_files: int, parse_options: Callable[[bytes], tuple[bytes, dict[bytes, bytes]]]) -> None:
        self.max_files = max_files
        self.parse_options = parse_options
        self.files: list[bytes] = []
        self._data: bytearray | None = None
        self._name = self._value = self._disposition = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The callback table for python_multipart.MultipartParser."""
        return {
            "on_part_begin": self._begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data, "on_part_end": self._part_end,
        }

    def _begin(self) -> None:
        self._data, self._disposition = None, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._name.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        _, options = self.parse_options(self._disposition)
        if b"filename" in options:  # a file part, as Starlette decides it
            if len(self.files) >= self.max_files:
                raise _TooManyFiles()
            self._data = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._data is not None:
            self.files.append(bytes(self._data))
            self._data = None


async def read_multipart_files(request: Request, max_files: int) -> list[bytes]:
    """The file parts of a multipart/form-data body, parsed in memory as it streams in: no byte is spooled to disk."""
    # Starlette's request.form() would spool every part over 1 MiB to a temporary file, and the docs promise
    # that images are never stored; --max-bytes already bounds what this keeps in memory
    try:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ModuleNotFoundError:  # python-multipart < 0.0.13 names its package `multipart`
        from multipart.exceptions import FormParserError  # type: ignore[no-redef]
        from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data request without a boundary")
    parts = _PartCollector(max_files, parse_options_header)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (FormParserError, ValueError):
        raise HTTPException(400, "malformed multipart/form-data body") from None
    return parts.files


class _Metrics:
    """Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("silhouette_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("silhouette_errors", "Refused or failed requests by endpoint and reason", ["endpoint", "reason"], registry=self.registry)
        self.latency = Histogram(
            "silhouette_request_latency_seconds", "Request latency by endpoint", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.images = Counter("silhouette_images", "Images run through the detector", registry=self.registry)
        self.people = Counter("silhouette_people_counted", "Persons detected, summed over all images", registry=self.registry)
        self.batches = Histogram(
            "silhouette_detector_batch_size", "Frames per detector call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.replays = Counter(
            "silhouette_idempotent_replays", "Requests answered with the stored result of an earlier one with the same Idempotency-Key",
            registry=self.registry,
        )
        self.decoded_pixels = Gauge("silhouette_decoded_pixels_in_flight", "Decoded image pixels held right now", registry=self.registry)


def _endpoint_label(path: str) -> str:
    """Bounded-cardinality endpoint label for metrics (camera ids and unknown paths are folded)."""
    if path in ENDPOINTS:
        return path
    return "/v1/counts" if path.startswith("/v1/counts/") else "other"


class _BodyTooLarge(Exception):
    pass


_CLOSE = {"connection": "close"}  # on a refusal sent before the body was read: the unread body must not be parsed as a request


class GuardMiddleware:
    """Pure-ASGI guard: API key, body size and concurrency are checked before any byte of the body is read; records metrics."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], api_key: str | None, max_bytes: int, metrics: _Metrics,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key is not None else None
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = _endpoint_label(scope["path"])
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if not scope["path"].startswith("/v1/"):
                await self.app(scope, receive, send_wrapper)
                return
            refusal = self._refusal(scope, endpoint)
            if refusal is not None:
                await _send_json(send_wrapper, *refusal)
                return
            self.in_flight += 1
            try:
                await self.app(scope, self._limited(receive, state), send_wrapper)
            finally:
                self.in_flight -= 1
        except _BodyTooLarge:
            self.metrics.errors.labels(endpoint, "too_large").inc()
            if not state["started"]:
                await _send_json(send_wrapper, 413, {"detail": f"request body exceeds the limit of {self.max_bytes} bytes"}, _CLOSE)
        except ClientDisconnect:
            # the client went away mid-body: one line, no traceback, and nothing of the upload was processed
            self.metrics.errors.labels(endpoint, "client_disconnected").inc()
            why = scope.get("silhouette.dropped", "closed by the client")
            client = (scope.get("client") or ("?", 0))[0]
            method, path, got = scope.get("method"), scope["path"], state["received"]
            log.warning("%s %s from %s: body incomplete after %d bytes (%s); request dropped", method, path, client, got, why)
        finally:
            self.metrics.requests.labels(endpoint, str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _refusal(self, scope: dict[str, Any], endpoint: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """(status, body, headers) to refuse a /v1 request with before its body is read, or None to let it in."""
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None:
            given = headers.get(API_KEY_HEADER.lower())
            if given is None or not hmac.compare_digest(given, self.api_key):
                why = "missing" if given is None else "wrong"
                client = scope.get("client") or ("?", 0)
                # the body is never read for a refused request, so nothing of the image can reach the log
                log.warning("refused %s %s from %s: %s %s header", scope.get("method"), scope["path"], client[0], why, API_KEY_HEADER)
                self.metrics.errors.labels(endpoint, "unauthorized").inc()
                return 401, {"detail": f"{why} or invalid {API_KEY_HEADER} header"}, {"www-authenticate": "ApiKey", **_CLOSE}
        try:
            declared = int(headers.get("content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            self.metrics.errors.labels(endpoint, "too_large").inc()
            return 413, {"detail": f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes"}, _CLOSE
        if self.in_flight >= self.max_concurrency:
            self.metrics.errors.labels(endpoint, "busy").inc()
            detail = f"the service is busy with {self.in_flight} requests (--max-concurrency {self.max_concurrency}); retry shortly"
            return 503, {"detail": detail}, {"retry-after": "1", **_CLOSE}
        return None

    def _limited(self, receive: Callable[..., Awaitable[Any]], state: dict[str, Any]) -> Callable[..., Awaitable[Any]]:
        """Wrap `receive` so a body streamed without (or beyond) its Content-Length is cut at max_bytes."""

        async def wrapped() -> Any:
            message = await receive()
            if message.get("type") == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        return wrapped


async def _send_json(send: Callable[..., Awaitable[None]], status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _ConnRegistry:
    """One server's socket bookkeeping: the connection cap, which sockets wait for a request (oldest first), a throttled log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.max_connections = _fd_capped(limits.max_connections)
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self._dropped: Tally[str] = Tally()
        self._last_log = -math.inf
        self._flush_at: asyncio.TimerHandle | None = None

    def admit(self, open_now: int) -> bool:
        """Room for one more socket? At the cap, the longest-waiting socket with no request in progress is closed instead."""
        if open_now < self.max_connections:
            return True
        if self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.drop("evicted idle at --max-connections")
            return True
        self.note("refused at --max-connections (all busy)")
        return False

    def note(self, reason: str) -> None:
        """Count one socket closed early; logged as a summary line at most every DROP_LOG_EVERY_S seconds."""
        # a flood of stalled sockets must not flood the log: the probe that found this grew it by 30 MB
        self._dropped[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_EVERY_S:
            self.flush()
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(self._last_log + DROP_LOG_EVERY_S - now, self.flush)

    def flush(self) -> None:
        """Log what note() counted since the last line."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._dropped:
            total = sum(self._dropped.values())
            log.warning("closed %d connection(s) early: %s", total, ", ".join(f"{n} {why}" for why, n in self._dropped.most_common()))
            self._dropped.clear()
        self._last_log = time.monotonic()


def _fd_capped(wanted: int) -> int:
    """--max-connections, lowered to what RLIMIT_NOFILE leaves after an accept burst and FD_RESERVE for everything else."""
    try:
        import resource
    except ImportError:  # not a Unix: no descriptor limit to read
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - FD_RESERVE - ACCEPT_HEADROOM:
        return wanted
    # past the descriptor limit accept() fails with EMFILE and asyncio stops accepting for a second: no new socket,
    # a keyed one included, is served then. Below 64 the service would be useless, so a tiny ulimit keeps some risk.
    capped = max(min(wanted, 64), soft - FD_RESERVE - ACCEPT_HEADROOM)
    log.warning("--max-connections %d lowered to %d: this process may open %d files (ulimit -n)", wanted, capped, soft)
    return capped


def _raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one so --max-connections fits (serve() owns its process)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard))
    except (ImportError, ValueError, OSError):  # no resource module, or not allowed: _fd_capped lowers the cap instead
        pass


# What uvicorn (0.55, h11_impl) does not cover: it arms no timer until a first response is sent, so a socket that
# sends nothing, or its headers one byte a second, stays open forever (and any byte cancels the keep-alive timer);
# it has no body timeout; its limit_concurrency still accepts every socket and counts idle ones, so stalled sockets
# exhaust descriptors or turn every request into 503. h11_max_incomplete_event_size bounds header size, not time.
class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus header/body deadlines and a connection cap that evicts sockets with no request."""

    registry: ClassVar[_ConnRegistry | None] = None  # one per server, set by guarded_protocol()

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        cls = type(self)
        if cls.registry is None:  # a --workers child imported this class by name: the limits come with its config env var
            cls.registry = _ConnRegistry(config_from_env().limits())
        self.guard: _ConnRegistry = cls.registry
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(len(self.connections)):
            transport.write(_BUSY_RESPONSE)
            transport.close()  # freed right away: nothing of this socket is read or kept
            return
        self._admitted = True
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self.guard.waiting.pop(self, None)
        self._arm(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)
            self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def drop(self, reason: str) -> None:
        """Close now (abort: a client that does not read cannot hold the socket) and count it for the summary log."""
        self.guard.note(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            self.scope["silhouette.dropped"] = reason  # worded into GuardMiddleware's one line about the request
        self.transport.abort()

    def _track(self) -> None:
        """Arm the deadline of the phase the socket is in; only a socket with no request in progress may be evicted."""
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.conn.their_state is h11.SEND_BODY:
            phase: str | None = "body"
        elif busy:
            phase = None  # the request is in and the app works on it: --max-concurrency bounds these, not a clock
        else:
            phase = "header"
        if busy:
            self.guard.waiting.pop(self, None)
        elif self not in self.guard.waiting:
            self.guard.waiting[self] = None
        if phase != self._phase:
            self._arm(phase)

    def _arm(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.guard.limits.header_timeout if phase == "header" else self.guard.limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self.drop, f"{phase} timeout ({seconds:g} s)")


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class of its own for one server: its limits and its socket registry."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"registry": _ConnRegistry(limits)})


def uvicorn_options(limits: ConnectionLimits, by_name: bool = False) -> dict[str, Any]:
    """uvicorn settings of a guarded server; `by_name` for --workers children, which import the protocol from here."""
    return {
        "http": "silhouette.deploy.service:GuardedH11Protocol" if by_name else guarded_protocol(limits),
        "ws": "none",  # no WebSocket routes: an Upgrade must not hand the socket to an unguarded protocol
        "timeout_keep_alive": limits.keep_alive,
        # uvicorn's limit counts idle sockets too, so stalled ones would turn every request into 503;
        # GuardMiddleware limits requests in progress (--max-concurrency) instead
        "limit_concurrency": None,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "backlog": BACKLOG,
    }


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


def _image_body_doc(multiple: bool) -> dict[str, Any]:
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


def check_camera(camera_id: str | None) -> str | None:
    """The camera id, or HTTP 422 for one that is not 1-64 safe characters."""
    if camera_id is not None and not CAMERA_ID_RE.match(camera_id):
        raise HTTPException(422, "camera_id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return camera_id


@dataclass
class _Limits:
    """Per-request limits of the detect endpoints."""

    max_pixels: int
    max_request_pixels: int
    max_decoded_pixels: int
    max_batch_images: int
    idempotency_cache: int


class _Detection:
    """The work behind both detect endpoints: uploads read in memory, pixel budgets, one image decoded after another, counted once."""

    def __init__(self, name: str, batcher: Batcher, metrics: _Metrics, counts: RollingCounts, limits: _Limits) -> None:
        self.name = name
        self.batcher = batcher
        self.metrics = metrics
        self.counts = counts
        self.limits = limits
        self.budget = PixelBudget(limits.max_decoded_pixels)
        self.replies = IdempotencyCache(limits.idempotency_cache)
        metrics.decoded_pixels.set_function(lambda: self.budget.used)

    async def answer(self, request: Request, response: Response, camera_id: str | None, endpoint: str) -> list[DetectResult]:
        """Results of one request (camera id and key checked before the body is read); a replay is marked in a header."""
        camera_id = check_camera(camera_id)
        key = check_idempotency_key(request.headers.getlist(IDEMPOTENCY_HEADER))
        uploads = await self._uploads(request, single=endpoint == "/v1/detect")
        if key is None:
            return await self._process(uploads, camera_id, endpoint)
        slot = (camera_id or "", key)
        reply, first = self.replies.claim(slot, _fingerprint(endpoint, uploads))
        if not first:
            self.metrics.replays.inc()
            response.headers[REPLAYED_HEADER] = "true"
            return await reply.wait()  # the first request's answer, also when it is still in progress
        try:
            results = await self._process(uploads, camera_id, endpoint)
        except HTTPException as exc:
            self.replies.finish(slot, reply, error=exc)
            raise
        except BaseException:
            self.replies.finish(slot, reply, error=HTTPException(503, f"an earlier request with this {IDEMPOTENCY_HEADER} failed; retry"))
            raise
        self.replies.finish(slot, reply, result=results)
        return results

    async def _uploads(self, request: Request, single: bool) -> list[bytes]:
        """The uploaded images: multipart file parts (in memory) or, for /v1/detect, the raw body."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            limit = 1 if single else self.limits.max_batch_images
            try:
                files = await read_multipart_files(request, limit)
            except _TooManyFiles:
                if single:
                    raise HTTPException(400, "send exactly one image to /v1/detect; use /v1/detect/batch for several") from None
                raise HTTPException(413, f"more than {limit} images in one request; the limit is {limit}") from None
            if not files:
                raise HTTPException(400, "multipart request holds no file field; send the image as field 'file'")
            return files
        if not single:
            raise HTTPException(400, "send the images as multipart/form-data fields named 'files'")
        return [await request.body()]

    async def _process(self, uploads: list[bytes], camera_id: str | None, endpoint: str) -> list[DetectResult]:
        """Detections for each upload, in order; counted only when every image of the request succeeded."""
        from starlette.concurrency import run_in_threadpool

        pixels = await run_in_threadpool(self._probe, uploads, endpoint)
        results = await self._run_images(uploads, pixels, camera_id, endpoint)
        for res in results:
            self.metrics.images.inc()
            self.metrics.people.inc(res.count)
            if camera_id is not None:
                self.counts.add(camera_id, res.count)
        return results

    def _probe(self, uploads: list[bytes], endpoint: str) -> list[int]:
        """Declared pixels of each upload, from headers alone; 400/413/415/422 before any pixel of the request is decoded."""
        pixels = []
        for i, data in enumerate(uploads):
            try:
                w, h = probe_image(data, self.limits.max_pixels)
            except ImageError as exc:
                raise self._image_error(exc, i, endpoint) from None
            pixels.append(w * h)
        total = sum(pixels)
        if total > self.limits.max_request_pixels:
            self.metrics.errors.labels(endpoint, "too_many_pixels").inc()
            raise HTTPException(
                413, f"the {len(uploads)} images of this request declare {total} pixels in total, more than the per-request "
                f"limit of {self.limits.max_request_pixels} (--max-request-pixels); send fewer or smaller images",
            )
        return pixels

    def _image_error(self, exc: ImageError, index: int, endpoint: str) -> HTTPException:
        self.metrics.errors.labels(endpoint, f"bad_image_{exc.status}").inc()
        return HTTPException(exc.status, exc.message if endpoint == "/v1/detect" else f"image {index}: {exc.message}")

    async def _run_images(self, uploads: list[bytes], pixels: list[int], camera_id: str | None, endpoint: str) -> list[DetectResult]:
        """Decode -> detector queue, image after image: at most batch_size images of one request wait for the detector."""
        tasks: list[asyncio.Future[DetectResult]] = []
        try:
            for i, (data, px) in enumerate(zip(uploads, pixels)):
                running = [t for t in tasks if not t.done()]
                if len(running) >= self.batcher.batch_size:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for t in tasks:
                    if t.done():
                        t.result()  # an image already failed: stop decoding the rest
                tasks.append(asyncio.ensure_future(self._detect_one(data, px, i, camera_id, endpoint)))
            return list(await asyncio.gather(*tasks))
        finally:
            # after an error the images already queued finish first: their pixels leave the budget with their memory
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _detect_one(self, data: bytes, pixels: int, index: int, camera_id: str | None, endpoint: str) -> DetectResult:
        """Decode one image inside the decoded-pixel budget and run it through the detector batcher."""
        from starlette.concurrency import run_in_threadpool

        await self.budget.acquire(pixels)
        try:
            try:
                rgb = await run_in_threadpool(decode_image, data, self.limits.max_pixels)
            except ImageError as exc:
                raise self._image_error(exc, index, endpoint) from None
            height, width = rgb.shape[:2]
            dets = await self.batcher.submit(rgb)
            del rgb
        finally:
            self.budget.release(pixels)
        return DetectResult(
            boxes=[[round(float(v), 2) for v in b] for b in dets.boxes.tolist()],
            scores=[round(float(s), 4) for s in dets.scores.tolist()],
            count=len(dets), detector=self.name, width=int(width), height=int(height), camera_id=camera_id,
        )


def _errors_doc() -> dict[int | str, dict[str, Any]]:
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


def _add_detect_routes(app: FastAPI, svc: _Detection) -> None:
    """POST /v1/detect and /v1/detect/batch."""
    key_scheme = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key"))
    camera_q = Query(None, description="camera id for the rolling counts")
    # documents the header in OpenAPI; it is read and validated in _Detection.answer, before the body
    key_h = Header(None, alias=IDEMPOTENCY_HEADER, description=IDEMPOTENCY_DOC)

    @app.post(
        "/v1/detect", response_model=DetectResult, responses=_errors_doc(), dependencies=[key_scheme],
        summary="Detect persons on one obfuscated image", openapi_extra=_image_body_doc(False),
    )
    async def detect(
        request: Request, response: Response, camera_id: str | None = camera_q, idempotency_key: str | None = key_h,  # noqa: ARG001
    ) -> DetectResult:
        """One image as multipart field `file` or as the raw body (image/jpeg, image/png)."""
        return (await svc.answer(request, response, camera_id, "/v1/detect"))[0]

    @app.post(
        "/v1/detect/batch", response_model=list[DetectResult], responses=_errors_doc(), dependencies=[key_scheme],
        summary="Detect persons on several obfuscated images", openapi_extra=_image_body_doc(True),
    )
    async def detect_batch(
        request: Request, response: Response, camera_id: str | None = camera_q, idempotency_key: str | None = key_h,  # noqa: ARG001
    ) -> list[DetectResult]:
        """Several images as multipart fields `files`, decoded one after another, answered in order; all fail if one is bad."""
        return await svc.answer(request, response, camera_id, "/v1/detect/batch")


def _add_other_routes(app: FastAPI, counts: RollingCounts, metrics: _Metrics, health: Callable[[], dict[str, Any]]) -> None:
    """GET /v1/counts/{camera_id}, /healthz and /metrics."""
    key_scheme = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key"))

    @app.get(
        "/v1/counts/{camera_id}", response_model=CountsSummary, dependencies=[key_scheme],
        responses={401: _errors_doc()[401], 404: {"model": Error, "description": "no frames seen from this camera"}},
        summary="Rolling person counts of one camera",
    )
    async def camera_counts(camera_id: str) -> CountsSummary:
        """Counts of the last frames this worker process saw from `camera_id` (in memory, bounded)."""
        summary = counts.summary(camera_id)
        if summary is None:
            raise HTTPException(404, f"no frames seen from camera {camera_id!r} by this worker")
        return CountsSummary(**summary)

    @app.get("/healthz", summary="Liveness and readiness")
    async def healthz() -> dict[str, Any]:
        """Always answers while the process serves; no authentication."""
        return health()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prom_metrics() -> Response:
        """Requests, errors, latency histogram, images and persons counted (this worker process only)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    detector_name: str = "yolox_nano",
    api_key: str | None = None,
    *,
    batch_size: int = 1,
    batch_wait_ms: float = 5.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_batch_images: int = 64,
    counts_window: int = 600,
    max_cameras: int = 1024,
    threads: int | None = None,
    detector: Any = None,
    max_request_pixels: int | None = None,
    max_decoded_pixels: int | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    idempotency_cache: int = DEFAULT_IDEMPOTENCY_CACHE,
    pair_id: str | None = None,
) -> FastAPI:
    """The detection service; `api_key=None` disables auth (tests, loopback); pixel budgets default to 4x / 1x max_pixels.

    `pair_id` (a private pair's detector sha256 prefix) makes it serve only cameras whose obfuscator names that pair."""
    from silhouette import __version__

    max_request_pixels, max_decoded_pixels = _resolve_app_limits(
        batch_size, max_bytes, max_pixels, max_request_pixels, max_decoded_pixels, max_concurrency, idempotency_cache, max_batch_images,
    )
    _limit_png_text()
    if detector is None:
        from silhouette.detectors import create_detector

        detector = create_detector(detector_name, **({"num_threads": threads} if threads else {}))
    name = getattr(detector, "name", detector_name)
    metrics, counts, started = _Metrics(), RollingCounts(counts_window, max_cameras), time.time()
    batcher = Batcher(_predictor(detector), batch_size, batch_wait_ms / 1000.0, metrics.batches.observe)
    limits = _Limits(max_pixels, max_request_pixels, max_decoded_pixels, max_batch_images, idempotency_cache)
    svc = _Detection(name, batcher, metrics, counts, limits)
    app = FastAPI(title="silhouette detection service", version=__version__, description=SERVICE_DOC, lifespan=_lifespan(batcher))
    _add_detect_routes(app, svc)

    def health() -> dict[str, Any]:
        return {"status": "ok", "detector": name, "pair": pair_id, "batch_size": batcher.batch_size,
                "uptime_s": round(time.time() - started, 1), "version": __version__}

    _add_other_routes(app, counts, metrics, health)
    app.add_middleware(PairMiddleware, pair_id=pair_id, detector=name)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_bytes=max_bytes, metrics=metrics, max_concurrency=max_concurrency)
    app.state.counts, app.state.metrics, app.state.detector, app.state.detection = counts, metrics, detector, svc
    return app


def _predictor(detector: Any) -> Callable[[list[np.ndarray]], list[Any]]:
    """The batcher's detector call: HxWx3 uint8 RGB frames of one size -> person detections per frame."""
    import torch

    def predict(images: list[np.ndarray]) -> list[Any]:
        # a single frame is viewed, not copied, as a batch of one
        stacked = images[0][None] if len(images) == 1 else np.stack(images)
        batch = torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            return [d.persons() for d in detector.predict(batch)]

    return predict


def _lifespan(batcher: Batcher) -> Callable[[FastAPI], Any]:
    """App lifespan: the detector batcher runs while the app serves."""
    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202, ARG001
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    return lifespan


class PairMiddleware:
    """Refuse (409) a detection request whose camera obfuscator was trained for another detector than this one.

    A private-mode camera names its pair in X-Silhouette-Pair; a compatible camera sends none. Counting a frame with
    the wrong detector would give a plausible but wrong number, so a mismatch is refused before the body is read."""

    def __init__(self, app: Callable[..., Awaitable[None]], pair_id: str | None, detector: str) -> None:
        self.app, self.pair_id, self.detector = app, pair_id, detector

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/detect"):
            sent = dict(scope.get("headers") or []).get(PAIR_HEADER.lower().encode(), b"").decode("latin-1").strip() or None
            if sent != self.pair_id:
                await _send_json(send, 409, {"detail": _pair_mismatch(sent, self.pair_id, self.detector)},
                                 {"Connection": "close"})
                return
        await self.app(scope, receive, send)


def _pair_mismatch(sent: str | None, served: str | None, detector: str) -> str:
    """Why a camera and this service do not belong together, and what to change."""
    if served is None:
        return (f"the camera's obfuscator is private pair {sent}, co-trained with its own detector; this service runs the "
                f"unmodified {detector}: start it with `silhouette serve --pair` on that pair's checkpoint")
    camera = f"pair {sent}" if sent else "a compatible-mode obfuscator"
    return f"this service runs private pair {served}; the camera sends {camera}: give the camera that pair's checkpoint"


def app_from_config(cfg: ServiceConfig) -> FastAPI:
    """Build the app from a ServiceConfig, resolving the API key in this process."""
    key = None if cfg.no_auth else load_api_key(cfg.api_key_env, cfg.api_key_file)
    detector, pair_id = None, None
    if cfg.pair:
        from silhouette.detectors.adapt import pair_detector, pair_id_of

        detector = pair_detector(cfg.pair, **({"num_threads": cfg.threads} if cfg.threads else {}))
        pair_id = pair_id_of(cfg.pair)
    return create_app(
        cfg.detector, key, detector=detector, pair_id=pair_id, batch_size=cfg.batch_size, batch_wait_ms=cfg.batch_wait_ms, max_bytes=cfg.max_bytes,
        max_pixels=cfg.max_pixels, max_batch_images=cfg.max_batch_images, counts_window=cfg.counts_window,
        max_cameras=cfg.max_cameras, threads=cfg.threads, max_request_pixels=cfg.max_request_pixels,
        max_decoded_pixels=cfg.max_decoded_pixels, max_concurrency=cfg.max_concurrency, idempotency_cache=cfg.idempotency_cache,
    )


def config_from_env() -> ServiceConfig:
    """The ServiceConfig a `--workers N` parent put in $SILHOUETTE_SERVE_CONFIG (defaults without one)."""
    raw = os.environ.get(ENV_CONFIG)
    return ServiceConfig(**json.loads(raw)) if raw else ServiceConfig()


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes as JSON in $SILHOUETTE_SERVE_CONFIG."""
    return app_from_config(config_from_env())


def serve(cfg: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info") -> None:
    """Run the service with uvicorn; several workers share the port (each loads its own detector)."""
    import uvicorn

    if workers < 1:
        raise SilhouetteError(f"--workers {workers}: must be >= 1")
    if cfg.no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        raise SilhouetteError(f"--no-auth is only allowed on a loopback host, not {host}")
    cfg.check()
    limits = cfg.limits()
    _raise_fd_limit(limits.max_connections + FD_RESERVE + ACCEPT_HEADROOM)  # workers inherit the raised limit
    if workers == 1:
        uvicorn.run(app_from_config(cfg), host=host, port=port, log_level=log_level, **uvicorn_options(limits))
        return
    # fail fast on a bad key or detector name before forking; each worker then builds its own app
    if not cfg.no_auth:
        load_api_key(cfg.api_key_env, cfg.api_key_file)
    from silhouette.detectors import detector_names

    if cfg.detector not in detector_names() and "+" not in cfg.detector:
        raise SilhouetteError(f"--detector {cfg.detector!r}: unknown; choose from {', '.join(detector_names())}")
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    uvicorn.run(
        "silhouette.deploy.service:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level,
        **uvicorn_options(limits, by_name=True),
    )


class ServerThread:
    """A uvicorn server for `app` in a background thread on 127.0.0.1 (tests, benchmarks); stop/start keep the port."""

    def __init__(self, app: FastAPI, port: int = 0, host: str = "127.0.0.1", limits: ConnectionLimits | None = None) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise SilhouetteError(f"ServerThread binds loopback only, not {host}")
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits or ConnectionLimits()
        self.server: Any = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        """Bind (same port on restart) and serve until stop(); waits until the server accepts connections."""
        import socket

        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", **uvicorn_options(self.limits))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="silhouette-serve")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SilhouetteError(f"test server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (open connections are closed) and wait for the thread."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout)
        self.server = self.thread = None

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "ServiceConfig", "ConnectionLimits", "create_app", "app_from_env", "app_from_config", "config_from_env", "serve",
    "decode_image", "probe_image", "load_api_key", "RollingCounts", "ServerThread", "GuardedH11Protocol", "guarded_protocol",
    "uvicorn_options", "PixelBudget", "IdempotencyCache", "check_idempotency_key", "read_multipart_files",
]
