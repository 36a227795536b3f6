"""The camera side of the split: obfuscate locally, send only the obfuscated frame, survive server outages."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from silhouette.errors import SilhouetteError

log = logging.getLogger("silhouette.edge")


@dataclass
class EdgeStats:
    """What the client did: frames, failures, retries and bytes (sent vs the original frame encoded the same way)."""

    frames: int = 0
    sent: int = 0
    failed: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_original: int = 0  # original full-resolution frame, same format/quality
    bytes_original_resized: int = 0  # original frame at model size, same format/quality
    people: list[int] = field(default_factory=list)
    failed_frames: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Totals and per-frame averages for printing or JSON."""
        n = max(1, self.frames)
        return {
            "frames": self.frames, "sent": self.sent, "failed": self.failed, "retries": self.retries,
            "failed_frames": self.failed_frames, "people_total": int(sum(self.people)),
            "bytes_per_frame_sent": self.bytes_sent / max(1, self.sent),
            "bytes_per_frame_original": self.bytes_original / n,
            "bytes_per_frame_original_at_model_size": self.bytes_original_resized / n,
            "seconds": round(self.seconds, 3), "fps": self.frames / self.seconds if self.seconds > 0 else 0.0,
        }


class EdgeClient:
    """Posts encoded (obfuscated) frames to the service with bounded exponential-backoff retries."""

    def __init__(
        self,
        server: str,
        api_key: str | None = None,
        camera_id: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        if max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise SilhouetteError("--retries, --backoff and --max-backoff must be >= 0")
        self.url = server.rstrip("/") + "/v1/detect"
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.params = {"camera_id": camera_id} if camera_id else {}
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.client = httpx.Client(timeout=timeout)

    def delay(self, attempt: int) -> float:
        """Backoff before retry `attempt` (0-based): backoff * 2**attempt, capped at max_backoff."""
        return min(self.max_backoff, self.backoff * (2**attempt))

    def detect(self, payload: bytes, content_type: str) -> tuple[dict[str, Any] | None, int]:
        """POST one encoded frame; returns (result or None after exhausting retries, retries used)."""
        import httpx

        headers = {**self.headers, "Content-Type": content_type}
        for attempt in range(self.max_retries + 1):
            try:
                r = self.client.post(self.url, content=payload, headers=headers, params=self.params)
            except httpx.TransportError as exc:  # refused, reset, timed out: the server may be restarting
                reason = f"{type(exc).__name__}"
            else:
                if r.status_code == 200:
                    return r.json(), attempt
                if r.status_code == 401:
                    raise SilhouetteError(f"{self.url}: the server refused the API key (401); check --api-key-file / $SILHOUETTE_API_KEY")
                if r.status_code < 500 and r.status_code != 429:
                    log.warning("server rejected the frame: %s %s", r.status_code, r.text[:200])
                    return None, attempt  # retrying the same bytes cannot help
                reason = f"HTTP {r.status_code}"
            if attempt < self.max_retries:
                wait = self.delay(attempt)
                log.debug("attempt %d failed (%s); retrying in %.2fs", attempt + 1, reason, wait)
                self.sleep(wait)
        log.warning("giving up on a frame after %d attempts (%s)", self.max_retries + 1, reason)
        return None, self.max_retries

    def close(self) -> None:
        self.client.close()


def run_edge(
    frames: Iterable[tuple[int, np.ndarray]],
    obfuscator: Callable[[np.ndarray], np.ndarray],
    client: EdgeClient,
    fmt: str = "jpg",
    quality: int = 90,
    size: tuple[int, int] | None = None,
    on_result: Callable[[int, dict[str, Any] | None, EdgeStats], None] | None = None,
) -> EdgeStats:
    """Obfuscate each (index, BGR frame), send only the obfuscated encoding, count persons and bytes."""
    from silhouette.deploy.pipeline import encode_image, resize_bgr

    content_type = "image/png" if fmt == "png" else "image/jpeg"
    stats = EdgeStats()
    t0 = time.perf_counter()
    for index, image in frames:
        obf = obfuscator(image)
        payload = encode_image(obf, fmt, quality)
        # measured, never sent: what the original frame would have cost on the wire
        stats.bytes_original += len(encode_image(image, fmt, quality))
        if size is not None:
            stats.bytes_original_resized += len(encode_image(resize_bgr(image, size), fmt, quality))
        del image  # nothing below this line can touch the original frame
        result, retries = client.detect(payload, content_type)
        stats.frames += 1
        stats.retries += retries
        if result is None:
            stats.failed += 1
            stats.failed_frames.append(index)
        else:
            stats.sent += 1
            stats.bytes_sent += len(payload)
            stats.people.append(int(result["count"]))
        if on_result is not None:
            on_result(index, result, stats)
    stats.seconds = time.perf_counter() - t0
    return stats
