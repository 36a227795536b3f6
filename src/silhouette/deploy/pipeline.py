"""Edge-side obfuscation: load the obfuscator (torch or ONNX Runtime) and run it on frames from any source."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from silhouette.errors import SilhouetteError
from silhouette.fileio import Terminated
from silhouette.paths import DEFAULT_CHECKPOINT

DEFAULT_SIZE = (320, 200)  # (W, H): the paper's frame size
BACKENDS = ("onnx", "onnx-int8", "torch")
IMAGE_FORMATS = ("png", "jpg")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
ENV_CACHE = "SILHOUETTE_CACHE"


class Runner(Protocol):
    """Maps a float32 [B,3,H,W] RGB batch in [0,1] to the obfuscated batch (same shape, float32)."""

    backend: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def cache_dir() -> Path:
    """Where exported ONNX files are cached: $SILHOUETTE_CACHE, else ~/.cache/silhouette."""
    env = os.environ.get(ENV_CACHE)
    base = Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "silhouette"
    return base / "onnx"


def resolve_checkpoint(checkpoint: str | os.PathLike[str] | None) -> Path:
    """The checkpoint path to use (the shipped default when None), with a clear error if it is missing."""
    if checkpoint is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise SilhouetteError(
                f"no default obfuscator shipped at {DEFAULT_CHECKPOINT}; train one ('silhouette train') and pass --checkpoint PATH"
            )
        return DEFAULT_CHECKPOINT
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SilhouetteError(f"--checkpoint {path}: file not found")
    return path


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (cache key for exports)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_torch_obfuscator(checkpoint: Path):  # noqa: ANN201 - nn.Module
    """The obfuscator module of a checkpoint, in eval mode on the CPU."""
    try:
        from silhouette.models import load_obfuscator
    except ImportError as exc:  # the models package is built by another part of the project
        raise SilhouetteError(f"silhouette.models.load_obfuscator is not available in this build ({exc})") from exc
    return load_obfuscator(str(checkpoint), device="cpu").eval()


def cached_onnx(checkpoint: str | os.PathLike[str] | None, int8: bool = False) -> Path:
    """ONNX export of a checkpoint (fp32, or static int8), exported once and cached by content hash."""
    ckpt = resolve_checkpoint(checkpoint)
    if ckpt.suffix.lower() == ".onnx":
        if int8:
            raise SilhouetteError(f"--checkpoint {ckpt} is already an ONNX file; quantise it with 'silhouette export --int8'")
        return ckpt
    from silhouette.deploy.export import export_onnx, quantize_int8

    digest = file_digest(ckpt)
    fp32 = cache_dir() / f"{ckpt.stem}-{digest}.onnx"
    if not fp32.is_file():
        export_onnx(load_torch_obfuscator(ckpt), fp32)
    if not int8:
        return fp32
    q = cache_dir() / f"{ckpt.stem}-{digest}-int8.onnx"
    if not q.is_file():
        quantize_int8(fp32, q)
    return q


class TorchRunner:
    """Runs the obfuscator with PyTorch (reference backend)."""

    backend = "torch"

    def __init__(self, model, threads: int | None = None) -> None:  # noqa: ANN001 - nn.Module
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


class OnnxRunner:
    """Runs an exported obfuscator with ONNX Runtime (the fast edge path)."""

    def __init__(
        self, path: str | os.PathLike[str], threads: int | None = None, backend: str = "onnx", spinning: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        if spinning is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt/unsupported files
            raise SilhouetteError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)
        self.backend = backend

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_runner(checkpoint: str | os.PathLike[str] | None = None, backend: str = "onnx", threads: int | None = None) -> Runner:
    """An obfuscator runner for `backend` (onnx, onnx-int8 or torch); ONNX files are exported once and cached."""
    if backend not in BACKENDS:
        raise SilhouetteError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if backend == "torch":
        ckpt = resolve_checkpoint(checkpoint)
        if ckpt.suffix.lower() == ".onnx":
            raise SilhouetteError(f"--checkpoint {ckpt} is an ONNX file; use --backend onnx")
        return TorchRunner(load_torch_obfuscator(ckpt), threads)
    # no spinning: ORT's idle pool threads would otherwise busy-wait on the cores the decode/encode threads need
    return OnnxRunner(cached_onnx(checkpoint, int8=backend == "onnx-int8"), threads, backend, spinning=False)


def resize_bgr(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 BGR frame to size=(W, H) with INTER_AREA (the dataset recipe)."""
    from silhouette.data.sources import resize_frame

    return resize_frame(image, size)


def bgr_batch(images: list[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 BGR frames (same size) -> float32 [B,3,H,W] RGB in [0,1]."""
    return np.stack([bgr_to_chw(im) for im in images])


def bgr_to_chw(image: np.ndarray) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> float32 [3,H,W] RGB in [0,1] (the pipeline's reader converts frame by frame)."""
    arr = image[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def batch_to_bgr(batch: np.ndarray) -> list[np.ndarray]:
    """float [B,3,H,W] RGB in [0,1] -> HxWx3 uint8 BGR frames, rounded to nearest (as imaging.tensor_to_bgr)."""
    u8 = np.clip(np.rint(np.clip(batch, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(x.transpose(1, 2, 0)[..., ::-1]) for x in u8]


class EdgeObfuscator:
    """Resize a camera frame to the model size and obfuscate it; what the camera sends is only this output."""

    def __init__(self, runner: Runner, size: tuple[int, int] = DEFAULT_SIZE) -> None:
        self.runner = runner
        self.size = size
        self.model_seconds = 0.0
        self.frames = 0

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The frame at model size (uint8 BGR): the input of the obfuscator."""
        return resize_bgr(image, self.size)

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


def encode_image(image: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode an HxWx3 BGR frame as JPEG (quality 1-100) or PNG (lossless)."""
    import cv2

    fmt = fmt.lower().lstrip(".")
    if fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", image)
    else:
        raise SilhouetteError(f"--format {fmt!r}: choose png or jpg")
    if not ok:
        raise SilhouetteError(f"could not encode a {image.shape} frame as {fmt}")
    return buf.tobytes()


def check_quality(quality: int) -> int:
    """Validate a JPEG quality."""
    if not 1 <= int(quality) <= 100:
        raise SilhouetteError(f"--quality {quality}: must be between 1 and 100")
    return int(quality)


class ImageSink:
    """Writes frames as numbered (or source-named) image files into a folder, each atomically."""

    def __init__(self, folder: Path, fmt: str = "png", quality: int = 95, single: Path | None = None) -> None:
        self.folder = folder
        self.fmt = "jpg" if fmt.lower() in ("jpg", "jpeg") else fmt.lower()
        self.quality = quality
        self.single = single  # one output file instead of a folder
        self.written: list[Path] = []
        self.created = single is None and not folder.exists()  # a folder made by this run goes with its failure

    def write(self, image: np.ndarray, name: str) -> None:
        from silhouette.fileio import atomic_path

        path = self.single if self.single is not None else self.folder / f"{name}.{self.fmt}"
        fmt = path.suffix.lower().lstrip(".")
        data = encode_image(image, fmt, self.quality)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        self.written.append(path)

    def close(self, ok: bool) -> None:
        """Keep the images (ok), or delete those this run wrote: a failed run leaves no half output."""
        if ok:
            return
        for path in self.written:
            path.unlink(missing_ok=True)
        if self.created:
            try:
                self.folder.rmdir()  # only if empty
            except OSError:
                pass


class VideoSink:
    """Writes frames into a video through a temporary file that is renamed only when complete."""

    def __init__(self, path: Path, fps: float, codec: str = "mp4v") -> None:
        if len(codec) != 4:
            raise SilhouetteError(f"--codec {codec!r}: expected a four-character code such as mp4v, XVID, MJPG, avc1")
        self.path = path
        self.fps = fps
        self.codec = codec
        self.writer = None
        self.tmp: Path | None = None
        self.count = 0

    def write(self, image: np.ndarray, name: str) -> None:
        import cv2

        if self.writer is None:
            from silhouette.fileio import new_temp

            # same naming, permissions (0666 & ~umask) and SIGTERM/stale-file cleanup as every other output
            self.tmp = new_temp(self.path)
            h, w = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.codec), float(self.fps), (w, h))
            if not self.writer.isOpened():
                self.close(False)
                raise SilhouetteError(f"{self.path}: OpenCV cannot write codec {self.codec!r} into {self.path.suffix}; try --codec mp4v or MJPG")
        self.writer.write(image)
        self.count += 1

    def close(self, ok: bool) -> None:
        """Finish the file and rename it into place (ok) or delete the partial file."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None:
            if ok and self.count and self.tmp.exists():
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        self.tmp = None


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


def default_output(source, fmt: str) -> Path:  # noqa: ANN001 - silhouette.data.sources.Source
    """Where outputs go when --out is not given: <name>_obfuscated[.ext] in the working directory."""
    if source.kind == "images" and source.count() == 1 and not Path(source.spec).is_dir():
        return Path(f"{source.name}_obfuscated.{fmt}")
    if source.kind == "video":
        return Path(f"{source.name}_obfuscated.mp4")
    return Path(f"{source.name}_obfuscated")


def make_sink(out: Path, source, fmt: str, quality: int, codec: str, every: int) -> ImageSink | VideoSink:  # noqa: ANN001
    """An image folder, single image or video sink chosen by the suffix of `out`."""
    suffix = out.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        fps = None
        if hasattr(source, "fps"):
            fps = source.fps()
        fps = (fps or getattr(source, "nominal_fps", None) or 10.0) / max(1, every)
        return VideoSink(out, fps, codec)
    if suffix == ".gif":
        raise SilhouetteError(f"--out {out}: GIF output is not supported; write .mp4/.avi or an image folder")
    if suffix in IMAGE_SUFFIXES:
        if source.count() != 1:
            raise SilhouetteError(f"--out {out}: an image file holds one frame but the input has several; give a folder or a video path")
        return ImageSink(out.parent, suffix.lstrip("."), quality, single=out)
    if out.exists() and not out.is_dir():
        raise SilhouetteError(f"--out {out}: exists and is not a folder")
    return ImageSink(out, fmt, quality)


def frame_name(source, index: int) -> str:  # noqa: ANN001
    """Output name of frame `index`: the source file's stem for image folders, else frame_000123."""
    files = getattr(source, "files", None)
    if files is not None and index < len(files):
        return Path(files[index]).stem
    return f"frame_{index:06d}"


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

    def __init__(self, src, sink: ImageSink | VideoSink, edge: EdgeObfuscator, report: ObfuscateReport,  # noqa: ANN001
                 every: int, max_frames: int | None, batch: int, on_frame: Callable[[int, np.ndarray], None] | None,
                 bar) -> None:  # noqa: ANN001 - tqdm
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
