"""Request guards below the routes: API key, body size, concurrency and the private pair, all before the body is read."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect

from silhouette.serve.auth import key_problem
from silhouette.serve.limits import DEFAULT_MAX_CONCURRENCY
from silhouette.serve.metrics import Metrics, endpoint_label
from silhouette.wire import API_KEY_HEADER, API_PREFIX, DETECT_PATH, PAIR_HEADER

log = logging.getLogger("silhouette.serve")


class _BodyTooLarge(Exception):
    """The body grew past --max-bytes while streaming in."""


_CLOSE = {"connection": "close"}  # on a refusal sent before the body was read: the unread body must not be parsed as a request


class GuardMiddleware:
    """Pure-ASGI guard: API key, body size and concurrency are checked before any byte of the body is read; records metrics."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], api_key: str | None, max_bytes: int, metrics: Metrics,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key is not None else None
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if not scope["path"].startswith(API_PREFIX):
                await self.app(scope, receive, send_wrapper)
                return
            refusal = self._refusal(scope, endpoint)
            if refusal is not None:
                await send_json(send_wrapper, *refusal)
                return
            self.in_flight += 1
            try:
                await self.app(scope, self._limited(receive, state), send_wrapper)
            finally:
                self.in_flight -= 1
        except _BodyTooLarge:
            self.metrics.errors.labels(endpoint, "too_large").inc()
            if not state["started"]:
                await send_json(send_wrapper, 413, {"detail": f"request body exceeds the limit of {self.max_bytes} bytes"}, _CLOSE)
        except ClientDisconnect:
            # the client went away mid-body: one line, no traceback, and nothing of the upload was processed
            self.metrics.errors.labels(endpoint, "client_disconnected").inc()
            why = scope.get("silhouette.dropped", "closed by the client")
            client = (scope.get("client") or ("?", 0))[0]
            method, path, got = scope.get("method"), scope["path"], state["received"]
            log.warning("%s %s from %s: body incomplete after %d bytes (%s); request dropped", method, path, client, got, why)
        finally:
            self.metrics.requests.labels(endpoint, str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _refusal(self, scope: dict[str, Any], endpoint: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """(status, body, headers) to refuse a /v1 request with before its body is read, or None to let it in."""
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None:
            why = key_problem(headers.get(API_KEY_HEADER.lower()), self.api_key)
            if why is not None:
                client = scope.get("client") or ("?", 0)
                # the body is never read for a refused request, so nothing of the image can reach the log
                log.warning("refused %s %s from %s: %s %s header", scope.get("method"), scope["path"], client[0], why, API_KEY_HEADER)
                self.metrics.errors.labels(endpoint, "unauthorized").inc()
                return 401, {"detail": f"{why} or invalid {API_KEY_HEADER} header"}, {"www-authenticate": "ApiKey", **_CLOSE}
        try:
            declared = int(headers.get("content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            self.metrics.errors.labels(endpoint, "too_large").inc()
            return 413, {"detail": f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes"}, _CLOSE
        if self.in_flight >= self.max_concurrency:
            self.metrics.errors.labels(endpoint, "busy").inc()
            detail = f"the service is busy with {self.in_flight} requests (--max-concurrency {self.max_concurrency}); retry shortly"
            return 503, {"detail": detail}, {"retry-after": "1", **_CLOSE}
        return None

    def _limited(self, receive: Callable[..., Awaitable[Any]], state: dict[str, Any]) -> Callable[..., Awaitable[Any]]:
        """Wrap `receive` so a body streamed without (or beyond) its Content-Length is cut at max_bytes."""

        async def wrapped() -> Any:
            message = await receive()
            if message.get("type") == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        return wrapped


async def send_json(send: Callable[..., Awaitable[None]], status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    """Answer an ASGI request with a JSON body, without the app behind the guard."""
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class PairMiddleware:
    """Refuse (409) a detection request whose camera obfuscator was trained for another detector than this one.

    A private-mode camera names its pair in X-Silhouette-Pair; a compatible camera sends none. Counting a frame with
    the wrong detector would give a plausible but wrong number, so a mismatch is refused before the body is read."""

    def __init__(self, app: Callable[..., Awaitable[None]], pair_id: str | None, detector: str) -> None:
        self.app, self.pair_id, self.detector = app, pair_id, detector

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["path"].startswith(DETECT_PATH):
            sent = dict(scope.get("headers") or []).get(PAIR_HEADER.lower().encode(), b"").decode("latin-1").strip() or None
            if sent != self.pair_id:
                await send_json(send, 409, {"detail": _pair_mismatch(sent, self.pair_id, self.detector)},
                                 {"Connection": "close"})
                return
        await self.app(scope, receive, send)


def _pair_mismatch(sent: str | None, served: str | None, detector: str) -> str:
    """Why a camera and this service do not belong together, and what to change."""
    if served is None:
        return (f"the camera's obfuscator is private pair {sent}, co-trained with its own detector; this service runs the "
                f"unmodified {detector}: start it with `silhouette serve --pair` on that pair's checkpoint")
    camera = f"pair {sent}" if sent else "a compatible-mode obfuscator"
    return f"this service runs private pair {served}; the camera sends {camera}: give the camera that pair's checkpoint"
