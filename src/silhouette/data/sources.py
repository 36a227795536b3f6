"""Frame sources: video files, GIFs, image folders, single images, webcams and network streams.

Every source is decoded with OpenCV so that frame k is exactly the k-th `cv2.VideoCapture.read()`
(the convention the golden PETS frames were made with).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from silhouette.errors import SilhouetteError
from silhouette.imaging import as_bgr, check_pixels, decode_image_file, image_size, pixel_limit, resize_frame

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".gif", ".ts"}
URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
# Image folders have no clock; their frames are spaced by this nominal rate unless told otherwise.
DEFAULT_FOLDER_FPS = 1.0
# FFmpeg (inside OpenCV) prints a line per damaged packet; a truncated file would bury the one-line summary this
# module reports (see CaptureSource.check_complete). Set OPENCV_FFMPEG_LOGLEVEL=24 to see FFmpeg's warnings again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

log = logging.getLogger("silhouette.data")


@dataclass
class Frame:
    """One decoded frame: source index, timestamp in seconds, HxWx3 uint8 BGR image."""

    index: int
    timestamp: float
    image: np.ndarray


def natural_key(name: str) -> list[object]:
    """Sort key treating digit runs as numbers, so frame2 < frame10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, naturally sorted."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS), key=lambda p: natural_key(p.name))


def list_videos(folder: Path) -> list[Path]:
    """Video/GIF files directly inside `folder`, naturally sorted."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS), key=lambda p: natural_key(p.name))


def safe_name(text: str) -> str:
    """A camera/file-name-safe version of `text` (letters, digits, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "camera"


@dataclass(frozen=True)
class VideoHeader:
    """What a video file's container says before any frame is decoded."""

    width: int
    height: int
    frames: int | None  # frames promised: the stream's frame count, else duration x frame rate, else None
    exact: bool  # True when `frames` is the stream's own count, not an estimate from the duration


def video_header(path: str) -> VideoHeader | None:
    """Frame size and promised frame count of a video file's first video stream (PyAV); None if it cannot tell."""
    try:
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            if stream.frames and stream.frames > 0:
                return VideoHeader(width, height, int(stream.frames), True)
            rate, duration = stream.average_rate, container.duration  # duration in microseconds
            frames = int(round(duration / 1e6 * float(rate))) if rate and duration and duration > 0 else None
            return VideoHeader(width, height, frames or None, False)
    except Exception:  # noqa: BLE001 - not a container PyAV reads: OpenCV's own probe reports the problem
        return None


class Source:
    """An opened frame source; iterate it for `Frame`s (each iteration re-opens it).

    `max_pixels` (None: silhouette.imaging.MAX_PIXELS) refuses larger images and video frames before decoding them;
    `strict` turns a video file that ends before the frames its container promises from a warning into an error.
    """

    kind: str = "source"

    def __init__(self, spec: str, name: str, max_pixels: int | None = None, strict: bool = False) -> None:
        self.spec = spec
        self.name = name  # default camera id
        self.max_pixels = max_pixels
        self.strict = strict

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def count(self) -> int | None:
        """Number of frames when it is cheap to know, else None."""
        return None

    def _checked(self, image: np.ndarray, spec: str) -> np.ndarray:
        """A decoded frame as HxWx3 uint8 BGR, refused if over the pixel limit (live sources have no header)."""
        check_pixels(spec, image.shape[1], image.shape[0], self.max_pixels, kind="video frame")
        return as_bgr(image, spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class CaptureSource(Source):
    """Anything `cv2.VideoCapture` decodes: video files, GIFs, webcams, RTSP/HTTP streams."""

    def __init__(self, spec: str | int, name: str, kind: str, max_pixels: int | None = None, strict: bool = False) -> None:
        super().__init__(str(spec), name, max_pixels, strict)
        self.target = spec
        self.kind = kind
        self._header: VideoHeader | None = None
        self._header_read = False

    def header(self) -> VideoHeader | None:
        """The container header of a video file (read once); None for live sources or when it cannot be read."""
        if self.kind == "video" and not self._header_read:
            self._header = video_header(str(self.target))
            self._header_read = True
        return self._header

    def check_size(self) -> None:
        """Refuse a video file whose frames are over the pixel limit, from its header, before decoding any."""
        header = self.header()
        if header is not None and header.width > 0 and header.height > 0:
            check_pixels(self.spec, header.width, header.height, self.max_pixels, kind="video frame")

    def _open(self):  # noqa: ANN202 - cv2.VideoCapture
        import cv2

        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            what = {"webcam": "open webcam", "stream": "open stream"}.get(self.kind, "decode video file")
            raise SilhouetteError(f"{self.spec}: cannot {what} (unsupported or corrupt, or device/URL unreachable)")
        return cap

    def probe(self) -> None:
        """Fail now with a clear error if the frames are too large or the first one cannot be decoded."""
        self.check_size()
        cap = self._open()
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok or frame is None:
            raise SilhouetteError(f"{self.spec}: opened but no frame could be decoded (corrupt or empty file?)")

    def fps(self) -> float | None:
        """Nominal frame rate reported by the container, if any."""
        import cv2

        cap = self._open()
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
        finally:
            cap.release()
        return fps if fps > 0 and np.isfinite(fps) else None

    def count(self) -> int | None:
        import cv2

        if self.kind not in ("video",):
            return None  # live streams have no length
        cap = self._open()
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        return n if n > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        self.check_size()
        cap = self._open()
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        index = 0
        try:
            last_ts = -1.0
            while True:
                ok, image = cap.read()
                if not ok or image is None:
                    break
                ts = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                # Live devices often report no position; fall back to the nominal rate, then the wall index.
                if not np.isfinite(ts) or (ts <= last_ts and index > 0):
                    ts = index / fps if fps > 0 else float(index)
                last_ts = ts
                yield Frame(index, ts, self._checked(image, self.spec))
                index += 1
        finally:
            cap.release()
        self.check_complete(index)  # only reached when decoding ran to the end, not when the consumer stopped early

    def check_complete(self, decoded: int) -> None:
        """Warn (strict: fail) when a video file ended before the frames its container promises (truncated file)."""
        header = self.header()
        if header is None or header.frames is None:
            return
        slack = 0 if header.exact else max(1, round(0.02 * header.frames))  # duration x rate is only an estimate
        if decoded >= header.frames - slack:
            return
        what = f"{self.spec}: decoded {decoded} of the {header.frames} frames the container promises (truncated or damaged file?)"
        if self.strict:
            raise SilhouetteError(f"{what}; refused (--strict): repair or re-encode the file")
        log.warning("%s; the output is incomplete (--strict makes this an error)", what)


class ImageListSource(Source):
    """A sorted list of still images played as a clip at a nominal frame rate."""

    kind = "images"

    def __init__(self, spec: str, name: str, files: Sequence[Path], fps: float = DEFAULT_FOLDER_FPS,
                 max_pixels: int | None = None) -> None:
        super().__init__(spec, name, max_pixels)
        self.files = list(files)
        self.nominal_fps = fps

    def count(self) -> int | None:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            # the header is checked against the pixel limit first; the pixels are decoded exactly once, here
            yield Frame(index, index / self.nominal_fps, as_bgr(decode_image_file(path, self.max_pixels), str(path)))


def open_source(
    spec: str | int | Path | Source, folder_fps: float = DEFAULT_FOLDER_FPS, max_pixels: int | None = None,
    strict: bool = False,
) -> Source:
    """Open a video/GIF/image/folder path, webcam index or stream URL; clear error if unusable.

    `max_pixels` and `strict` are set on the source (also on an already opened one, when given).
    """
    pixel_limit(max_pixels)  # validate before touching the input
    if isinstance(spec, Source):
        spec.max_pixels = spec.max_pixels if max_pixels is None else max_pixels
        spec.strict = spec.strict or strict
        return spec
    if isinstance(spec, bool):
        raise SilhouetteError(f"source {spec!r}: expected a path, webcam index or URL")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        return CaptureSource(index, f"webcam{index}", "webcam", max_pixels, strict)
    text = str(spec)
    if URL_RE.match(text):
        name = safe_name(re.sub(URL_RE, "", text).split("?")[0])
        return CaptureSource(text, name, "stream", max_pixels, strict)
    path = Path(text).expanduser()
    if not path.exists():
        raise SilhouetteError(f"{path}: source not found (expected a video, GIF, image, image folder, webcam index or URL)")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise SilhouetteError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        return ImageListSource(str(path), safe_name(path.resolve().name), files, folder_fps, max_pixels)
    if path.suffix.lower() in IMAGE_EXTS:
        image_size(path, max_pixels)  # header only: the image is decoded once, when the source is iterated
        return ImageListSource(str(path), safe_name(path.stem), [path], folder_fps, max_pixels)
    src = CaptureSource(str(path), safe_name(path.stem), "video", max_pixels, strict)
    src.probe()
    return src


def sample_frames(frames: Iterator[Frame], every: int = 1, fps: float | None = None) -> Iterator[Frame]:
    """Keep every `every`-th frame by index, or about `fps` frames per second by timestamp."""
    check_sampling(every, fps)
    if fps is None:
        for frame in frames:
            if frame.index % every == 0:
                yield frame
        return
    # k-th kept frame is the first one at or after k/fps seconds; computed from k to avoid drift
    eps = 1e-6
    next_k = 0
    for frame in frames:
        if frame.timestamp + eps >= next_k / fps:
            yield frame
            next_k = int(np.floor(frame.timestamp * fps + eps)) + 1


def check_sampling(every: int, fps: float | None) -> None:
    """Validate the --every / --fps pair."""
    if fps is not None and every != 1:
        raise SilhouetteError("--every and --fps are exclusive; give one of them")
    if not isinstance(every, int) or every < 1:
        raise SilhouetteError(f"--every must be a whole number >= 1, got {every!r}")
    if fps is not None and not (fps > 0 and np.isfinite(fps)):
        raise SilhouetteError(f"--fps must be a positive number, got {fps!r}")


def iter_frames(source: str | int | Path | Source, every: int = 1, fps: float | None = None) -> Iterator[Frame]:
    """Decode `source` and yield its frames, optionally subsampled (`every` N frames or `fps` per second)."""
    return sample_frames(iter(open_source(source)), every=every, fps=fps)


def count_frames(source: str | int | Path | Source) -> int | None:
    """Total frames of a file/folder source from its header (None for live sources or when unknown)."""
    return open_source(source).count()


FIT_MODES = ("letterbox", "stretch", "crop")
# the grey the zoo detectors pad their own letterboxes with: no edge or colour a detector could take for something
LETTERBOX_FILL = 114


@dataclass(frozen=True)
class Fit:
    """How frames of size `src` (W, H) become `dst`: resized to `scaled`, placed with its top-left at `offset`.

    letterbox: the whole picture, aspect kept, grey bars fill the rest (offset >= 0);
    crop: the picture fills the frame, aspect kept, the overflow is cut evenly (offset <= 0);
    stretch: resized straight to `dst`, the aspect ratio is not kept.
    """

    mode: str
    src: tuple[int, int]
    dst: tuple[int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The HxWx3 BGR `image` (of size src) fitted to dst with INTER_AREA."""
        small = resize_frame(image, self.scaled)
        if self.scaled == self.dst:
            return small
        (W, H), (ox, oy), (w, h) = self.dst, self.offset, self.scaled
        if self.mode == "crop":
            return np.ascontiguousarray(small[-oy:-oy + H, -ox:-ox + W])
        out = np.full((H, W, image.shape[2]), LETTERBOX_FILL, dtype=image.dtype)
        out[oy:oy + h, ox:ox + w] = small
        return out

    def boxes(self, boxes: Sequence[Sequence[float]], ids: Sequence[int],
              ndigits: int = 3) -> tuple[list[list[float]], list[int]]:
        """xyxy boxes (src pixels) moved like the picture, clipped to where it lands; boxes left empty are dropped."""
        sx, sy = self.scaled[0] / self.src[0], self.scaled[1] / self.src[1]
        (ox, oy), (W, H), (w, h) = self.offset, self.dst, self.scaled
        # the visible picture: a box may not reach into the letterbox bars nor past a cropped edge
        lo_x, hi_x = float(max(ox, 0)), float(min(ox + w, W))
        lo_y, hi_y = float(max(oy, 0)), float(min(oy + h, H))
        out_b: list[list[float]] = []
        out_i: list[int] = []
        for (x1, y1, x2, y2), pid in zip(boxes, ids):
            x1, x2 = min(max(x1 * sx + ox, lo_x), hi_x), min(max(x2 * sx + ox, lo_x), hi_x)
            y1, y2 = min(max(y1 * sy + oy, lo_y), hi_y), min(max(y2 * sy + oy, lo_y), hi_y)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                continue  # person entirely outside the kept picture
            out_b.append([round(x1, ndigits), round(y1, ndigits), round(x2, ndigits), round(y2, ndigits)])
            out_i.append(pid)
        return out_b, out_i

    def describe(self) -> str:
        """One line: source size, output size, mode and what it did to the picture."""
        (w, h), (W, H), (nw, nh), (ox, oy) = self.src, self.dst, self.scaled, self.offset
        text = f"{w}x{h} -> {W}x{H} {self.mode}"
        if self.mode == "stretch":
            same = abs(w / h - W / H) < 0.01
            return text + (" (same aspect ratio)" if same else f" (aspect ratio {w / h:.2f} -> {W / H:.2f}, not kept)")
        if (nw, nh) == (W, H):
            return text + " (same aspect ratio)"
        if self.mode == "letterbox":
            bars = f"{ox}+{W - nw - ox} px left+right" if nw < W else f"{oy}+{H - nh - oy} px top+bottom"
            return text + f" (picture {nw}x{nh}, grey bars {bars})"
        cut = f"{nw - W} px of width" if nw > W else f"{nh - H} px of height"
        return text + f" (scaled to {nw}x{nh}, {cut} cut, centred)"


def plan_fit(src: tuple[int, int], dst: tuple[int, int], mode: str = "letterbox") -> Fit:
    """The Fit that maps frames of size `src` (W, H) onto `dst` in `mode` (letterbox, stretch or crop)."""
    if mode not in FIT_MODES:
        raise SilhouetteError(f"--fit {mode!r}: choose {', '.join(FIT_MODES)}")
    (w, h), (W, H) = (int(src[0]), int(src[1])), (int(dst[0]), int(dst[1]))
    if mode == "stretch" or (w, h) == (W, H):
        return Fit(mode, (w, h), (W, H), (W, H), (0, 0))
    scale = min(W / w, H / h) if mode == "letterbox" else max(W / w, H / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # rounding must not push the picture past the frame (letterbox) nor leave it short of it (crop)
    nw, nh = (min(nw, W), min(nh, H)) if mode == "letterbox" else (max(nw, W), max(nh, H))
    return Fit(mode, (w, h), (W, H), (nw, nh), ((W - nw) // 2, (H - nh) // 2))


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """Parse 'WxH' (e.g. 320x200) into (W, H)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not m:
        raise SilhouetteError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. 320x200")
    w, h = int(m.group(1)), int(m.group(2))
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise SilhouetteError(f"{option} {text!r}: width and height must be between 8 and 8192 pixels")
    return w, h
