"""Scale person detection out on Ray Serve: each replica holds its own detector and batches frames dynamically.

The FastAPI service awaits `handle.predict(frame)` in place of its in-process Batcher; frames travel as HxWx3 uint8 BGR
arrays (a quarter of the float tensor) and are stacked into detector batches inside the replica.

One machine: `start_ray_detector("yolox_nano", replicas=2)` starts a private local Ray instance and stops it again
in `shutdown()`. Several machines (docs/deploy.md): `ray get-auth-token --generate` and `ray start --head --port=6379`
on the head node, its ~/.ray/auth_token copied to every worker node and `RAY_AUTH_MODE=token ray start
--address=HEAD:6379` there (each node with silhouette[ray] installed and $SILHOUETTE_SHARED set before `ray start`, so
that replicas find the weights), then on the head node `silhouette serve --backend ray --ray-address auto --replicas N`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from typing import Any, NamedTuple

import numpy as np

from silhouette.errors import SilhouetteError

try:
    import ray
    from ray import serve
except ImportError as _exc:  # an optional extra: nothing else in silhouette imports this module
    raise SilhouetteError('the Ray backend needs Ray Serve: pip install "silhouette[ray]"') from _exc

APP_NAME = "silhouette-detector"
DEPLOYMENT_NAME = "SilhouetteDetector"
DEFAULT_MAX_BATCH = 8
# as the local Batcher's default --batch-wait-ms 5. serve.batch closes a batch this long after its first frame even
# while the previous batch still runs, so batches hold what arrives within the window (a mean of 1.6-1.8 frames at 16
# clients in results/benchmarks/service_ray.json); YOLOX-Nano on one thread costs the same CPU per frame at batch 1
# and 8 (~20 ms), so a longer wait would only add latency
DEFAULT_BATCH_WAIT_S = 0.005
REPLICA_THREADS = 1  # one core per replica: replicas, not threads, spread the work over cores and nodes
# requests a replica accepts at once, queued in its serve.batch queue: at least one batch running and the next one
# filling, and no fewer than the service's --max-concurrency 32 (one worker's requests). A replica at this limit
# makes Serve's router reject, back off and retry: with the former 2 x batch (2 at batch 1) 16 clients on one
# replica got 11 req/s at p50 1.4 s instead of ~30 req/s, and the retries cost the server 18 ms CPU per frame
MAX_ONGOING = 32
PROBE_TIMEOUT_S = 5.0  # a head node that does not accept a TCP connection in this time is reported as absent
CONSTRUCTOR_RETRIES = 1  # a replica that cannot load its detector (weights missing) fails start-up at once


class ReplicaReply(NamedTuple):
    """One frame's person detections, plus which replica ran it in how large a detector batch."""

    boxes: np.ndarray  # [N, 4] float32 xyxy in frame pixels
    scores: np.ndarray  # [N] float32
    pid: int
    batch: int


def _onnx_only(spec: str) -> bool:
    """True when every member of a detector spec ('a', 'a+b*2') is an ONNX zoo model (those take num_threads)."""
    from silhouette.detectors.onnx_zoo import zoo_names

    return all(part.partition("*")[0].strip() in zoo_names() for part in spec.split("+"))


def _build_detector(spec: str, threads: int) -> Any:
    """The detector of one replica, its process limited to `threads` threads (onnxruntime, torch and OpenCV)."""
    import cv2
    import torch

    from silhouette.detectors import create_detector

    # pre- and post-processing run in torch and OpenCV; more threads than the replica's CPUs only contend
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return create_detector(spec, **({"num_threads": threads} if _onnx_only(spec) else {}))


class DetectorReplica:
    """One Ray Serve replica: its own detector behind serve.batch dynamic batching."""

    def __init__(self, detector_name: str, max_batch: int = DEFAULT_MAX_BATCH, batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
                 threads: int = REPLICA_THREADS) -> None:
        self.detector = _build_detector(detector_name, threads)
        self.pid = os.getpid()
        # load the weights now: a node without them fails start-up (serve.run raises), not every request later
        self.detect([np.zeros((64, 64, 3), np.uint8)])
        # serve.batch keeps one queue per decorated function, so the bound method is wrapped here: the batch settings
        # come from start_ray_detector, and each replica instance gets its own queue
        self._batched = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s)(self._run_batch)

    async def predict(self, image: np.ndarray) -> ReplicaReply:
        """Person detections of one HxWx3 uint8 BGR frame, run in a batch with the frames that arrive meanwhile."""
        return await self._batched(image)

    async def _run_batch(self, images: list[np.ndarray]) -> list[ReplicaReply]:
        # a worker thread runs the detector so that the event loop keeps queueing the next batch meanwhile
        return await asyncio.to_thread(self.detect, images)

    def detect(self, images: list[np.ndarray]) -> list[ReplicaReply]:
        """Run the detector once per frame size (frames of one size stack into one batch), answers in input order."""
        import torch

        from silhouette.imaging import bgr_batch_to_tensor

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        replies: list[ReplicaReply | None] = [None] * len(images)
        for idx in groups.values():
            batch = bgr_batch_to_tensor([images[i] for i in idx])
            with torch.inference_mode():
                dets = self.detector.predict(batch)
            for i, det in zip(idx, dets):
                persons = det.persons()
                replies[i] = ReplicaReply(persons.boxes.numpy(), persons.scores.numpy(), self.pid, len(idx))
        return replies  # type: ignore[return-value]  # every index was filled above


def _check_frame(image: Any) -> np.ndarray:
    """The frame as a C-contiguous HxWx3 uint8 array (what the replicas stack), ValueError otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {got}")
    return np.ascontiguousarray(image)


class RayDetectorHandle:
    """What the service awaits instead of its local Batcher: `await handle.predict(frame)`; `shutdown()` when done."""

    def __init__(self, handle: Any, detector_name: str, replicas: int, max_batch: int, session: str, app_name: str) -> None:
        self._handle = handle
        # which replica answered, in how large a detector batch: the evidence that scaling out and batching happen
        self.batch_sizes: Counter[int] = Counter()  # detector batch size -> frames answered from such batches
        self.frames_by_pid: Counter[int] = Counter()
        self.detector_name, self.replicas, self.max_batch = detector_name, replicas, max_batch
        self.session, self.app_name = session, app_name  # session: "local", "joined" or "borrowed" (see _connect)

    async def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """{"boxes": [N, 4] float32 xyxy, "scores": [N] float32} of the persons in one HxWx3 uint8 BGR frame."""
        frame = _check_frame(image)
        if self._handle is None:
            raise SilhouetteError("the Ray detector was shut down")
        reply: ReplicaReply = await self._handle.predict.remote(frame)
        self.batch_sizes[reply.batch] += 1
        self.frames_by_pid[reply.pid] += 1
        return {"boxes": reply.boxes, "scores": reply.scores}

    def replica_pids(self) -> list[int]:
        """Process ids of the replicas that have answered so far (each runs on one node of the cluster)."""
        return sorted(self.frames_by_pid)

    def shutdown(self) -> None:
        """Remove the replicas; stop Ray too if start_ray_detector started it (idempotent)."""
        if self._handle is None:
            return
        self._handle = None
        _stop(self.session, self.app_name)

    def __enter__(self) -> "RayDetectorHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _validate(detector_name: Any, replicas: Any, max_batch: Any, batch_wait_s: Any, threads: Any, address: Any) -> None:
    """One-line SilhouetteError for a bad argument, before anything starts."""
    from silhouette.detectors import detector_names

    for option, value in (("--replicas", replicas), ("--batch-size", max_batch), ("--threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SilhouetteError(f"{option} {value!r}: must be a whole number >= 1")
    if isinstance(batch_wait_s, bool) or not isinstance(batch_wait_s, (int, float)) or not 0 <= batch_wait_s <= 10:
        raise SilhouetteError(f"batch wait {batch_wait_s!r} s: must be a number of seconds in [0, 10]")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise SilhouetteError(f"--ray-address {address!r}: give 'auto', HOST:6379 or ray://HOST:10001")
    known = detector_names()
    for part in str(detector_name).split("+"):
        name = part.partition("*")[0].strip()
        if name not in known:
            raise SilhouetteError(f"--detector {detector_name!r}: unknown detector {name!r}; choose from {', '.join(known)}")
        if address is None:
            _check_local_weights(name)


def check_arguments(detector_name: Any, replicas: Any, max_batch: Any, address: Any = None, *,
                    batch_wait_s: Any = DEFAULT_BATCH_WAIT_S, threads: Any = REPLICA_THREADS) -> None:
    """What start_ray_detector checks first, for callers that validate before they start anything (`serve`)."""
    _validate(detector_name, replicas, max_batch, batch_wait_s, threads, address)


def _check_local_weights(name: str) -> None:
    """A local instance's replicas read the weights this process sees: check the ONNX file exists before Ray starts."""
    from silhouette.detectors import create_detector
    from silhouette.detectors.onnx_zoo import zoo_names

    if name in zoo_names():  # cheap: an ONNX detector opens its file at the first predict
        info = create_detector(name).info()
        if not info.weights_present:
            raise SilhouetteError(f"--detector {name}: weights file {info.weights} not found; "
                                  "set SILHOUETTE_SHARED to the folder holding weights/")


def _connect(address: str | None, cpus_needed: int) -> str:
    """Start a private local Ray instance ("local") or join the cluster at `address` ("joined"); "borrowed" if connected."""
    if ray.is_initialized():
        return "borrowed"  # the caller's own Ray session (a notebook, a test): used as it is and left running
    if address is None:
        # a new local instance turns token authentication on (the token in ~/.ray/auth_token); that is the point,
        # not news worth a warning on every start
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        # at least one logical CPU per replica, else Ray would leave the surplus replicas pending forever
        kwargs: dict[str, Any] = {"num_cpus": max(cpus_needed, os.cpu_count() or 1), "include_dashboard": False}
    else:
        _probe(address)
        kwargs = {"address": address}
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up INFO lines in this process
    try:
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray reports a bad address in several ways
        if address is None:
            raise SilhouetteError(f"cannot start a local Ray instance: {_one_line(exc)}") from None
        raise SilhouetteError(f"cannot join the Ray cluster at {address}: {_one_line(exc)}; {_join_hint(exc)}") from None
    if address is None:
        return "local"
    _check_capacity(address, cpus_needed)
    return "joined"


def _probe(address: str) -> None:
    """One-line SilhouetteError at once when nothing listens at HOST:PORT (ray.init would retry it for minutes)."""
    target = address.strip().removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address.strip() == "auto" or not host:
        return  # Ray resolves these itself, without a network wait
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise SilhouetteError(
            f"--ray-address {address}: nothing answers at {host}:{port} ({exc}); start the head node with "
            f"`ray start --head --port={port}` or give its address"
        ) from None


def _join_hint(exc: BaseException) -> str:
    """What to check when joining a cluster failed: the token when Ray refused it, else the head node."""
    chain, seen = [], exc
    while seen is not None:
        chain.append(repr(seen))
        seen = seen.__cause__ or seen.__context__
    if any("authentication" in text.lower() for text in chain):
        return ("the cluster uses token authentication: copy the head node's ~/.ray/auth_token to this machine and "
                "set RAY_AUTH_MODE=token (Ray only looks for the token by itself with --ray-address auto)")
    return "is `ray start --head` running there, and is this Ray the same version as the cluster's?"


def _check_capacity(address: str, cpus_needed: int) -> None:
    """Fail at once when the cluster has too few CPUs for the replicas (Serve would wait for them forever)."""
    free = ray.available_resources().get("CPU", 0.0)
    if free < cpus_needed:
        ray.shutdown()
        raise SilhouetteError(
            f"the Ray cluster at {address} has {free:g} free CPUs, the replicas need {cpus_needed}: "
            "add nodes (`ray start --address=HEAD:6379`) or lower --replicas"
        )


def _stop(session: str, app_name: str) -> None:
    """Remove this app's replicas; shut Serve and Ray down only as far as this process started them."""
    if not ray.is_initialized():
        return
    if session == "local":
        ray.shutdown()  # the private instance stops, its Serve controller and replicas with it
        return
    try:
        serve.delete(app_name)  # a shared cluster keeps its Serve controller and its other apps
    finally:
        if session == "joined":
            ray.shutdown()  # only disconnects from the cluster


def _one_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (Ray's are multi-line tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _deploy(detector_name: str, replicas: int, max_batch: int, batch_wait_s: float, threads: int, app_name: str) -> Any:
    """Run the replicas as a Serve app without an HTTP proxy; the DeploymentHandle once every replica is up."""
    quiet = {"log_level": "WARNING"}
    # the FastAPI service is the only HTTP front; Serve's own proxy would also take port 8000
    serve.start(proxy_location="Disabled", logging_config=quiet)
    deployment = serve.deployment(
        DetectorReplica, name=DEPLOYMENT_NAME, num_replicas=replicas, ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=max(2 * max_batch, MAX_ONGOING), max_constructor_retry_count=CONSTRUCTOR_RETRIES, logging_config=quiet,
    )
    app = deployment.bind(detector_name, max_batch, batch_wait_s, threads)
    try:
        handle = serve.run(app, name=app_name, route_prefix=None, logging_config=quiet)
    except Exception as exc:  # a replica constructor failed (weights missing on a node, say)
        why = _replica_error(app_name) or _one_line(exc)
        raise SilhouetteError(f"Ray Serve could not start {replicas} replica(s) of {detector_name}: {why}") from None
    # frames and answers travel over Serve's direct gRPC channel (token-authenticated like Ray's own), not as objects
    # in Ray's object store: that round trip cost the serve process, raylet and replica ~9 ms CPU per frame together
    # (37 vs 27 ms at 4 clients on one replica, benchmarks/service.py)
    return handle.options(_by_reference=False)


def _replica_error(app_name: str) -> str | None:
    """The last line of a failed replica's traceback: serve.run only says that the deployment failed, not why."""
    try:
        app = serve.status().applications.get(app_name)
        message = app.deployments[DEPLOYMENT_NAME].message if app and DEPLOYMENT_NAME in app.deployments else ""
    except Exception:  # a best-effort detail of an error already being reported
        return None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else None


def start_ray_detector(detector_name: str = "yolox_nano", replicas: int = 1, max_batch: int = DEFAULT_MAX_BATCH,
                       address: str | None = None, *, batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
                       threads: int = REPLICA_THREADS, app_name: str = APP_NAME) -> RayDetectorHandle:
    """Deploy `replicas` detector replicas on Ray Serve (`address=None`: a private local Ray instance); validated first."""
    _validate(detector_name, replicas, max_batch, batch_wait_s, threads, address)
    session = _connect(address, replicas * threads)
    try:
        handle = _deploy(detector_name, replicas, max_batch, batch_wait_s, threads, app_name)
    except BaseException:
        _stop(session, app_name)
        raise
    return RayDetectorHandle(handle, detector_name, replicas, max_batch, session, app_name)


__all__ = [
    "APP_NAME", "DEFAULT_MAX_BATCH", "DEFAULT_BATCH_WAIT_S", "DetectorReplica", "RayDetectorHandle",
    "ReplicaReply", "check_arguments", "start_ray_detector",
]
