"""The FastAPI app: detector, batcher, count store, limits, routes, guards and dashboard put together; built from a
ServiceConfig per worker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from silhouette.imaging import MAX_PIXELS, limit_png_text
from silhouette.serve.auth import service_key
from silhouette.serve.backends import backend_batcher, limit_local_threads
from silhouette.serve.batching import Batcher, predictor
from silhouette.serve.config import DEFAULT_KEEP_DAYS, ServiceConfig, check_keep_days, config_from_env
from silhouette.serve.count_routes import add_count_routes
from silhouette.serve.dashboard import dashboard_router
from silhouette.serve.detection import Detection
from silhouette.serve.guard import GuardMiddleware, PairMiddleware
from silhouette.serve.limits import DEFAULT_IDEMPOTENCY_CACHE, DEFAULT_MAX_BYTES, DEFAULT_MAX_CONCURRENCY, AppLimits, resolve_app_limits
from silhouette.serve.live import LatestFrames, StoreSource
from silhouette.serve.metrics import Metrics
from silhouette.serve.recording import Recorder, detector_id
from silhouette.serve.routes import add_detect_routes, add_other_routes
from silhouette.serve.schemas import SERVICE_DOC
from silhouette.serve.storage import CountStore

log = logging.getLogger("silhouette.serve")
PRUNE_EVERY_S = 3600.0  # retention granularity is days: hourly keeps the table within an hour of --keep-days


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
    db: str | CountStore | None = None,
    keep_days: int = DEFAULT_KEEP_DAYS,
    batcher: Any = None,
) -> FastAPI:
    """The detection service; `api_key=None` disables auth (tests, loopback); pixel budgets default to 4x / 1x max_pixels.

    `pair_id` (a private pair's detector sha256 prefix) makes it serve only cameras whose obfuscator names that pair.
    `db` is the count store: a --db URL, an open CountStore (left open), or None for a private in-memory one (tests);
    `keep_days` > 0 prunes older detections at start-up and hourly. The dashboard is mounted at `/`."""
    from silhouette import __version__

    request_px, decoded_px = resolve_app_limits(
        batch_size, max_bytes, max_pixels, max_request_pixels, max_decoded_pixels, max_concurrency, idempotency_cache, max_batch_images,
    )
    check_keep_days(keep_days)
    limit_png_text()
    # `batcher`: a detector that runs elsewhere (serve/backends.py RayBatcher); no local detector is loaded then
    if batcher is None:
        limit_local_threads(threads)  # the detector runs in this process
    detector = _load_detector(detector_name, threads) if detector is None and batcher is None else detector
    name = getattr(detector, "name", detector_name)
    store = db if isinstance(db, CountStore) else CountStore(db) if db is not None else CountStore.in_memory()
    metrics, frames = Metrics(), LatestFrames(max_cameras)
    if batcher is None:
        batcher = Batcher(predictor(detector), batch_size, batch_wait_ms / 1000.0, metrics.batches.observe)
    recorder = Recorder(store, detector_id(name, pair_id), frames)
    svc = Detection(name, batcher, metrics, recorder, AppLimits(max_pixels, request_px, decoded_px, max_batch_images, idempotency_cache))
    health = _health(name, pair_id, batcher)
    lifespan = _lifespan(batcher, store, keep_days, close_store=not isinstance(db, CountStore))
    app = FastAPI(title="silhouette detection service", version=__version__, description=SERVICE_DOC, lifespan=lifespan)
    add_detect_routes(app, svc)
    add_count_routes(app, store, counts_window)
    add_other_routes(app, metrics, health)
    app.include_router(dashboard_router(api_key, StoreSource(store, frames, health), session_secret=session_secret(api_key)))
    app.add_middleware(PairMiddleware, pair_id=pair_id, detector=name)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_bytes=max_bytes, metrics=metrics, max_concurrency=max_concurrency)
    app.state.store, app.state.frames, app.state.metrics, app.state.detector, app.state.detection = store, frames, metrics, detector, svc
    return app


def session_secret(api_key: str | None) -> bytes | None:
    """The dashboard's session-signing secret, derived from the API key: the same in every worker, never the key itself."""
    if api_key is None:
        return None
    return hmac.new(api_key.encode("utf-8"), b"silhouette dashboard session v1", hashlib.sha256).digest()


def _load_detector(detector_name: str, threads: int | None) -> Any:
    """The named detector (or ensemble spec) from the registry, with ONNX Runtime threads when given."""
    from silhouette.detectors import create_detector

    return create_detector(detector_name, **({"num_threads": threads} if threads else {}))


def _health(name: str, pair_id: str | None, batcher: Batcher) -> Callable[[], dict[str, Any]]:
    """The /healthz answer of this app (worker_pid: which of several `--workers` answered)."""
    from silhouette import __version__

    started = time.time()

    def health() -> dict[str, Any]:
        return {"status": "ok", "detector": name, "pair": pair_id, "batch_size": batcher.batch_size,
                "uptime_s": round(time.time() - started, 1), "version": __version__, "worker_pid": os.getpid()}

    return health


def _lifespan(batcher: Batcher, store: CountStore, keep_days: int, close_store: bool) -> Callable[[FastAPI], Any]:
    """App lifespan: retention runs once before serving and then hourly; the detector batcher runs while the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001 - FastAPI's lifespan signature
        pruner = None
        if keep_days > 0:
            await _prune(store, keep_days)  # before the first request: expired rows never show up after a restart
            pruner = asyncio.create_task(_prune_every(store, keep_days, PRUNE_EVERY_S))
        await batcher.start()
        try:
            yield
        finally:
            if pruner is not None:
                pruner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruner
            await batcher.stop()
            if close_store:
                store.close()  # pooled connections only: a restarted lifespan reconnects

    return lifespan


async def _prune(store: CountStore, keep_days: int) -> None:
    """Delete detections older than keep_days, in a thread; a failure is one warning line (retried next time)."""
    try:
        await asyncio.to_thread(store.prune, keep_days)
    except SQLAlchemyError as exc:
        log.warning("count store %s: retention failed (%s); retrying in %d s", store.url, type(exc).__name__, PRUNE_EVERY_S)


async def _prune_every(store: CountStore, keep_days: int, every_s: float) -> None:
    """Retention, every `every_s` seconds while the app serves (every worker prunes: deleting nothing is cheap)."""
    while True:
        await asyncio.sleep(every_s)
        await _prune(store, keep_days)


def app_from_config(cfg: ServiceConfig) -> FastAPI:
    """Build the app from a ServiceConfig, resolving the API key in this process."""
    key = service_key(cfg.no_auth, cfg.api_key_env, cfg.api_key_file)
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
        db=cfg.db, keep_days=cfg.keep_days, batcher=backend_batcher(cfg),
    )


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes as JSON in $SILHOUETTE_SERVE_CONFIG."""
    return app_from_config(config_from_env())
