"""The FastAPI app: detector, batcher, limits, routes and guards put together; built from a ServiceConfig per worker."""

from __future__ import annotations

import contextlib
import time
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI

from silhouette.imaging import MAX_PIXELS
from silhouette.serve.auth import service_key
from silhouette.serve.batching import Batcher, predictor
from silhouette.serve.config import ServiceConfig, config_from_env
from silhouette.serve.detection import Detection
from silhouette.serve.guard import GuardMiddleware, PairMiddleware
from silhouette.serve.limits import DEFAULT_IDEMPOTENCY_CACHE, DEFAULT_MAX_BYTES, DEFAULT_MAX_CONCURRENCY, AppLimits, resolve_app_limits
from silhouette.serve.metrics import Metrics, RollingCounts
from silhouette.serve.routes import add_detect_routes, add_other_routes
from silhouette.serve.schemas import SERVICE_DOC
from silhouette.wire import limit_png_text


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

    request_px, decoded_px = resolve_app_limits(
        batch_size, max_bytes, max_pixels, max_request_pixels, max_decoded_pixels, max_concurrency, idempotency_cache, max_batch_images,
    )
    limit_png_text()
    detector = _load_detector(detector_name, threads) if detector is None else detector
    name = getattr(detector, "name", detector_name)
    metrics, counts = Metrics(), RollingCounts(counts_window, max_cameras)
    batcher = Batcher(predictor(detector), batch_size, batch_wait_ms / 1000.0, metrics.batches.observe)
    svc = Detection(name, batcher, metrics, counts, AppLimits(max_pixels, request_px, decoded_px, max_batch_images, idempotency_cache))
    app = FastAPI(title="silhouette detection service", version=__version__, description=SERVICE_DOC, lifespan=_lifespan(batcher))
    add_detect_routes(app, svc)
    add_other_routes(app, counts, metrics, _health(name, pair_id, batcher))
    app.add_middleware(PairMiddleware, pair_id=pair_id, detector=name)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_bytes=max_bytes, metrics=metrics, max_concurrency=max_concurrency)
    app.state.counts, app.state.metrics, app.state.detector, app.state.detection = counts, metrics, detector, svc
    return app


def _load_detector(detector_name: str, threads: int | None) -> Any:
    """The named detector (or ensemble spec) from the registry, with ONNX Runtime threads when given."""
    from silhouette.detectors import create_detector

    return create_detector(detector_name, **({"num_threads": threads} if threads else {}))


def _health(name: str, pair_id: str | None, batcher: Batcher) -> Callable[[], dict[str, Any]]:
    """The /healthz answer of this app."""
    from silhouette import __version__

    started = time.time()

    def health() -> dict[str, Any]:
        return {"status": "ok", "detector": name, "pair": pair_id, "batch_size": batcher.batch_size,
                "uptime_s": round(time.time() - started, 1), "version": __version__}

    return health


def _lifespan(batcher: Batcher) -> Callable[[FastAPI], Any]:
    """App lifespan: the detector batcher runs while the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001 - FastAPI's lifespan signature
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    return lifespan


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
    )


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes as JSON in $SILHOUETTE_SERVE_CONFIG."""
    return app_from_config(config_from_env())
