"""The camera's obfuscate pipeline: resize frames to the model size, obfuscate them, write images or a video."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from silhouette.edge.runtime import Runner
from silhouette.edge.sinks import ImageSink, VideoSink, default_output, frame_name, make_sink
from silhouette.errors import SilhouetteError
from silhouette.fileio import Terminated
from silhouette.imaging import DEFAULT_SIZE, batch_to_bgr, bgr_batch, bgr_to_chw, resize_frame
from silhouette.wire import FRAME_FORMATS

IMAGE_FORMATS = FRAME_FORMATS


class EdgeObfuscator:
    """Resize a camera frame to the model size and obfuscate it; what the camera sends is only this output."""

    def __init__(self, runner: Runner, size: tuple[int, int] = DEFAULT_SIZE) -> None:
        self.runner = runner
        self.size = size
        self.model_seconds = 0.0
        self.frames = 0

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The frame at model size (uint8 BGR): the input of the obfuscator."""
        return resize_frame(image, self.size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Obfuscated frame at model size, HxWx3 uint8 BGR."""
        return self.obfuscate_many([image])[0]

    def obfuscate_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Obfuscate several frames in one batch."""
        return batch_to_bgr(self.run(bgr_batch([self.prepare(im) for im in images])))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The runner on a float32 [B,3,H,W] batch; only this call counts towards `model_seconds`."""
        t0 = time.perf_counter()
        out = self.runner(batch)
        self.model_seconds += time.perf_counter() - t0
        self.frames += len(batch)
        return out


def check_quality(quality: int) -> int:
    """Validate a JPEG quality."""
    if not 1 <= int(quality) <= 100:
        raise SilhouetteError(f"--quality {quality}: must be between 1 and 100")
    return int(quality)


@dataclass
class ObfuscateReport:
    """What `obfuscate_source` did."""

    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    out: Path | None = None
    backend: str = ""
    outputs: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """End-to-end frames per second (decode, resize, obfuscate, encode, write)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        """Frames per second of the obfuscator alone."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0


DEFAULT_BATCH = 4  # frames per runner call for files/folders/videos
LIVE_SOURCES = ("webcam", "stream")
_DONE = object()  # end-of-stream marker on the pipeline queues
_POLL_S = 0.1  # how often a blocked queue operation checks whether the other side gave up


class _Failure:
    """An exception raised in the reader thread, carried to the main thread in frame order."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def check_batch(batch: int | None, live: bool) -> int:
    """Validate --batch; None means 1 for live sources (latency) and DEFAULT_BATCH otherwise."""
    if batch is None:
        return 1 if live else DEFAULT_BATCH
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise SilhouetteError(f"--batch {batch!r}: must be a whole number >= 1")
    return int(batch)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (cv2.error messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _put(q: queue.Queue, item: object, cancel: threading.Event) -> bool:
    """Put `item`, waiting for room unless `cancel` is set (then False): a dead consumer never hangs the producer."""
    while not cancel.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, cancel: threading.Event) -> object:
    """Next item, or _DONE once `cancel` is set: a dead producer never hangs the consumer."""
    while not cancel.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _DONE


class _Pipeline:
    """The three overlapping stages of `obfuscate_source`: reader thread, runner (calling thread), writer thread."""

    def __init__(self, src: Any, sink: ImageSink | VideoSink, edge: EdgeObfuscator, report: ObfuscateReport,
                 every: int, max_frames: int | None, batch: int, on_frame: Callable[[int, np.ndarray], None] | None,
                 bar: Any) -> None:
        self.src, self.sink, self.edge, self.report, self.bar = src, sink, edge, report, bar
        self.every, self.max_frames, self.batch, self.on_frame = every, max_frames, batch, on_frame
        # bounded queues: a few batches of look-ahead, so memory stays flat on endless live streams
        self.frames_q: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
        self.out_q: queue.Queue = queue.Queue(maxsize=2)
        self.stop_reading = threading.Event()  # set when the main thread wants no more frames
        self.abort = threading.Event()  # set on any failure: every stage gives up, nothing more is written
        self.writer_error: list[BaseException] = []
        self.t0 = time.perf_counter()

    def read(self) -> None:
        """Reader thread: decode, sample, resize and convert frames into `frames_q`; failures travel in order."""
        from silhouette.data.sources import sample_frames

        decoded = iter(self.src)
        frames = sample_frames(decoded, every=self.every)
        try:
            n = 0
            for frame in frames:
                if self.stop_reading.is_set() or (self.max_frames is not None and n >= self.max_frames):
                    break
                # resize and float conversion here, off the runner's thread (both release the GIL for most of their work)
                if not _put(self.frames_q, (frame.index, bgr_to_chw(self.edge.prepare(frame.image))), self.stop_reading):
                    return
                n += 1
            _put(self.frames_q, _DONE, self.stop_reading)
        except BaseException as exc:  # noqa: BLE001 - carried to the main thread and re-raised there
            _put(self.frames_q, _Failure(exc), self.stop_reading)
        finally:
            frames.close()  # release the capture now, not whenever the generators are collected
            if hasattr(decoded, "close"):
                decoded.close()

    def write(self) -> None:
        """Writer thread: encode and write obfuscated frames in order (and call `on_frame`) until _DONE or abort."""
        try:
            while True:
                item = _get(self.out_q, self.abort)
                if item is _DONE:
                    return
                indices, out_batch = item
                for index, image in zip(indices, batch_to_bgr(out_batch)):
                    if self.abort.is_set():
                        return
                    self._write_one(index, image)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.writer_error.append(exc)
            self.abort.set()

    def _write_one(self, index: int, image: np.ndarray) -> None:
        try:
            self.sink.write(image, frame_name(self.src, index))
        except SilhouetteError:
            raise
        except Exception as exc:  # OSError, cv2.error: name the output, on one line
            raise SilhouetteError(f"{self.report.out}: cannot write the output ({_one_line(exc)})") from exc
        if self.on_frame is not None:
            self.on_frame(index, image)
        self.report.frames += 1
        self.bar.update(1)
        if self.report.frames % 10 == 0:
            self.bar.set_postfix(fps=f"{self.report.frames / (time.perf_counter() - self.t0):.1f}")

    def run(self) -> None:
        """Main thread: obfuscate batches of up to `batch` frames until the reader is done or a stage failed."""
        done = False
        while not done and not self.abort.is_set():
            chunk: list[tuple[int, np.ndarray]] = []
            while len(chunk) < self.batch:
                item = _get(self.frames_q, self.abort)
                if item is _DONE:
                    done = True
                    break
                if isinstance(item, _Failure):
                    if isinstance(item.exc, SilhouetteError):
                        raise item.exc
                    raise SilhouetteError(f"{self.src.spec}: cannot read frames ({_one_line(item.exc)})") from item.exc
                chunk.append(item)
            if chunk:
                out_batch = self.edge.run(np.stack([x for _, x in chunk]))
                _put(self.out_q, ([i for i, _ in chunk], out_batch), self.abort)

    def finish(self, writer: threading.Thread) -> None:
        """Stop reading, let the writer drain what is queued, and surface its error."""
        self.stop_reading.set()
        _put(self.out_q, _DONE, self.abort)
        writer.join()
        if self.writer_error:
            raise self.writer_error[0]

    def execute(self, live: bool) -> Terminated | None:
        """Run all three stages; keep the output only if every stage succeeded. Returns a SIGTERM that ended a live run."""
        reader = threading.Thread(target=self.read, name="silhouette-obfuscate-reader", daemon=True)
        writer = threading.Thread(target=self.write, name="silhouette-obfuscate-writer", daemon=True)
        ok = False
        terminated: Terminated | None = None
        try:
            reader.start()
            writer.start()
            try:
                self.run()
            except (KeyboardInterrupt, Terminated) as exc:
                if not live:
                    raise
                # a live stream only ends when the user (Ctrl+C) or a service manager (SIGTERM) stops it: keep what
                # was written (and what is queued to be); SIGTERM still ends the process with 143 afterwards
                terminated = exc if isinstance(exc, Terminated) else None
            self.finish(writer)
            ok = self.report.frames > 0
            if not ok:
                raise SilhouetteError(f"{self.src.spec}: no frames decoded")
        finally:
            self.stop_reading.set()
            if not ok:
                self.abort.set()
            # a live capture may sit in a blocking read for up to a frame interval; never wait forever on it
            reader.join(timeout=5.0)
            writer.join(timeout=5.0)
            self.bar.close()
            self.sink.close(ok)
        return terminated


def obfuscate_source(
    source: str | int | os.PathLike[str],
    runner: Runner,
    out: Path | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: str = "png",
    quality: int = 95,
    codec: str = "mp4v",
    every: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    batch: int | None = None,
    max_pixels: int | None = None,
    strict: bool = False,
) -> ObfuscateReport:
    """Obfuscate every (every-th) frame of `source` and write images or a video to `out`.

    `max_pixels` (default silhouette.imaging.MAX_PIXELS) refuses larger inputs before decoding; `strict` refuses a
    video file that ends before the frames its container promises (else a warning). A failed run writes nothing.

    Three stages overlap so the runtime never waits on I/O: a reader thread decodes and resizes frames into a
    bounded queue, this thread runs the obfuscator on batches of `batch` frames, and a writer thread encodes and
    writes them (and calls `on_frame`) in frame order. Decoding, resizing, encoding and ONNX Runtime release the GIL.
    """
    from tqdm import tqdm

    from silhouette.data.sources import open_source

    if fmt not in IMAGE_FORMATS:
        raise SilhouetteError(f"--format {fmt!r}: choose png or jpg")
    check_quality(quality)
    src = open_source(source, max_pixels=max_pixels, strict=strict)
    live = src.kind in LIVE_SOURCES
    batch = check_batch(batch, live)
    out = Path(out) if out is not None else default_output(src, fmt)
    sink = make_sink(out, src, fmt, quality, codec, every)
    total = src.count()
    total = None if total is None else (total + every - 1) // every
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    edge = EdgeObfuscator(runner, size)
    report = ObfuscateReport(out=out, backend=runner.backend)
    bar = tqdm(total=total, unit="frame", desc="obfuscate", disable=not progress, leave=False)
    pipe = _Pipeline(src, sink, edge, report, every, max_frames, batch, on_frame, bar)
    terminated = pipe.execute(live)
    if terminated is not None:
        raise terminated
    report.seconds = time.perf_counter() - pipe.t0
    report.model_seconds = edge.model_seconds
    report.outputs = list(sink.written) if isinstance(sink, ImageSink) else [out]
    return report
