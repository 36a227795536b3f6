"""Socket-level limits below the ASGI app: header/body deadlines and a connection cap that evicts idle sockets."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter as Tally
from collections import OrderedDict
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from silhouette.serve.config import config_from_env
from silhouette.serve.limits import ConnectionLimits

log = logging.getLogger("silhouette.serve")

MAX_HEADER_BYTES = 16 * 1024  # request line + headers; h11 answers 400 to more
FD_RESERVE = 128  # descriptors left for everything but client sockets (listener, model files, logs, event loop)
# listen queue, and also how many sockets asyncio accepts per loop turn; an accepted socket reaches connection_made()
# (which may refuse it) two turns later and its descriptor is freed a turn after that, so a flood holds up to about
# ACCEPT_HEADROOM descriptors beyond --max-connections; they must fit under ulimit -n (uvicorn's backlog of 2048 did not)
BACKLOG = 128
ACCEPT_HEADROOM = 4 * BACKLOG
DROP_LOG_EVERY_S = 10.0
_BUSY_TEXT = b"too many open connections\n"
# written to a connection refused at --max-connections before any byte of it is read; then the socket is closed
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BUSY_TEXT)).encode() + b"\r\n\r\n" + _BUSY_TEXT
)


class _ConnRegistry:
    """One server's socket bookkeeping: the connection cap, which sockets wait for a request (oldest first), a throttled log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.max_connections = _fd_capped(limits.max_connections)
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self._dropped: Tally[str] = Tally()
        self._last_log = -math.inf
        self._flush_at: asyncio.TimerHandle | None = None

    def admit(self, open_now: int) -> bool:
        """Room for one more socket? At the cap, the longest-waiting socket with no request in progress is closed instead."""
        if open_now < self.max_connections:
            return True
        if self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.drop("evicted idle at --max-connections")
            return True
        self.note("refused at --max-connections (all busy)")
        return False

    def note(self, reason: str) -> None:
        """Count one socket closed early; logged as a summary line at most every DROP_LOG_EVERY_S seconds."""
        # a flood of stalled sockets must not flood the log: the probe that found this grew it by 30 MB
        self._dropped[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_EVERY_S:
            self.flush()
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(self._last_log + DROP_LOG_EVERY_S - now, self.flush)

    def flush(self) -> None:
        """Log what note() counted since the last line."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._dropped:
            total = sum(self._dropped.values())
            log.warning("closed %d connection(s) early: %s", total, ", ".join(f"{n} {why}" for why, n in self._dropped.most_common()))
            self._dropped.clear()
        self._last_log = time.monotonic()


def _fd_capped(wanted: int) -> int:
    """--max-connections, lowered to what RLIMIT_NOFILE leaves after an accept burst and FD_RESERVE for everything else."""
    try:
        import resource
    except ImportError:  # not a Unix: no descriptor limit to read
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - FD_RESERVE - ACCEPT_HEADROOM:
        return wanted
    # past the descriptor limit accept() fails with EMFILE and asyncio stops accepting for a second: no new socket,
    # a keyed one included, is served then. Below 64 the service would be useless, so a tiny ulimit keeps some risk.
    capped = max(min(wanted, 64), soft - FD_RESERVE - ACCEPT_HEADROOM)
    log.warning("--max-connections %d lowered to %d: this process may open %d files (ulimit -n)", wanted, capped, soft)
    return capped


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one so --max-connections fits (serve() owns its process)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard))
    except (ImportError, ValueError, OSError):  # no resource module, or not allowed: _fd_capped lowers the cap instead
        pass


# What uvicorn (0.55, h11_impl) does not cover: it arms no timer until a first response is sent, so a socket that
# sends nothing, or its headers one byte a second, stays open forever (and any byte cancels the keep-alive timer);
# it has no body timeout; its limit_concurrency still accepts every socket and counts idle ones, so stalled sockets
# exhaust descriptors or turn every request into 503. h11_max_incomplete_event_size bounds header size, not time.
class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus header/body deadlines and a connection cap that evicts sockets with no request."""

    registry: ClassVar[_ConnRegistry | None] = None  # one per server, set by guarded_protocol()

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        cls = type(self)
        if cls.registry is None:  # a --workers child imported this class by name: the limits come with its config env var
            cls.registry = _ConnRegistry(config_from_env().limits())
        self.guard: _ConnRegistry = cls.registry
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(len(self.connections)):
            transport.write(_BUSY_RESPONSE)
            transport.close()  # freed right away: nothing of this socket is read or kept
            return
        self._admitted = True
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self.guard.waiting.pop(self, None)
        self._arm(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)
            self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def drop(self, reason: str) -> None:
        """Close now (abort: a client that does not read cannot hold the socket) and count it for the summary log."""
        self.guard.note(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            self.scope["silhouette.dropped"] = reason  # worded into GuardMiddleware's one line about the request
        self.transport.abort()

    def _track(self) -> None:
        """Arm the deadline of the phase the socket is in; only a socket with no request in progress may be evicted."""
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.conn.their_state is h11.SEND_BODY:
            phase: str | None = "body"
        elif busy:
            phase = None  # the request is in and the app works on it: --max-concurrency bounds these, not a clock
        else:
            phase = "header"
        if busy:
            self.guard.waiting.pop(self, None)
        elif self not in self.guard.waiting:
            self.guard.waiting[self] = None
        if phase != self._phase:
            self._arm(phase)

    def _arm(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.guard.limits.header_timeout if phase == "header" else self.guard.limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self.drop, f"{phase} timeout ({seconds:g} s)")


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class of its own for one server: its limits and its socket registry."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"registry": _ConnRegistry(limits)})


def uvicorn_options(limits: ConnectionLimits, by_name: bool = False) -> dict[str, Any]:
    """uvicorn settings of a guarded server; `by_name` for --workers children, which import the protocol from here."""
    return {
        "http": "silhouette.serve.connections:GuardedH11Protocol" if by_name else guarded_protocol(limits),
        "ws": "none",  # no WebSocket routes: an Upgrade must not hand the socket to an unguarded protocol
        "timeout_keep_alive": limits.keep_alive,
        # uvicorn's limit counts idle sockets too, so stalled ones would turn every request into 503;
        # GuardMiddleware limits requests in progress (--max-concurrency) instead
        "limit_concurrency": None,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "backlog": BACKLOG,
    }
