"""The camera's HTTP client: send only obfuscated frames to the service, survive its outages, count each frame once."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from silhouette.errors import SilhouetteError
from silhouette.imaging import encode_frame, resize_frame
from silhouette.wire import (
    API_KEY_HEADER, CAMERA_ID_RE, CAPTURE_TIME_HEADER, DETECT_PATH, IDEMPOTENCY_HEADER, OBFUSCATOR_HEADER, PAIR_HEADER,
    content_type, frame_key,
)

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


DEFAULT_RETRY_FOR = 30.0  # seconds: rides out a service restart (process start + detector load) of up to 30 s
# worth repeating: the server is down, overloaded or timed out (a repeat of a processed frame is answered, not recounted)
RETRY_STATUS = frozenset({408, 425, 429})
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also IPv4-mapped); names are never resolved, so no lookup leaves the camera."""
    import ipaddress

    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # a DNS name: it could resolve anywhere, so it is not trusted as loopback
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def check_transport(server: str, sends_key: bool, require_tls: bool = False) -> None:
    """Validate --server; warn (or, with require_tls, refuse) plain HTTP to a non-loopback host, before any connection."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SilhouetteError(f"--server {server!r}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SilhouetteError(f"--server {server!r}: expected an http:// or https:// URL")
    if parts.scheme == "https" or is_loopback_host(parts.hostname):
        return
    if require_tls:
        raise SilhouetteError(f"--server {server}: plain http:// to a non-loopback host is refused with --require-tls; use https://")
    if sends_key:
        log.warning("sending the API key in clear text over http:// to %s; use https:// (or --require-tls to refuse)", parts.hostname)


OK, RETRY, REJECTED = "ok", "retry", "rejected"


@dataclass(frozen=True)
class Reply:
    """One POST's outcome: OK (a 2xx and its result), RETRY (server down, busy or timed out) or REJECTED (a 4xx)."""

    outcome: str
    result: dict[str, Any] | None
    reason: str


def capture_time(t: float) -> str:
    """X-Capture-Time's value: unix seconds with milliseconds."""
    return f"{t:.3f}"


def _detail(response: Any) -> str:
    """The service's one-line reason, from its JSON error body."""
    try:
        return str(response.json().get("detail", response.text))[:300]
    except ValueError:
        return response.text[:300]


class EdgeClient:
    """Posts encoded (obfuscated) frames to the service with capped exponential-backoff retries and idempotency keys."""

    def __init__(
        self,
        server: str,
        api_key: str | None = None,
        camera_id: str | None = None,
        timeout: float = 10.0,
        max_retries: int | None = None,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        retry_for: float | None = None,
        require_tls: bool = False,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        pair_id: str | None = None,
    ) -> None:
        import httpx

        if (max_retries is not None and max_retries < 0) or backoff < 0 or max_backoff < 0 or (retry_for is not None and retry_for < 0):
            raise SilhouetteError("--retries, --retry-for, --backoff and --max-backoff must be >= 0")
        check_transport(server, bool(api_key), require_tls)
        self.url = server.rstrip("/") + DETECT_PATH
        self.auth = {API_KEY_HEADER: api_key} if api_key else {}  # per client, never part of a (spooled) frame
        self.pair_id = pair_id
        self.set_camera(camera_id)
        self.max_retries = max_retries
        # a retry count alone keeps its old meaning; with neither limit given, retry for DEFAULT_RETRY_FOR seconds
        self.retry_for = DEFAULT_RETRY_FOR if retry_for is None and max_retries is None else retry_for
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.clock = clock
        # random per client start: a restarted client counts frames from 0 again, and those are new frames
        self.run_id = run_id or secrets.token_hex(8)
        self._calls = itertools.count()
        self.timeout = timeout
        self.client = httpx.Client(timeout=timeout)

    def set_camera(self, camera_id: str | None) -> None:
        """Camera id sent with each frame (the service's rolling counts) and used in idempotency keys."""
        # the service's rule for camera_id, checked here too so a bad id fails before any frame
        if camera_id is not None and not CAMERA_ID_RE.match(camera_id):
            raise SilhouetteError(f"--camera-id {camera_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
        self.camera_id = camera_id
        self.params = {"camera_id": camera_id} if camera_id else {}

    def idempotency_key(self, frame_index: int) -> str:
        """Idempotency-Key of one frame: camera id, this run's random id and the source frame index."""
        # identical for every retry of the frame (built once, before the retry loop) and unique across frames and
        # client restarts; not the capture time: camera clocks jump (NTP, no RTC at boot) and two frames can share one
        return frame_key(self.camera_id, self.run_id, int(frame_index))

    def delay(self, attempt: int) -> float:
        """Backoff before retry `attempt` (0-based): backoff * 2**attempt, capped at max_backoff."""
        return min(self.max_backoff, self.backoff * (2 ** min(attempt, 64)))  # exponent capped: no float overflow

    def next_wait(self, attempt: int, deadline: float | None) -> float | None:
        """Seconds to wait before retry `attempt`, or None once --retries or the --retry-for deadline is spent."""
        if self.max_retries is not None and attempt >= self.max_retries:
            return None
        wait = self.delay(attempt)
        if deadline is not None:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return None
            wait = min(wait, remaining)  # the last try lands on the deadline, so a retry_for-long outage is covered
        return wait

    def frame_headers(self, content_type: str, key: str, captured: float | None = None,
                      obfuscator: str | None = None) -> dict[str, str]:
        """The per-frame headers (what a spooled frame keeps): type, idempotency key, capture time, obfuscator, pair."""
        headers = {"Content-Type": content_type, IDEMPOTENCY_HEADER: key}
        if captured is not None:
            headers[CAPTURE_TIME_HEADER] = capture_time(captured)
        if obfuscator:
            headers[OBFUSCATOR_HEADER] = obfuscator
        if self.pair_id:
            # private mode: the service refuses (409) frames of an obfuscator its detector was not trained with
            headers[PAIR_HEADER] = self.pair_id
        return headers

    def detect(self, payload: bytes, content_type: str, key: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, int]:
        """POST one encoded frame; returns (result or None once the retry budget is spent, retries used)."""
        # one key for all tries of this frame: the server answers a repeat with the first result instead of counting again
        key = key or frame_key(self.camera_id, self.run_id, f"call{next(self._calls)}")  # never equal to a frame's key
        headers = {**self.frame_headers(content_type, key), **(headers or {})}
        deadline = None if self.retry_for is None else self.clock() + self.retry_for
        attempt = 0
        while True:
            reply = self.post(payload, headers, self.camera_id)
            if reply.outcome != RETRY:
                return reply.result, attempt
            wait = self.next_wait(attempt, deadline)
            if wait is None:
                break
            log.debug("attempt %d failed (%s); retrying in %.2fs", attempt + 1, reply.reason, wait)
            self.sleep(wait)
            attempt += 1
        log.warning("giving up on a frame after %d attempts (%s)", attempt + 1, reply.reason)
        return None, attempt

    def post(self, payload: bytes, headers: dict[str, str], camera_id: str | None = None) -> Reply:
        """One POST of an encoded frame with its per-frame headers; raises SilhouetteError when no frame can succeed."""
        import httpx

        params = {"camera_id": camera_id} if camera_id else {}
        try:
            r = self.client.post(self.url, content=payload, headers={**self.auth, **headers}, params=params)
        except httpx.TransportError as exc:  # refused, reset, timed out: the server may be restarting or still busy
            return Reply(RETRY, None, type(exc).__name__)
        if 200 <= r.status_code < 300:
            try:
                return Reply(OK, r.json(), "")
            except ValueError:  # a proxy's page, not the service: the frame was not processed
                return Reply(RETRY, None, f"HTTP {r.status_code} without a JSON body")
        if r.status_code == 401:
            raise SilhouetteError(f"{self.url}: the server refused the API key (401); check --api-key-file / $SILHOUETTE_API_KEY")
        if r.status_code == 409:  # the service runs another detector than this obfuscator needs: no frame can succeed
            raise SilhouetteError(f"{self.url}: {_detail(r)} (409)")
        if r.status_code in (404, 405):  # not the service (or not its API version): every frame would get the same
            raise SilhouetteError(f"{self.url}: no detection endpoint there (HTTP {r.status_code}); check --server")
        if r.status_code >= 500 or r.status_code in RETRY_STATUS:
            return Reply(RETRY, None, f"HTTP {r.status_code}")
        log.warning("server rejected the frame: %s %s", r.status_code, _detail(r))
        return Reply(REJECTED, None, f"HTTP {r.status_code}: {_detail(r)}")  # retrying the same bytes cannot help

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()


def run_edge(
    frames: Iterable[tuple[int, np.ndarray]],
    obfuscator: Callable[[np.ndarray], np.ndarray],
    client: EdgeClient,
    fmt: str = "jpg",
    quality: int = 90,
    size: tuple[int, int] | None = None,
    on_result: Callable[[int, dict[str, Any] | None, EdgeStats], None] | None = None,
    obfuscator_id: str | None = None,
) -> EdgeStats:
    """Obfuscate each (index, BGR frame), send only the obfuscated encoding, count persons and bytes (one thread, no spool).

    `obfuscator_id` (X-Silhouette-Obfuscator) defaults to the digest of the model file of `obfuscator.runner`."""
    from silhouette.edge.runtime import obfuscator_id as model_id

    mime = content_type(fmt)
    obf_id = obfuscator_id or model_id(getattr(obfuscator, "runner", None))
    stats = EdgeStats()
    t0 = time.perf_counter()
    for index, image in frames:
        captured = time.time()  # when the frame came out of the source
        obf = obfuscator(image)
        payload = encode_frame(obf, fmt, quality)
        # measured, never sent: what the original frame would have cost on the wire
        stats.bytes_original += len(encode_frame(image, fmt, quality))
        if size is not None:
            stats.bytes_original_resized += len(encode_frame(resize_frame(image, size), fmt, quality))
        del image  # nothing below this line can touch the original frame
        key = client.idempotency_key(index)
        result, retries = client.detect(payload, mime, key, client.frame_headers(mime, key, captured, obf_id))
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
