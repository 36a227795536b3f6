"""Prometheus metrics of one app instance, and the per-camera rolling person counts."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np

from silhouette.wire import COUNTS_PATH, ENDPOINTS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("silhouette_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("silhouette_errors", "Refused or failed requests by endpoint and reason", ["endpoint", "reason"], registry=self.registry)
        self.latency = Histogram(
            "silhouette_request_latency_seconds", "Request latency by endpoint", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.images = Counter("silhouette_images", "Images run through the detector", registry=self.registry)
        self.people = Counter("silhouette_people_counted", "Persons detected, summed over all images", registry=self.registry)
        self.batches = Histogram(
            "silhouette_detector_batch_size", "Frames per detector call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.replays = Counter(
            "silhouette_idempotent_replays", "Requests answered with the stored result of an earlier one with the same Idempotency-Key",
            registry=self.registry,
        )
        self.decoded_pixels = Gauge("silhouette_decoded_pixels_in_flight", "Decoded image pixels held right now", registry=self.registry)


def endpoint_label(path: str) -> str:
    """Bounded-cardinality endpoint label for metrics (camera ids and unknown paths are folded)."""
    if path in ENDPOINTS:
        return path
    return COUNTS_PATH if path.startswith(COUNTS_PATH + "/") else "other"


class RollingCounts:
    """Per-camera person counts of the last `window` frames; at most `max_cameras` cameras (least recently seen evicted)."""

    def __init__(self, window: int = 600, max_cameras: int = 1024) -> None:
        self.window = window
        self.max_cameras = max_cameras
        self._data: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, camera_id: str, count: int) -> None:
        """Record one frame's person count."""
        with self._lock:
            buf = self._data.get(camera_id)
            if buf is None:
                buf = self._data[camera_id] = deque(maxlen=self.window)
                while len(self._data) > self.max_cameras:
                    self._data.popitem(last=False)
            self._data.move_to_end(camera_id)
            buf.append((time.time(), int(count)))

    def summary(self, camera_id: str) -> dict[str, Any] | None:
        """Frames, last/mean/max count and time span over the window, or None for an unknown camera."""
        with self._lock:
            buf = self._data.get(camera_id)
            if not buf:
                return None
            rows = list(buf)
        counts = [n for _, n in rows]
        return {
            "camera_id": camera_id, "frames": len(rows), "window": self.window, "last": counts[-1],
            "mean": float(np.mean(counts)), "max": int(max(counts)), "since": rows[0][0], "until": rows[-1][0],
        }

    def __len__(self) -> int:
        return len(self._data)
