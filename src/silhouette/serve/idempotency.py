"""Idempotency-Key handling: a retried frame is answered with the first result and counted once."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Any

from fastapi import HTTPException

from silhouette.serve.limits import DEFAULT_IDEMPOTENCY_CACHE
from silhouette.wire import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_RE


class _Reply:
    """The answer to one (camera_id, Idempotency-Key): pending until the first request with it is done."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        self.ready = asyncio.Event()
        self.result: Any = None
        self.error: HTTPException | None = None

    async def wait(self) -> Any:
        """The first request's result, or its error raised again."""
        await self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.result


class IdempotencyCache:
    """Answers of recent requests by (camera_id, Idempotency-Key), in memory per worker, least recently used evicted."""

    def __init__(self, size: int = DEFAULT_IDEMPOTENCY_CACHE) -> None:
        self.size = size
        self._replies: OrderedDict[tuple[str, str], _Reply] = OrderedDict()

    def claim(self, slot: tuple[str, str], fingerprint: bytes) -> tuple[_Reply, bool]:
        """The reply of `slot`, and True when this request is the first with it (so it does the work and counts)."""
        reply = self._replies.get(slot)
        if reply is not None:
            self._replies.move_to_end(slot)
            if reply.fingerprint != fingerprint:
                raise HTTPException(
                    422, f"{IDEMPOTENCY_HEADER} {slot[1]!r} was already used by this camera for a different request "
                    "(other images or endpoint); send a new key for each frame",
                )
            return reply, False
        reply = self._replies[slot] = _Reply(fingerprint)
        while len(self._replies) > self.size:
            self._replies.popitem(last=False)  # an evicted in-flight reply still reaches the waiters holding it
        return reply, True

    def finish(self, slot: tuple[str, str], reply: _Reply, result: Any = None, error: HTTPException | None = None) -> None:
        """Publish the first request's outcome; a failure is forgotten, so a later retry is processed afresh."""
        reply.result, reply.error = result, error
        if error is not None and self._replies.get(slot) is reply:
            del self._replies[slot]
        reply.ready.set()

    def __len__(self) -> int:
        return len(self._replies)


def check_idempotency_key(values: list[str]) -> str | None:
    """The request's Idempotency-Key (None without one); HTTP 400 unless it is one header of 1-200 printable characters."""
    if not values:
        return None
    if len(values) > 1 or not IDEMPOTENCY_KEY_RE.match(values[0]):
        raise HTTPException(400, f"{IDEMPOTENCY_HEADER} must be one header of 1-200 printable ASCII characters, e.g. 'cam1:frame:17'")
    return values[0]


def fingerprint(endpoint: str, uploads: list[bytes]) -> bytes:
    """What a repeat must match: endpoint and image bytes (not the multipart framing, whose boundary is random)."""
    digest = hashlib.sha256(endpoint.encode())
    for data in uploads:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()
