"""Where the service's detector runs: in the serving process (`--backend local`, the Batcher) or on Ray Serve
replicas (`--backend ray`), behind the same HTTP API, auth, limits and count store.

The app only sees the Batcher seam: `batch_size`, `await start()`, `await stop()` and `await submit(frame)` (HxWx3 uint8 BGR) -> an
object with `.boxes` [N, 4] and `.scores` [N]. RayBatcher fills it with `RayDetectorHandle.predict`; Ray itself is
imported only when the ray backend is chosen (it is an optional extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np

from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.ray_backend import RayDetectorHandle

BACKENDS = ("local", "ray")


class Persons(NamedTuple):
    """One frame's person detections as the recorder reads them (numpy arrays have the .tolist() it calls)."""

    boxes: np.ndarray  # [N, 4] float32 xyxy in frame pixels
    scores: np.ndarray  # [N] float32


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """`serve` options choosing where the detector runs."""
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where the detector runs: in this process (local, default) or as Ray Serve replicas (ray), "
                        "behind the same API, auth and limits")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="detector replicas on Ray Serve, one core each (--backend ray; default 1)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join: auto (the node's own `ray start`), HOST:6379 or ray://HOST:10001 "
                        "(--backend ray; default: a private local Ray instance, stopped on exit)")


def check_backend(backend: Any, replicas: Any, ray_address: Any, workers: int = 1, pair: str | None = None) -> None:
    """One-line SilhouetteError for a backend setting that cannot work, before a socket is bound or Ray started."""
    if backend not in BACKENDS:
        raise SilhouetteError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise SilhouetteError(f"--replicas {replicas!r}: must be a whole number >= 1")
    if backend == "local":
        if replicas != 1 or ray_address is not None:
            raise SilhouetteError("--replicas and --ray-address need --backend ray")
        return
    if workers > 1:
        # every uvicorn worker builds its own app, so each would deploy (and later delete) the same Serve app
        raise SilhouetteError(f"--backend ray with --workers {workers}: each worker would redeploy the replicas; "
                              "use one worker and scale with --replicas")
    if pair is not None:
        raise SilhouetteError("--pair serves its checkpoint's detector in this process; use --backend local")


def limit_local_threads(threads: int | None) -> None:
    """Give torch and OpenCV the --threads that ONNX Runtime gets, in a process that runs the detector itself."""
    if not threads:
        return  # no --threads: every library keeps its default (all cores)
    import cv2
    import torch

    # pre- and post-processing run in torch and OpenCV; their default pools (all cores) spin beside ONNX Runtime's:
    # with --threads 1 the server spent 78 ms CPU per frame against the detector's own 19 (benchmarks/service.py)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def backend_batcher(cfg: ServiceConfig) -> RayBatcher | None:
    """The detector seam of a --backend ray config (validated, not started yet); None for the local Batcher."""
    check_backend(cfg.backend, cfg.replicas, cfg.ray_address, pair=cfg.pair)
    if cfg.backend == "local":
        return None
    return RayBatcher(cfg.detector, cfg.replicas, cfg.batch_size, cfg.ray_address, cfg.batch_wait_ms / 1000.0, cfg.threads)


class RayBatcher:
    """The Batcher seam over Ray Serve replicas: deployed by open() or the app's lifespan, removed when it ends."""

    def __init__(self, detector: str, replicas: int, max_batch: int, address: str | None, batch_wait_s: float,
                 threads: int | None = None) -> None:
        from silhouette.serve import ray_backend  # the optional extra: a one-line error here when Ray is missing

        self.threads = threads or ray_backend.REPLICA_THREADS
        ray_backend.check_arguments(detector, replicas, max_batch, address, batch_wait_s=batch_wait_s, threads=self.threads)
        self.detector, self.replicas, self.max_batch, self.address, self.batch_wait_s = detector, replicas, max_batch, address, batch_wait_s
        # frames of one batch request in flight at once: enough to fill every replica's batch
        self.batch_size = max_batch * replicas
        self.handle: RayDetectorHandle | None = None
        self._lock = threading.Lock()  # open() from `serve` and from the lifespan must not deploy twice

    def open(self) -> RayDetectorHandle:
        """Start (or join) Ray and deploy the replicas, once; blocks until every replica is up."""
        from silhouette.serve.ray_backend import start_ray_detector

        with self._lock:
            if self.handle is None:
                self.handle = start_ray_detector(self.detector, self.replicas, self.max_batch, self.address,
                                                 batch_wait_s=self.batch_wait_s, threads=self.threads)
            return self.handle

    def close(self) -> None:
        """Remove the replicas, and stop Ray if open() started it (idempotent)."""
        with self._lock:
            handle, self.handle = self.handle, None
        if handle is not None:
            handle.shutdown()

    async def start(self) -> None:
        """Lifespan start-up: deploy unless `serve` already did, in a thread (Ray blocks while replicas start)."""
        if self.handle is None:
            await asyncio.to_thread(self.open)

    async def stop(self) -> None:
        """Lifespan shutdown: remove the replicas."""
        await asyncio.to_thread(self.close)

    async def submit(self, image: np.ndarray) -> Persons:
        """Person detections of one HxWx3 uint8 BGR frame, from whichever replica Serve routes it to."""
        if self.handle is None:
            raise SilhouetteError("the Ray backend is not running (the app's lifespan has not started it)")
        found = await self.handle.predict(image)
        return Persons(found["boxes"], found["scores"])


@contextlib.contextmanager
def backend_running(app: FastAPI) -> Iterator[None]:
    """Deploy the app's Ray replicas before uvicorn starts (errors are one line, before the port is bound); remove
    them after it stops, also when it never reached its lifespan. A local app needs nothing."""
    batcher = app.state.detection.batcher
    if not isinstance(batcher, RayBatcher):
        yield
        return
    handle = batcher.open()
    where = f"the Ray cluster at {batcher.address}" if batcher.address else "a private local Ray instance"
    print(f"silhouette serve: {handle.detector_name} on {handle.replicas} Ray Serve replica(s) of {batcher.threads} "
          f"thread(s), batches of up to {handle.max_batch}, on {where}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        batcher.close()
