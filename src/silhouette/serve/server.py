"""Running the service: `serve()` with uvicorn (one or several workers), and ServerThread for tests and benchmarks."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from fastapi import FastAPI

from silhouette.errors import SilhouetteError
from silhouette.serve.app import app_from_config
from silhouette.serve.backends import backend_running, check_backend
from silhouette.serve.config import ENV_CONFIG, ServiceConfig, default_db_url
from silhouette.serve.connections import ACCEPT_HEADROOM, FD_RESERVE, raise_fd_limit, uvicorn_options
from silhouette.serve.limits import ConnectionLimits
from silhouette.wire import load_api_key

WORKER_APP = "silhouette.serve.app:app_from_env"  # uvicorn's factory in each --workers child process


def serve(cfg: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info") -> None:
    """Run the service with uvicorn; several workers share the port (each loads its own detector, all one count store)."""
    import uvicorn

    if workers < 1:
        raise SilhouetteError(f"--workers {workers}: must be >= 1")
    if cfg.no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        raise SilhouetteError(f"--no-auth is only allowed on a loopback host, not {host}")
    cfg.check()
    check_backend(cfg.backend, cfg.replicas, cfg.ray_address, workers, cfg.pair)
    limits = cfg.limits()
    if not cfg.no_auth:  # fail fast on a missing key, before a database file is created
        load_api_key(cfg.api_key_env, cfg.api_key_file)
    cfg = with_store(cfg)
    raise_fd_limit(limits.max_connections + FD_RESERVE + ACCEPT_HEADROOM)  # workers inherit the raised limit
    if workers == 1:
        app = app_from_config(cfg)
        with backend_running(app):  # Ray replicas: deployed before the port is bound, removed after uvicorn stops
            uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_options(limits))
        return
    # fail fast on a bad detector name before forking; each worker then builds its own app
    from silhouette.detectors import detector_names

    if cfg.detector not in detector_names() and "+" not in cfg.detector:
        raise SilhouetteError(f"--detector {cfg.detector!r}: unknown; choose from {', '.join(detector_names())}")
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    uvicorn.run(
        WORKER_APP, factory=True, host=host, port=port, workers=workers, log_level=log_level,
        **uvicorn_options(limits, by_name=True),
    )


def with_store(cfg: ServiceConfig) -> ServiceConfig:
    """`cfg` with its --db (default: a SQLite file here) opened and migrated once, before any worker starts."""
    from silhouette.serve.storage import CountStore

    cfg = replace(cfg, db=cfg.db or default_db_url())
    with CountStore(cfg.db) as store:  # a bad URL is a one-line SilhouetteError, before a detector is loaded
        retention = f"kept {cfg.keep_days} days" if cfg.keep_days else "kept forever"
        print(f"silhouette serve: counts stored in {store.url} ({retention})", file=sys.stderr, flush=True)
    return cfg


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
