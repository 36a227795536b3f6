"""What the service's dashboard shows: counts and history from the count store, the latest obfuscated frames from RAM.

The frames are the uploads themselves (obfuscated on the camera) and are never written anywhere: each worker process
keeps the last one of each camera it received, bounded in cameras and bytes, so with `--workers N` a worker's
dashboard shows the frames that worker answered, while counts and history (from the database) are the same on all.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from silhouette.serve.storage import CountStore

Box = list[float]
MAX_FRAME_BYTES_TOTAL = 256 * 1024 * 1024  # all kept frames of one worker together
HISTORY_POINTS = 600  # about one point per chart pixel: a long window is read as buckets, not as every frame


def image_type(data: bytes) -> str | None:
    """The content type the dashboard may show `data` as (PNG, JPEG or WebP, from its signature), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None  # e.g. BMP: counted, but not shown


class LatestFrames:
    """The last obfuscated frame of each camera with its boxes, in RAM only; least recently updated evicted first."""

    def __init__(self, max_cameras: int = 1024, max_bytes: int = MAX_FRAME_BYTES_TOTAL) -> None:
        self.max_cameras = max_cameras
        self.max_bytes = max_bytes
        self._frames: OrderedDict[str, tuple[bytes, str, list[Box]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, camera: str, data: bytes, boxes: list[Box]) -> None:
        """Replace `camera`'s frame (a type the page cannot show, or one over the whole budget, is not kept)."""
        kind = image_type(data)
        if kind is None or len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._frames.pop(camera, None)
            self._bytes -= len(old[0]) if old else 0
            self._frames[camera] = (bytes(data), kind, boxes)
            self._bytes += len(data)
            while len(self._frames) > self.max_cameras or self._bytes > self.max_bytes:
                _, (dropped, _, _) = self._frames.popitem(last=False)
                self._bytes -= len(dropped)

    def get(self, camera: str) -> tuple[bytes, str, list[Box]] | None:
        """(image, content type, boxes) of `camera`, or None."""
        with self._lock:
            return self._frames.get(camera)

    def usage(self) -> tuple[int, int]:
        """(frames, bytes) held."""
        with self._lock:
            return len(self._frames), self._bytes


class StoreSource:
    """The dashboard's DashboardSource in the service: the count store, this worker's frames and health."""

    def __init__(self, store: CountStore, frames: LatestFrames, health: Callable[[], dict[str, Any]]) -> None:
        self.store = store
        self.frames = frames
        self.app_health = health

    def cameras(self) -> list[dict[str, Any]]:
        """Every camera in the database (last_count None once its detections were all pruned)."""
        return [{"id": c.id, "last_seen": c.last_seen, "frames": c.frames, "last_count": c.last_count}
                for c in self.store.cameras()]

    def history(self, camera: str, seconds: float) -> list[tuple[float, int]]:
        """(bucket start, latest count in it) over the last `seconds`, at most about HISTORY_POINTS points."""
        bucket = max(1.0, float(seconds) / HISTORY_POINTS)
        return [(b.start, b.last) for b in self.store.counts(camera, time.time() - float(seconds), None, bucket)]

    def latest_frame(self, camera: str) -> tuple[bytes, str, list[Box]] | None:
        """The last frame of `camera` this worker received."""
        return self.frames.get(camera)

    def health(self) -> dict[str, Any]:
        """The service's health, the database and what this worker holds in RAM."""
        frames, size = self.frames.usage()
        return {**self.app_health(), "database": self.store.url, "frames_in_memory": frames,
                "frame_bytes_in_memory": size, "frames_from": f"worker {os.getpid()} only"}
