"""Where obfuscated frames go: an image folder, a single image, or a video, each written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from silhouette.errors import SilhouetteError
from silhouette.imaging import encode_frame

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


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
        data = encode_frame(image, fmt, self.quality)
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


def default_output(source: Any, fmt: str) -> Path:
    """Where outputs go when --out is not given: <name>_obfuscated[.ext] in the working directory."""
    if source.kind == "images" and source.count() == 1 and not Path(source.spec).is_dir():
        return Path(f"{source.name}_obfuscated.{fmt}")
    if source.kind == "video":
        return Path(f"{source.name}_obfuscated.mp4")
    return Path(f"{source.name}_obfuscated")


def make_sink(out: Path, source: Any, fmt: str, quality: int, codec: str, every: int) -> ImageSink | VideoSink:
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


def frame_name(source: Any, index: int) -> str:
    """Output name of frame `index`: the source file's stem for image folders, else frame_000123."""
    files = getattr(source, "files", None)
    if files is not None and index < len(files):
        return Path(files[index]).stem
    return f"frame_{index:06d}"
