"""Several cameras in one client process, each with a capture thread, a sender thread and a spool for outages.

Per camera, the capture thread reads a frame, stamps its capture time, obfuscates it, encodes it and numbers it,
then hands it to the camera's FrameQueue. All cameras share one obfuscator runner without a lock: ONNX Runtime's
run() is thread-safe; on 2 busy cores, two cameras ran at about the same frames/s with a shared session as with one
session each (which costs ~15 MiB and its own thread pool per camera), and slower with one session behind a lock.
The capture thread never waits on the network while a spool exists. The sender thread POSTs the queued frames one at a time, lowest
sequence number first, so a camera's frames reach the service in capture order.

Outages: a try that fails in a way a later try may fix (connection refused or reset, timeout, 5xx, 408/425/429)
puts the frame, every frame waiting in memory and every frame captured after it into the spool (see spool.py),
and the sender retries the oldest spooled frame with exponential backoff. Once the service answers, the spool is
sent oldest first and new frames queue behind it (strict capture order), until it is empty. A 2xx deletes an
entry; a 4xx that the same bytes will always get (400, 413, 415, 422) deletes it too and counts it as failed.
A 401, 404/405 or 409 stops every camera with a one-line error; undelivered frames stay in the spool.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from silhouette.edge.client import OK, REJECTED, RETRY, EdgeClient, EdgeStats, Reply
from silhouette.edge.spool import Spool, SpoolError
from silhouette.errors import SilhouetteError
from silhouette.fileio import read_yaml
from silhouette.imaging import encode_frame, resize_frame
from silhouette.wire import CAMERA_ID_RE, IDEMPOTENCY_HEADER, content_type, frame_key

log = logging.getLogger("silhouette.edge")

HANDOFF_FRAMES = 16  # frames a camera holds in memory between capture and sender before the spool takes over
FLEET_KEYS = ("camera_id", "source", "every", "max_frames", "max_fps")
LIVE_KINDS = ("webcam", "stream")


@dataclass
class CameraSpec:
    """One camera of the fleet, as configured: its id (None: derived from the source), source and sampling."""

    camera_id: str | None
    source: str
    every: int = 1
    max_frames: int | None = None
    max_fps: float | None = None


def check_camera_id(camera_id: str, where: str = "--camera-id") -> str:
    """The service's rule for camera ids, checked before anything starts."""
    if not isinstance(camera_id, str) or not CAMERA_ID_RE.match(camera_id):
        raise SilhouetteError(f"{where} {camera_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if camera_id in (".", ".."):  # it names the camera's spool folder, which must stay inside --spool
        raise SilhouetteError(f"{where} {camera_id!r}: not usable as a camera id; use letters or digits too")
    return camera_id


def check_unique(pairs: list[tuple[str, str]]) -> None:
    """One-line error when two sources share a camera id (their counts and idempotency keys would mix)."""
    seen: dict[str, str] = {}
    for camera_id, source in pairs:
        if camera_id in seen:
            raise SilhouetteError(f"camera id {camera_id!r} is given to two sources ({seen[camera_id]} and {source}); "
                                  "give each source its own camera id")
        seen[camera_id] = source


def specs_from_options(sources: list[str], camera_ids: list[str] | None, every: int = 1,
                       max_frames: int | None = None, max_fps: float | None = None) -> list[CameraSpec]:
    """Cameras of repeated --source SRC [--camera-id ID] options, paired in order."""
    ids = camera_ids or []
    if ids and len(ids) != len(sources):
        raise SilhouetteError(f"{len(sources)} --source but {len(ids)} --camera-id: give one --camera-id per --source, "
                              "in the same order (or none, to name cameras after their sources)")
    for camera_id in ids:
        check_camera_id(camera_id)
    check_unique(list(zip(ids, sources)))
    return [CameraSpec(ids[i] if ids else None, src, every, max_frames, max_fps) for i, src in enumerate(sources)]


def _fleet_number(value: Any, key: str, where: str, kind: type) -> Any:
    """A positive int (every, max_frames) or number (max_fps) of a fleet entry, or a one-line error."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not ok or (kind is int and not isinstance(value, int)):
        raise SilhouetteError(f"{where}: {key} must be a {'whole number' if kind is int else 'number'} > 0, got {value!r}")
    return kind(value)


def load_fleet(path: str | Path) -> list[CameraSpec]:
    """Cameras of a fleet file: YAML `cameras:` list of {camera_id, source, every, max_frames, max_fps}."""
    path = Path(path).expanduser()
    doc = read_yaml(path, "--fleet")
    cams = doc.get("cameras") if isinstance(doc, dict) else None
    if not isinstance(cams, list) or not cams:
        raise SilhouetteError(f"--fleet {path}: expected a non-empty 'cameras:' list of {{camera_id, source}} entries")
    specs = []
    for i, cam in enumerate(cams):
        where = f"--fleet {path}: camera {i + 1}"
        if not isinstance(cam, dict) or "camera_id" not in cam or "source" not in cam:
            raise SilhouetteError(f"{where}: needs camera_id and source")
        unknown = sorted(set(cam) - set(FLEET_KEYS))
        if unknown:
            raise SilhouetteError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(FLEET_KEYS)})")
        n = {k: _fleet_number(cam[k], k, where, float if k == "max_fps" else int)
             for k in ("every", "max_frames", "max_fps") if cam.get(k) is not None}
        specs.append(CameraSpec(check_camera_id(str(cam["camera_id"]), where + ": camera_id"), str(cam["source"]),
                                n.get("every", 1), n.get("max_frames"), n.get("max_fps")))
    check_unique([(s.camera_id, s.source) for s in specs])  # type: ignore[misc]
    return specs


@dataclass
class CameraStats(EdgeStats):
    """One camera's run: EdgeStats plus what went through the spool."""

    camera_id: str = ""
    carried: int = 0  # entries an earlier run left in the spool
    replayed: int = 0  # of those, delivered by this run
    spooled: int = 0  # frames of this run written to the spool
    lost: int = 0  # entries dropped from a full spool (oldest first) or that could not be written
    left: int = 0  # entries still in the spool at exit: the next run sends them
    error: str = ""  # why the source stopped early

    def summary(self) -> dict[str, Any]:
        """EdgeStats' summary plus the spool's counters."""
        extra = {k: getattr(self, k) for k in ("camera_id", "carried", "replayed", "spooled", "lost", "left", "error")}
        return {**super().summary(), **extra}

    @property
    def complete(self) -> bool:
        """Every frame delivered: none failed, lost or left behind, and the source ended normally."""
        return not (self.failed or self.lost or self.left or self.error)


def total(stats: list[CameraStats]) -> CameraStats:
    """The fleet's totals (seconds: the longest camera)."""
    out = CameraStats(camera_id="total")
    for s in stats:
        for f in fields(CameraStats):
            if f.name in ("camera_id", "error"):
                continue
            a, b = getattr(out, f.name), getattr(s, f.name)
            setattr(out, f.name, max(a, b) if f.name == "seconds" else a + b)
        out.error = out.error or s.error
    return out


@dataclass
class Pending:
    """A frame on its way out: in memory (payload set) or in the spool (on_disk, payload read just before sending)."""

    seq: int
    meta: dict[str, Any] | None  # camera_id, index, headers
    payload: bytes | None
    on_disk: bool = False
    carried: bool = False  # spooled by an earlier run


class FrameQueue:
    """One camera's frames between capture and sender, in capture order: a short queue in memory, the spool behind it."""

    def __init__(self, spool: Spool | None, stats: CameraStats, capacity: int = HANDOFF_FRAMES) -> None:
        self.spool, self.stats, self.capacity = spool, stats, capacity
        self.cond = threading.Condition()
        self.memory: deque[Pending] = deque()
        self.spooling = False  # set by an outage, cleared once the spool is empty again
        self.closed = False  # the capture thread is done
        self.abandoned = False  # the sender is done: nobody will take frames from memory
        first = spool.next_seq() if spool is not None else 0
        self.carried_below = first  # lower sequence numbers were spooled by an earlier run
        self._seq = itertools.count(first)
        self._warned_full = False
        stats.carried = len(spool) if spool is not None else 0
        if stats.carried:
            log.info("%s: %d frame(s) left in %s by an earlier run are sent first", stats.camera_id, stats.carried, spool.folder)

    def next_seq(self) -> int:
        """The next sequence number (capture thread only): capture order, continuing after the spool's entries."""
        return next(self._seq)

    def put(self, item: Pending) -> None:
        """Queue a captured frame: in memory while the service keeps up, else into the spool (no spool: wait for room)."""
        with self.cond:
            if self.spool is None:
                while len(self.memory) >= self.capacity and not self.abandoned:
                    self.cond.wait(0.1)  # without a spool the source waits for the network (backpressure)
                if self.abandoned:
                    self.stats.failed += 1
                else:
                    self.memory.append(item)
            elif self.spooling or len(self.memory) >= self.capacity or self.abandoned:
                # once a frame is spooled every later one follows it there, so memory never overtakes the spool
                self.spooling = True
                self._spool(item)
            else:
                self.memory.append(item)
            self.cond.notify_all()

    def close(self) -> None:
        """No more frames will be put (the capture thread ended)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self, timeout: float) -> Pending | None:
        """The pending frame with the lowest sequence number, waiting up to `timeout` for one; None if none came."""
        with self.cond:
            item = self._head()
            if item is None and not self.closed:
                self.cond.wait(timeout)
                item = self._head()
            return item

    def _head(self) -> Pending | None:
        """Pop the oldest frame of memory and spool (the spool's stays on disk, marked in flight)."""
        mem = self.memory[0].seq if self.memory else None
        disk = self.spool.oldest() if self.spool is not None else None
        if disk is not None and (mem is None or disk < mem):
            self.spool.inflight = disk  # type: ignore[union-attr]
            return Pending(disk, None, None, on_disk=True, carried=disk < self.carried_below)
        return self.memory.popleft() if self.memory else None

    def finished(self) -> bool:
        """The capture thread is done and nothing is pending."""
        with self.cond:
            return self.closed and not self.memory and not (self.spool is not None and len(self.spool))

    def load(self, item: Pending) -> bool:
        """Read a spooled frame's bytes and headers; a broken entry is deleted and counted as failed (False)."""
        try:
            entry = self.spool.read(item.seq)  # type: ignore[union-attr]
        except SpoolError as exc:
            log.warning("%s: spool entry %d is unusable (%s); deleted", self.stats.camera_id, item.seq, exc)
            self.done(item)
            with self.cond:
                self.stats.failed += 1
            return False
        item.meta, item.payload = entry.meta, entry.payload
        return True

    def done(self, item: Pending) -> None:
        """The service answered `item` for good (2xx or a permanent 4xx): forget it."""
        with self.cond:
            if item.on_disk:
                self.spool.remove(item.seq)  # type: ignore[union-attr]
            if self.spooling and not len(self.spool):  # type: ignore[arg-type]
                self.spooling = False  # the backlog is sent: new frames go through memory again

    def hold(self, item: Pending) -> None:
        """The service did not take `item`: it, and every frame waiting in memory, go to the spool."""
        with self.cond:
            if self.spool is None:
                return
            self.spooling = True
            if item.on_disk:
                self.spool.inflight = None
            else:
                self._spool(item)
            while self.memory:
                self._spool(self.memory.popleft())

    def abandon(self) -> None:
        """The sender stopped: a capture thread still running must not wait for room."""
        with self.cond:
            self.abandoned = True
            self.cond.notify_all()

    def finish(self) -> None:
        """After both threads: frames still in memory go to the spool (no spool: count as failed); count what is left."""
        with self.cond:
            if self.spool is None:
                self.stats.failed += len(self.memory)
                self.memory.clear()
                return
            self.spool.inflight = None
            while self.memory:
                self._spool(self.memory.popleft())
            self.stats.left = len(self.spool)
            self.spool.close()

    def _spool(self, item: Pending) -> None:
        """Write one in-memory frame to the spool (caller holds the lock); count what a full spool drops."""
        try:
            written, dropped = self.spool.put(item.seq, item.meta, item.payload)  # type: ignore[union-attr, arg-type]
        except OSError as exc:  # disk full, read-only: the frame is lost, the camera goes on
            written, dropped = False, 1
            log.warning("%s: cannot write to the spool %s (%s); frame lost", self.stats.camera_id, self.spool.folder,  # type: ignore[union-attr]
                        exc.strerror or exc)
        self.stats.spooled += int(written)
        self.stats.lost += dropped
        if dropped and not self._warned_full:
            self._warned_full = True
            log.warning("%s: spool %s is full (%.0f MB): dropping the oldest frames; see the summary for how many",
                        self.stats.camera_id, self.spool.folder, self.spool.max_bytes / 2**20)  # type: ignore[union-attr]


@dataclass
class SendConfig:
    """What every camera of the fleet shares: encoding, model size, obfuscator id, and how long to wait at the end."""

    fmt: str = "png"
    quality: int = 90
    size: tuple[int, int] | None = None
    obfuscator_id: str | None = None
    drain_for: float | None = 30.0  # seconds after the input ended that an unreachable service is waited for
    on_result: Callable[[str, int, dict[str, Any] | None, bool], None] | None = None  # (camera, index, result, replayed)


def paced(frames: Iterator[Any], max_fps: float | None, live: bool, stop: threading.Event) -> Iterator[Any]:
    """At most `max_fps` frames a second: a file waits for each frame's slot, a live source skips early frames."""
    if not max_fps:
        yield from frames
        return
    period, slot = 1.0 / max_fps, time.monotonic()
    for frame in frames:
        now = time.monotonic()
        if now < slot:
            if live:
                continue  # a camera does not wait: the frame is stale by the time its slot comes
            if stop.wait(slot - now):
                return
        yield frame
        slot = max(slot, now) + period


class Camera:
    """One camera: its spec, opened source, obfuscator, queue and stats; `capture` and `send` are its two threads."""

    def __init__(self, spec: CameraSpec, source: Any, spool: Spool | None, edge: Callable[[Any], Any]) -> None:
        if spec.camera_id is None:
            raise SilhouetteError(f"{spec.source}: no camera id")
        self.spec, self.source, self.spool, self.edge = spec, source, spool, edge
        self.camera_id: str = spec.camera_id
        self.stats = CameraStats(camera_id=self.camera_id)
        self.queue = FrameQueue(spool, self.stats)

    def capture(self, fleet: Fleet) -> None:
        """Capture thread: read, stamp, obfuscate, encode and queue each frame; only the obfuscated encoding is kept."""
        from silhouette.data.sources import sample_frames

        cfg, stats, client = fleet.cfg, self.stats, fleet.client
        mime = content_type(cfg.fmt)
        decoded = iter(self.source)
        frames = sample_frames(decoded, every=self.spec.every)
        live = getattr(self.source, "kind", "") in LIVE_KINDS
        try:
            for frame in itertools.islice(paced(frames, self.spec.max_fps, live, fleet.stop), self.spec.max_frames):
                captured = time.time()  # when the frame left the source: X-Capture-Time, kept by the spool
                if fleet.stop.is_set():
                    break
                payload = encode_frame(self.edge(frame.image), cfg.fmt, cfg.quality)
                self._measure(frame.image, cfg)
                key = frame_key(self.camera_id, client.run_id, frame.index)
                headers = client.frame_headers(mime, key, captured, cfg.obfuscator_id)
                meta = {"camera_id": self.camera_id, "index": int(frame.index), "headers": headers}
                self.queue.put(Pending(self.queue.next_seq(), meta, payload))
                stats.frames += 1
        except Exception as exc:  # noqa: BLE001 - carried to the fleet or the summary
            self._source_failed(exc, fleet)
        finally:
            frames.close()  # release the capture now, not whenever the generators are collected
            if hasattr(decoded, "close"):
                decoded.close()
            self.queue.close()

    def _source_failed(self, exc: Exception, fleet: Fleet) -> None:
        """A source that never gave a frame is a user error (stop, one line); a later failure stops this camera only."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if self.stats.frames == 0:
            fleet.fail(exc if isinstance(exc, SilhouetteError) else
                       SilhouetteError(f"{self.spec.source}: cannot read frames ({reason})"))
            return
        self.stats.error = reason
        log.error("%s: the source stopped after %d frame(s): %s", self.camera_id, self.stats.frames, reason)

    def _measure(self, image: Any, cfg: SendConfig) -> None:
        """Bytes the original frame would have cost with the same encoding (measured for the summary, never sent)."""
        self.stats.bytes_original += len(encode_frame(image, cfg.fmt, cfg.quality))
        if cfg.size is not None:
            self.stats.bytes_original_resized += len(encode_frame(resize_frame(image, cfg.size), cfg.fmt, cfg.quality))

    def send(self, fleet: Fleet) -> None:
        """Sender thread: POST frames in capture order; spool and back off while the service is down; drain at the end."""
        failures, deadline = 0, None
        try:
            while not fleet.stop.is_set():
                item = self.queue.take(0.2)
                if item is None:
                    if self.queue.finished():
                        return
                    continue
                if item.on_disk and not self.queue.load(item):
                    continue
                reply = self._post(item, fleet)
                if reply.outcome != RETRY:
                    if failures:
                        log.info("%s: the service answers again; sending the spooled frames in order", self.camera_id)
                    failures = 0
                    self._settle(item, reply, fleet.cfg)
                    continue
                self.stats.retries += 1
                self.queue.hold(item)
                if failures == 0:
                    log.warning("%s: the service did not take a frame (%s); spooling to %s until it does",
                                self.camera_id, reply.reason, self.spool.folder if self.spool else "-")
                wait = fleet.client.delay(failures)
                failures += 1
                if self.queue.closed and fleet.cfg.drain_for is not None:
                    deadline = deadline or time.monotonic() + fleet.cfg.drain_for
                    if time.monotonic() >= deadline:
                        log.warning("%s: the service is still unreachable %.0f s after the input ended; the spooled "
                                    "frames are sent by the next run", self.camera_id, fleet.cfg.drain_for)
                        return
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                fleet.stop.wait(wait)
        except SilhouetteError as exc:  # 401, 404, 409: no frame of any camera can succeed
            fleet.fail(exc)
        except Exception as exc:
            log.exception("%s: the sender failed", self.camera_id)
            fleet.fail(SilhouetteError(f"{self.camera_id}: the sender failed ({type(exc).__name__}: {exc})"))
        finally:
            self.queue.abandon()

    def _post(self, item: Pending, fleet: Fleet) -> Reply:
        """One frame to the service: a single try with a spool, the retry budget without one."""
        meta, payload = item.meta, item.payload
        assert meta is not None and payload is not None
        if self.spool is None:
            headers = meta["headers"]
            result, retries = fleet.client.detect(payload, headers["Content-Type"], headers[IDEMPOTENCY_HEADER], headers)
            self.stats.retries += retries
            return Reply(OK, result, "") if result is not None else Reply(REJECTED, None, "not delivered")
        try:
            return fleet.client.post(payload, meta["headers"], meta.get("camera_id", self.camera_id))
        except SilhouetteError as exc:
            self.queue.hold(item)  # kept for a run with a fixed key, --server or pair
            if item.carried and self.spool is not None:
                raise SilhouetteError(f"{exc}; the frame was spooled by an earlier run in {self.spool.folder} "
                                      "(delete that folder to drop its frames)") from None
            raise

    def _settle(self, item: Pending, reply: Reply, cfg: SendConfig) -> None:
        """Count a final answer (delivered, or rejected for good) and forget the frame."""
        meta = item.meta or {}
        if reply.outcome == OK:
            self.stats.sent += 1
            self.stats.bytes_sent += len(item.payload or b"")
            self.stats.people.append(int((reply.result or {}).get("count", 0)))
            self.stats.replayed += int(item.carried)
        else:
            self.stats.failed += 1
            self.stats.failed_frames.append(int(meta.get("index", -1)))
        self.queue.done(item)
        if cfg.on_result is not None:
            cfg.on_result(self.camera_id, int(meta.get("index", -1)), reply.result if reply.outcome == OK else None, item.carried)


class Fleet:
    """Runs every camera until its source ends (or Ctrl+C, SIGTERM, a fatal answer); what is undelivered stays spooled."""

    def __init__(self, cameras: list[Camera], client: EdgeClient, cfg: SendConfig) -> None:
        self.cameras, self.client, self.cfg = cameras, client, cfg
        self.stop = threading.Event()
        self.errors: list[SilhouetteError] = []

    def fail(self, exc: SilhouetteError) -> None:
        """A sender met an error no retry can fix: stop every camera."""
        self.errors.append(exc)
        self.stop.set()

    def run(self) -> list[CameraStats]:
        """Start a capture and a sender thread per camera, wait for them, and return each camera's stats."""
        threads = [
            threading.Thread(target=fn, args=(self,), name=f"silhouette-edge-{cam.camera_id}-{role}", daemon=True)
            for cam in self.cameras for role, fn in (("capture", cam.capture), ("send", cam.send))
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short joins: Ctrl+C and SIGTERM are delivered to this (the main) thread
        except BaseException:
            self.stop.set()
            for t in threads:
                t.join(self.client.timeout + 5)  # a sender may be inside one POST
            raise
        finally:
            for cam in self.cameras:
                cam.queue.finish()
                cam.stats.seconds = time.perf_counter() - t0
        if self.errors:
            raise self.errors[0]
        return [cam.stats for cam in self.cameras]
