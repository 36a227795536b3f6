"""ServiceConfig: everything a worker process needs to build the app, also handed to --workers children as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from silhouette.errors import SilhouetteError
from silhouette.imaging import MAX_PIXELS
from silhouette.serve.limits import (
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDEMPOTENCY_CACHE, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_CONNECTIONS, ConnectionLimits, resolve_app_limits,
)
from silhouette.wire import DEFAULT_API_KEY_ENV

ENV_CONFIG = "SILHOUETTE_SERVE_CONFIG"  # JSON ServiceConfig handed to each uvicorn worker process
DEFAULT_DB_FILE = "silhouette-counts.sqlite"  # `serve` without --db: this SQLite file in the working directory
DEFAULT_KEEP_DAYS = 30


def default_db_url() -> str:
    """The --db default: a SQLite file in the working directory (absolute, so every worker opens the same file)."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DB_FILE}"


def check_keep_days(keep_days: object) -> int:
    """--keep-days as a whole number >= 0 (0 keeps detections forever); a one-line SilhouetteError otherwise."""
    # whole days, at least one: a key pruned sooner than the edge's retry window could be counted twice
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 0:
        raise SilhouetteError(f"--keep-days {keep_days!r}: must be a whole number of days >= 0 (0 keeps everything)")
    return keep_days


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
    db: str | None = None  # the count store's SQLAlchemy URL; None: a private in-memory store (`serve` fills in a file)
    keep_days: int = DEFAULT_KEEP_DAYS
    backend: str = "local"  # where the detector runs: this process, or Ray Serve replicas (serve/backends.py)
    replicas: int = 1  # --backend ray only
    ray_address: str | None = None  # --backend ray only; None: a private local Ray instance

    def limits(self) -> ConnectionLimits:
        """The socket-level part of the config (validated: a bad value raises a one-line SilhouetteError)."""
        return ConnectionLimits(self.header_timeout, self.body_timeout, self.keep_alive, self.max_connections)

    def check(self) -> None:
        """Validate every limit before a socket is bound or a detector loaded."""
        self.limits()
        check_keep_days(self.keep_days)
        resolve_app_limits(
            self.batch_size, self.max_bytes, self.max_pixels, self.max_request_pixels, self.max_decoded_pixels,
            self.max_concurrency, self.idempotency_cache, self.max_batch_images,
        )


def config_from_env() -> ServiceConfig:
    """The ServiceConfig a `--workers N` parent put in $SILHOUETTE_SERVE_CONFIG (defaults without one)."""
    raw = os.environ.get(ENV_CONFIG)
    return ServiceConfig(**json.loads(raw)) if raw else ServiceConfig()
