"""Prometheus metrics of one app instance (per worker process; the counts themselves live in the count store)."""

from __future__ import annotations

from silhouette.wire import COUNTS_PATH, ENDPOINTS

CAMERAS_PATH = "/v1/cameras"  # serve-only (the camera never calls it), so it is not in wire

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
    if path in ENDPOINTS or path == CAMERAS_PATH:
        return path
    return COUNTS_PATH if path.startswith(COUNTS_PATH + "/") else "other"
