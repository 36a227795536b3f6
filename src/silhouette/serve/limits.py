"""The service's limits: request, memory and socket budgets with their defaults, validated in one line each."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from silhouette.errors import SilhouetteError
from silhouette.imaging import MAX_PIXELS

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = MAX_PIXELS  # alias of silhouette.imaging.MAX_PIXELS, kept for code that imported it from here
REQUEST_PIXELS_PER_MAX = 4  # default --max-request-pixels: 4 x --max-pixels, header-declared pixels of one request
DEFAULT_MAX_REQUEST_PIXELS = REQUEST_PIXELS_PER_MAX * MAX_PIXELS
# default --max-decoded-pixels: --max-pixels, one largest image at a time; through YOLOX-Nano's float interface a
# pixel costs ~40 bytes at its peak (measured: +0.7 GB for one 4096x4096 image), so this bounds detection memory
DEFAULT_MAX_DECODED_PIXELS = MAX_PIXELS
DEFAULT_MAX_CONCURRENCY = 32  # /v1 requests in progress per worker; each may hold a body of up to --max-bytes
DEFAULT_IDEMPOTENCY_CACHE = 10_000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE = 5.0
DEFAULT_MAX_CONNECTIONS = 1000


def _require_positive(name: str, value: Any, integer: bool) -> None:
    """One-line SilhouetteError naming the CLI option unless `value` is a positive finite number (a whole one if `integer`)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (integer and not isinstance(value, int)) or not math.isfinite(value) or value <= 0:
        kind = "a whole number >= 1" if integer else "a positive number of seconds"
        raise SilhouetteError(f"--{name.replace('_', '-')} {value!r}: must be {kind}")


@dataclass(frozen=True)
class ConnectionLimits:
    """Socket-level limits of one server, applied by GuardedH11Protocol below the ASGI app."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # request line + headers must be complete within this, however they trickle
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # the whole body must arrive within this after the headers
    keep_alive: float = DEFAULT_KEEP_ALIVE  # idle time allowed between requests on one connection
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open client sockets per worker (lowered to fit ulimit -n)

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            _require_positive(name, getattr(self, name), integer=False)
        _require_positive("max_connections", self.max_connections, integer=True)


def resolve_app_limits(
    batch_size: int, max_bytes: int, max_pixels: int, max_request_pixels: int | None, max_decoded_pixels: int | None,
    max_concurrency: int, idempotency_cache: int, max_batch_images: int,
) -> tuple[int, int]:
    """(max_request_pixels, max_decoded_pixels), defaults derived from max_pixels; one-line SilhouetteError for a bad limit."""
    if not isinstance(max_bytes, int) or not isinstance(max_pixels, int) or max_bytes < 1024 or max_pixels < 64:
        raise SilhouetteError("--max-bytes must be >= 1024 and --max-pixels >= 64")
    max_request_pixels = REQUEST_PIXELS_PER_MAX * max_pixels if max_request_pixels is None else max_request_pixels
    max_decoded_pixels = max_pixels if max_decoded_pixels is None else max_decoded_pixels
    for name, value in (
        ("batch_size", batch_size), ("max_request_pixels", max_request_pixels), ("max_decoded_pixels", max_decoded_pixels),
        ("max_concurrency", max_concurrency), ("idempotency_cache", idempotency_cache), ("max_batch_images", max_batch_images),
    ):
        _require_positive(name, value, integer=True)
    for name, value in (("max_request_pixels", max_request_pixels), ("max_decoded_pixels", max_decoded_pixels)):
        if value < max_pixels:  # else an image allowed by --max-pixels could never be served
            raise SilhouetteError(f"--{name.replace('_', '-')} {value}: must be >= --max-pixels ({max_pixels})")
    return max_request_pixels, max_decoded_pixels


@dataclass
class AppLimits:
    """Per-request limits of the detect endpoints."""

    max_pixels: int
    max_request_pixels: int
    max_decoded_pixels: int
    max_batch_images: int
    idempotency_cache: int


class PixelBudget:
    """Decoded pixels held at once by all requests of this worker; acquire() waits, first come first served, until they fit."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, pixels: int) -> None:
        """Reserve `pixels` (at most the capacity), waiting behind earlier requests while the budget is spent."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.capacity}")
        if not self._waiting and self.used + pixels <= self.capacity:
            self.used += pixels
            return
        item = (pixels, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        try:
            await item[1]
        except asyncio.CancelledError:
            if item[1].cancelled():  # still queued: leave the queue, which may let the next waiter in
                if item in self._waiting:
                    self._waiting.remove(item)
                self._grant()
            else:  # granted just before the cancel: hand the pixels back
                self.release(pixels)
            raise

    def release(self, pixels: int) -> None:
        """Return pixels reserved by acquire()."""
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            pixels, fut = self._waiting.popleft()
            if not fut.done():
                self.used += pixels
                fut.set_result(None)
