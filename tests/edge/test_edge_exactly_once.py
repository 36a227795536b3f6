"""Edge client -> real loopback service: every frame is counted exactly once despite client timeouts and server restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def edge_obf(checkpoint: Path):
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner

    return EdgeObfuscator(load_runner(checkpoint, "onnx"), (320, 200))


class SlowDetector:
    """The real detector, slowed down: the server is still working when the client's --timeout fires."""

    def __init__(self, detector, delay: float) -> None:  # noqa: ANN001
        self.detector = detector
        self.name = detector.name
        self.delay = delay
        self.calls = 0

    def predict(self, batch):  # noqa: ANN001, ANN201
        self.calls += 1
        time.sleep(self.delay)
        return self.detector.predict(batch)


class FirstTryFails:
    """ASGI wrapper in front of the real app: answers 503 to the first request of each Idempotency-Key, records all keys."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.keys: list[str] = []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        key = headers.get(b"idempotency-key")
        if scope["type"] != "http" or scope["path"] != "/v1/detect" or key is None:
            await self.app(scope, receive, send)
            return
        first = key.decode() not in self.keys
        self.keys.append(key.decode())
        if not first:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _frames(testdata_bgr: list[np.ndarray], n: int) -> list[tuple[int, np.ndarray]]:
    return [(i, testdata_bgr[i % len(testdata_bgr)]) for i in range(n)]


def _recorded_frames(srv, camera_id: str) -> int:  # noqa: ANN001
    """Frames the service counted for `camera_id`, read from its counts endpoint once no request is left in flight."""
    # a graceful stop waits for requests the client gave up on; a late double count would otherwise be missed
    srv.stop()
    srv.start()
    r = httpx.get(f"{srv.url}/v1/counts/{camera_id}", headers={"X-API-Key": API_KEY}, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["frames"])


def test_client_timeout_shorter_than_processing_counts_each_frame_once(detector, edge_obf, testdata_bgr) -> None:
    from silhouette.edge.client import EdgeClient, run_edge
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    slow = SlowDetector(detector, delay=0.6)
    srv = ServerThread(create_app("yolox_nano", API_KEY, detector=slow)).start()
    # the client gives up on each request after 0.25 s, while the server needs >= 0.6 s: every frame is retried
    # while (or after) the server works on the first try, which is what used to record 29 frames for 20 sent
    client = EdgeClient(srv.url, API_KEY, "cam-race", timeout=0.25, backoff=0.05, max_backoff=0.2, retry_for=6)
    try:
        stats = run_edge(_frames(testdata_bgr, 4), edge_obf, client, "png", 90, (320, 200))
        recorded = _recorded_frames(srv, "cam-race")
    finally:
        client.close()
        srv.stop()
    assert stats.sent == 4 and stats.failed == 0, stats.summary()
    assert stats.retries >= 4  # the race happened: each frame timed out at least once
    assert slow.calls >= 4
    assert recorded == 4


def test_server_restart_within_retry_budget_loses_and_repeats_nothing(detector, edge_obf, testdata_bgr) -> None:
    from silhouette.edge.client import EdgeClient, run_edge
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    outage_s = 5.0  # longer than the old default budget of 3.75 s, well inside the new default of 30 s
    srv = ServerThread(create_app("yolox_nano", API_KEY, detector=detector)).start()
    errors: list[BaseException] = []

    def outage() -> None:
        try:
            srv.stop()  # while the client goes on sending: a request may meet the closing server
            time.sleep(outage_s)
            srv.start()  # same port
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    killer = threading.Thread(target=outage, daemon=True)

    def chaos(index: int, result, stats) -> None:  # noqa: ANN001
        if index == 2:
            killer.start()

    # default retry budget (--retry-for 30 s, no count limit); a shorter backoff cap only keeps the test quick
    client = EdgeClient(srv.url, API_KEY, "cam-restart", timeout=10, backoff=0.1, max_backoff=0.5)
    try:
        t0 = time.monotonic()
        stats = run_edge(_frames(testdata_bgr, 8), edge_obf, client, "jpg", 90, (320, 200), on_result=chaos)
        took = time.monotonic() - t0
        killer.join(outage_s + 30)
        recorded = _recorded_frames(srv, "cam-restart")
    finally:
        client.close()
        srv.stop()
    assert not errors, errors
    assert took >= outage_s * 0.9  # the outage really stalled the stream
    assert stats.frames == 8 and stats.sent == 8 and stats.failed == 0 and stats.failed_frames == [], stats.summary()
    assert stats.retries >= 1
    assert recorded == 8


def test_idempotency_key_is_stable_across_retries_and_distinct_across_frames(detector, edge_obf, testdata_bgr) -> None:
    from silhouette.edge.client import EdgeClient, run_edge
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    flaky = FirstTryFails(create_app("yolox_nano", API_KEY, detector=detector))
    keys_per_run = []
    with ServerThread(flaky) as srv:
        for _ in range(2):  # the second client is the same camera restarted: its frame indices start at 0 again
            flaky.keys.clear()
            client = EdgeClient(srv.url, API_KEY, "cam-keys", timeout=10, backoff=0.01)
            try:
                stats = run_edge(_frames(testdata_bgr, 3), edge_obf, client, "png", 90, (320, 200))
            finally:
                client.close()
            assert stats.sent == 3 and stats.retries == 3
            keys = list(flaky.keys)
            # each frame: a refused first try and one retry, with the same key; the three frames have three keys
            assert len(keys) == 6 and keys[0::2] == keys[1::2] and len(set(keys)) == 3
            assert all(k.startswith("cam-keys:") and k.endswith(f":{i}") for i, k in enumerate(keys[0::2]))
            keys_per_run.append(set(keys))
        recorded = _recorded_frames(srv, "cam-keys")
    assert not keys_per_run[0] & keys_per_run[1]  # a restarted client never reuses a key of the previous run
    assert recorded == 6


def test_idempotency_key_pure() -> None:
    from silhouette.edge.client import EdgeClient

    a = EdgeClient("http://127.0.0.1:9", camera_id="gate-1")
    b = EdgeClient("http://127.0.0.1:9", camera_id="gate-1")
    try:
        assert a.idempotency_key(7) == a.idempotency_key(7) != a.idempotency_key(8)
        assert a.idempotency_key(7) != b.idempotency_key(7)
        assert a.idempotency_key(7).split(":")[0] == "gate-1" and len(a.idempotency_key(7)) <= 100
    finally:
        a.close()
        b.close()
