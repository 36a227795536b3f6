"""The cloud side: a FastAPI person-detection service for obfuscated frames (stateless but for rolling counts)."""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from silhouette.errors import SilhouetteError

log = logging.getLogger("silhouette.serve")

API_KEY_HEADER = "X-API-Key"
DEFAULT_API_KEY_ENV = "SILHOUETTE_API_KEY"
ENV_CONFIG = "SILHOUETTE_SERVE_CONFIG"  # JSON ServiceConfig handed to each uvicorn worker process
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENDPOINTS = ("/v1/detect", "/v1/detect/batch", "/v1/counts", "/healthz", "/metrics")


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
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_images: int = 64
    counts_window: int = 600
    max_cameras: int = 1024
    threads: int | None = None


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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded JPEG/PNG/BMP/WebP into HxWx3 uint8 RGB; raise ImageError (400/413/422) otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(400, "empty upload: send one image (JPEG or PNG) as the request body or a multipart 'file' field")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(400, "the upload is not an image (JPEG, PNG, BMP or WebP expected)") from None
    except Exception as exc:  # Pillow raises assorted errors for hostile headers
        raise ImageError(400, f"the upload is not a readable image ({type(exc).__name__})") from None
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(415, f"image format {img.format} is not accepted; send JPEG, PNG, BMP or WebP")
    w, h = img.size
    # checked from the header, before any pixel is decoded, so a decompression bomb costs nothing
    if w * h > max_pixels:
        raise ImageError(413, f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise ImageError(422, f"image has an empty size {w}x{h}")
    try:
        img.load()
        rgb = np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(422, f"the {img.format} image is truncated or corrupt and cannot be decoded ({exc})") from None
    return rgb


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
        from starlette.concurrency import run_in_threadpool

        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
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


class _Metrics:
    """Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

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


def _endpoint_label(path: str) -> str:
    """Bounded-cardinality endpoint label for metrics (camera ids and unknown paths are folded)."""
    if path in ENDPOINTS:
        return path
    return "/v1/counts" if path.startswith("/v1/counts/") else "other"


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Pure-ASGI guard: API key and body-size checks happen before any byte of the body is read; records metrics."""

    def __init__(self, app: Callable[..., Awaitable[None]], api_key: str | None, max_bytes: int, metrics: _Metrics) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key is not None else None
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = _endpoint_label(path)
        start = time.perf_counter()
        state = {"status": 500, "started": False}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if path.startswith("/v1/"):
                headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
                if self.api_key is not None:
                    given = headers.get(API_KEY_HEADER.lower())
                    if given is None or not hmac.compare_digest(given, self.api_key):
                        why = "missing" if given is None else "wrong"
                        client = scope.get("client") or ("?", 0)
                        # the body is never read for a refused request, so nothing of the image can reach the log
                        log.warning("refused %s %s from %s: %s %s header", scope.get("method"), path, client[0], why, API_KEY_HEADER)
                        self.metrics.errors.labels(endpoint, "unauthorized").inc()
                        await _send_json(send_wrapper, 401, {"detail": f"{why} or invalid {API_KEY_HEADER} header"}, {"www-authenticate": "ApiKey"})
                        return
                try:
                    declared = int(headers.get("content-length", b"0") or 0)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    self.metrics.errors.labels(endpoint, "too_large").inc()
                    await _send_json(send_wrapper, 413, {"detail": f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes"})
                    return
                receive = self._limited(receive)
            await self.app(scope, receive, send_wrapper)
        except _BodyTooLarge:
            self.metrics.errors.labels(endpoint, "too_large").inc()
            if not state["started"]:
                await _send_json(send_wrapper, 413, {"detail": f"request body exceeds the limit of {self.max_bytes} bytes"})
        finally:
            self.metrics.requests.labels(endpoint, str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _limited(self, receive: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap `receive` so a body streamed without (or beyond) its Content-Length is cut at max_bytes."""
        seen = 0

        async def wrapped() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        return wrapped


async def _send_json(send: Callable[..., Awaitable[None]], status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


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


def create_app(
    detector_name: str = "yolox_nano",
    api_key: str | None = None,
    *,
    batch_size: int = 1,
    batch_wait_ms: float = 5.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch_images: int = 64,
    counts_window: int = 600,
    max_cameras: int = 1024,
    threads: int | None = None,
    detector: Any = None,
) -> FastAPI:
    """The detection service; `api_key=None` disables authentication (tests and loopback only)."""
    import contextlib

    import torch

    from silhouette import __version__

    if batch_size < 1:
        raise SilhouetteError(f"--batch-size {batch_size}: must be >= 1")
    if max_bytes < 1024 or max_pixels < 64:
        raise SilhouetteError("--max-bytes must be >= 1024 and --max-pixels >= 64")
    if detector is None:
        from silhouette.detectors import create_detector

        kwargs: dict[str, Any] = {"num_threads": threads} if threads else {}
        detector = create_detector(detector_name, **kwargs)
    name = getattr(detector, "name", detector_name)
    metrics = _Metrics()
    counts = RollingCounts(counts_window, max_cameras)
    started = time.time()

    def predict(images: list[np.ndarray]) -> list[Any]:
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            return [d.persons() for d in detector.predict(batch)]

    batcher = Batcher(predict, batch_size, batch_wait_ms / 1000.0, metrics.batches.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"model": Error, "description": "not an image, or no image in the request"},
        401: {"model": Error, "description": f"missing or wrong {API_KEY_HEADER} header"},
        413: {"model": Error, "description": "body larger than --max-bytes or image larger than --max-pixels"},
        415: {"model": Error, "description": "image format not accepted"},
        422: {"model": Error, "description": "truncated or corrupt image, or bad camera_id"},
    }

    app = FastAPI(
        title="silhouette detection service",
        version=__version__,
        description=(
            "Counts persons on **obfuscated** frames sent by silhouette edge cameras. "
            f"Every /v1 endpoint needs the `{API_KEY_HEADER}` header. Images are never stored or logged."
        ),
        lifespan=lifespan,
    )
    # documents the header in OpenAPI; the check itself is in GuardMiddleware, before the body is read
    key_scheme = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key"))

    def check_camera(camera_id: str | None) -> str | None:
        if camera_id is not None and not CAMERA_ID_RE.match(camera_id):
            raise HTTPException(422, "camera_id must be 1-64 characters of letters, digits, '.', '_' or '-'")
        return camera_id

    async def detect_one(data: bytes, camera_id: str | None, endpoint: str) -> DetectResult:
        from starlette.concurrency import run_in_threadpool

        try:
            rgb = await run_in_threadpool(decode_image, data, max_pixels)
        except ImageError as exc:
            metrics.errors.labels(endpoint, f"bad_image_{exc.status}").inc()
            raise HTTPException(exc.status, exc.message) from None
        dets = await batcher.submit(rgb)
        n = len(dets)
        metrics.images.inc()
        metrics.people.inc(n)
        return DetectResult(
            boxes=[[round(float(v), 2) for v in b] for b in dets.boxes.tolist()],
            scores=[round(float(s), 4) for s in dets.scores.tolist()],
            count=n, detector=name, width=int(rgb.shape[1]), height=int(rgb.shape[0]), camera_id=camera_id,
        )

    async def uploads(request: Request, single: bool) -> list[bytes]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=max_batch_images + 1)
            files = [v for _, v in form.multi_items() if hasattr(v, "read")]
            if not files:
                raise HTTPException(400, "multipart request holds no file field; send the image as field 'file'")
            return [await f.read() for f in files]
        if not single:
            raise HTTPException(400, "send the images as multipart/form-data fields named 'files'")
        return [await request.body()]

    @app.post(
        "/v1/detect", response_model=DetectResult, responses=errors_doc, dependencies=[key_scheme],
        summary="Detect persons on one obfuscated image", openapi_extra=_image_body_doc(False),
    )
    async def detect(request: Request, camera_id: str | None = Query(None, description="camera id for the rolling counts")) -> DetectResult:
        """One image as multipart field `file` or as the raw body (image/jpeg, image/png)."""
        camera_id = check_camera(camera_id)
        data = await uploads(request, single=True)
        if len(data) != 1:
            raise HTTPException(400, f"send exactly one image to /v1/detect (got {len(data)}); use /v1/detect/batch for several")
        result = await detect_one(data[0], camera_id, "/v1/detect")
        if camera_id is not None:
            counts.add(camera_id, result.count)
        return result

    @app.post(
        "/v1/detect/batch", response_model=list[DetectResult], responses=errors_doc, dependencies=[key_scheme],
        summary="Detect persons on several obfuscated images", openapi_extra=_image_body_doc(True),
    )
    async def detect_batch(request: Request, camera_id: str | None = Query(None, description="camera id for the rolling counts")) -> list[DetectResult]:
        """Several images as multipart fields `files`, answered in order; all fail if one is bad."""
        camera_id = check_camera(camera_id)
        data = await uploads(request, single=False)
        if len(data) > max_batch_images:
            raise HTTPException(413, f"{len(data)} images in one request; the limit is {max_batch_images}")
        results = await asyncio.gather(*(detect_one(d, camera_id, "/v1/detect/batch") for d in data), return_exceptions=True)
        for i, res in enumerate(results):
            if isinstance(res, HTTPException):
                raise HTTPException(res.status_code, f"image {i}: {res.detail}")
            if isinstance(res, BaseException):
                raise res
        # recorded here, in upload order and only for a fully good batch: the frames above finish in any order
        if camera_id is not None:
            for res in results:
                counts.add(camera_id, res.count)  # type: ignore[union-attr]
        return list(results)  # type: ignore[arg-type]

    @app.get(
        "/v1/counts/{camera_id}", response_model=CountsSummary, dependencies=[key_scheme],
        responses={401: errors_doc[401], 404: {"model": Error, "description": "no frames seen from this camera"}},
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
        return {"status": "ok", "detector": name, "batch_size": batcher.batch_size, "uptime_s": round(time.time() - started, 1), "version": __version__}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prom_metrics() -> Response:
        """Requests, errors, latency histogram, images and persons counted (this worker process only)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(GuardMiddleware, api_key=api_key, max_bytes=max_bytes, metrics=metrics)
    app.state.counts = counts
    app.state.metrics = metrics
    app.state.detector = detector
    return app


def app_from_config(cfg: ServiceConfig) -> FastAPI:
    """Build the app from a ServiceConfig, resolving the API key in this process."""
    key = None if cfg.no_auth else load_api_key(cfg.api_key_env, cfg.api_key_file)
    return create_app(
        cfg.detector, key, batch_size=cfg.batch_size, batch_wait_ms=cfg.batch_wait_ms, max_bytes=cfg.max_bytes,
        max_pixels=cfg.max_pixels, max_batch_images=cfg.max_batch_images, counts_window=cfg.counts_window,
        max_cameras=cfg.max_cameras, threads=cfg.threads,
    )


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes as JSON in $SILHOUETTE_SERVE_CONFIG."""
    raw = os.environ.get(ENV_CONFIG)
    cfg = ServiceConfig(**json.loads(raw)) if raw else ServiceConfig()
    return app_from_config(cfg)


def serve(cfg: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info") -> None:
    """Run the service with uvicorn; several workers share the port (each loads its own detector)."""
    import uvicorn

    if workers < 1:
        raise SilhouetteError(f"--workers {workers}: must be >= 1")
    if cfg.no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        raise SilhouetteError(f"--no-auth is only allowed on a loopback host, not {host}")
    if workers == 1:
        uvicorn.run(app_from_config(cfg), host=host, port=port, log_level=log_level)
        return
    # fail fast on a bad key or detector name before forking; each worker then builds its own app
    if not cfg.no_auth:
        load_api_key(cfg.api_key_env, cfg.api_key_file)
    from silhouette.detectors import detector_names

    if cfg.detector not in detector_names() and "+" not in cfg.detector:
        raise SilhouetteError(f"--detector {cfg.detector!r}: unknown; choose from {', '.join(detector_names())}")
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    uvicorn.run("silhouette.deploy.service:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level)


class ServerThread:
    """A uvicorn server for `app` in a background thread on 127.0.0.1 (tests, benchmarks); stop/start keep the port."""

    def __init__(self, app: FastAPI, port: int = 0, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise SilhouetteError(f"ServerThread binds loopback only, not {host}")
        self.app = app
        self.host = host
        self.port = port
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
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
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


__all__ = ["ServiceConfig", "create_app", "app_from_env", "app_from_config", "serve", "decode_image", "load_api_key", "RollingCounts", "ServerThread"]
