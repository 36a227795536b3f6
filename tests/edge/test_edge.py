"""Edge client -> real loopback service: counts, what leaves the camera, and surviving a server restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

API_KEY = "test-key-0123456789"  # the key the `server` fixture (conftest.py) was started with


@pytest.fixture(scope="module")
def edge_obf(checkpoint: Path):
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner

    return EdgeObfuscator(load_runner(checkpoint, "onnx"), (320, 200))


@pytest.fixture(scope="module")
def e2e_obf(edge_obf):
    """The shipped trained default when installed (counts then mean something), else the seeded test obfuscator."""
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner
    from silhouette.paths import DEFAULT_CHECKPOINT

    if DEFAULT_CHECKPOINT.is_file():
        return EdgeObfuscator(load_runner(None, "onnx"), (320, 200))
    return edge_obf


def _persons(detector, bgr: np.ndarray) -> int:
    from silhouette.imaging import bgr_to_tensor

    return len(detector.predict(bgr_to_tensor(bgr).unsqueeze(0))[0].persons())


class Capture:
    """ASGI wrapper recording every request (path, query, headers, full body) that reaches the service."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.requests: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = {"path": scope["path"], "query": scope.get("query_string", b""), "headers": list(scope["headers"]), "body": b""}
        self.requests.append(record)

        async def recv():  # noqa: ANN202
            msg = await receive()
            if msg["type"] == "http.request":
                record["body"] += msg.get("body", b"")
            return msg

        await self.app(scope, recv, send)


def test_edge_end_to_end_counts_match_local_detection(server, detector, e2e_obf, testdata_bgr, camera_frames) -> None:
    from silhouette.edge.client import EdgeClient, run_edge

    frames = testdata_bgr + camera_frames
    client = EdgeClient(server.url, API_KEY, "cam-e2e", timeout=30, max_retries=1, backoff=0.01)
    try:
        # PNG is lossless, so this checks the transport; JPEG artefacts on obfuscated frames can move counts by 2+
        stats = run_edge(list(enumerate(frames)), e2e_obf, client, "png", 90, (320, 200))
    finally:
        client.close()
    local = [_persons(detector, e2e_obf(f)) for f in frames]
    assert stats.failed == 0 and stats.sent == len(frames)
    assert len(stats.people) == len(local)
    assert stats.people == local  # bit-exact frames, the same detector: the same count on every frame
    assert sum(local) > 0  # the frames hold people, so an always-zero count cannot pass
    s = stats.summary()
    # bandwidth accounting: the full-resolution originals cost more on the wire than the 320x200 obfuscated frames
    assert 0 < s["bytes_per_frame_sent"] < s["bytes_per_frame_original"]
    assert s["bytes_per_frame_original_at_model_size"] > 0


def test_only_obfuscated_frames_leave_the_camera(detector, edge_obf, camera_frames) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from silhouette.edge.client import EdgeClient, run_edge
    from silhouette.imaging import resize_frame
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    cap = Capture(create_app("yolox_nano", API_KEY, detector=detector))
    with ServerThread(cap) as srv:
        client = EdgeClient(srv.url, API_KEY, "cam-priv", timeout=30, max_retries=0)
        try:
            stats = run_edge(list(enumerate(camera_frames)), edge_obf, client, "jpg", 90, (320, 200))
        finally:
            client.close()
    assert stats.sent == len(camera_frames)
    posts = [r for r in cap.requests if r["path"].startswith("/v1/")]
    assert len(posts) == len(camera_frames)
    originals_jpeg = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in camera_frames]
    for req, orig in zip(posts, camera_frames):
        body = req["body"]
        assert all(o not in body for o in originals_jpeg)
        sent = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert sent is not None and sent.shape == (200, 320, 3)  # never the 768x576 camera frame
        small = resize_frame(orig, (320, 200))
        expected = edge_obf(orig)
        # equal to the obfuscator's output up to JPEG q90 loss ...
        ssim_obf = structural_similarity(expected, sent, channel_axis=-1, data_range=255)
        assert peak_signal_noise_ratio(expected, sent, data_range=255) > 30 and ssim_obf > 0.85
        # ... and far from the original frame
        ssim_orig = structural_similarity(small, sent, channel_axis=-1, data_range=255)
        assert peak_signal_noise_ratio(small, sent, data_range=255) < 15
        assert ssim_orig < 0.5 and ssim_obf - ssim_orig > 0.4
        # nothing else in the request carries pixels
        assert len(req["query"]) < 100 and sum(len(v) for _, v in req["headers"]) < 1000


def test_server_killed_midstream_client_retries_and_recovers(detector, edge_obf, testdata_bgr) -> None:
    from silhouette.edge.client import EdgeClient, run_edge
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    srv = ServerThread(create_app("yolox_nano", API_KEY, detector=detector)).start()
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        time.sleep(s)

    def chaos(index: int, result, stats) -> None:  # noqa: ANN001
        if index == 1:
            srv.stop()  # the cloud goes away mid-stream ...
        elif index == 3:
            srv.start()  # ... and comes back on the same port

    client = EdgeClient(srv.url, API_KEY, "cam-k", timeout=10, max_retries=2, backoff=0.02, max_backoff=0.03, sleep=sleep)
    try:
        stats = run_edge([(i, testdata_bgr[i % 3]) for i in range(6)], edge_obf, client, "jpg", 90, (320, 200), on_result=chaos)
    finally:
        client.close()
        srv.stop()
    assert stats.frames == 6
    assert stats.failed_frames == [2, 3] and stats.failed == 2 and stats.sent == 4
    # two retries per lost frame with exponential backoff capped at max_backoff
    assert sleeps[:4] == [0.02, 0.03, 0.02, 0.03]
    assert stats.retries >= 4 and stats.summary()["failed"] == 2


def test_edge_cli_prints_counts_and_bandwidth(server, checkpoint, shared, tmp_path, capsys) -> None:
    from silhouette.cli import main

    key = tmp_path / "key"
    key.write_text(API_KEY + "\n")
    report = tmp_path / "edge.json"
    rc = main([
        "edge", "--source", str(shared / "weights" / "testdata"), "--server", server.url, "--api-key-file", str(key),
        "--checkpoint", str(checkpoint), "--camera-id", "cli-cam", "--quality", "80", "--report", str(report),
    ])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("person(s)") == 3 and "summary: 3 frames, 3 delivered, 0 failed" in out and "KiB/frame sent" in out
    data = json.loads(report.read_text())
    assert data["sent"] == 3 and data["quality"] == 80 and data["bytes_per_frame_sent"] > 0


def test_edge_cli_wrong_key_is_one_line_exit_2(server, checkpoint, shared, tmp_path, capsys) -> None:
    from silhouette.cli import main

    key = tmp_path / "key"
    key.write_text("wrong\n")
    rc = main(["edge", "--source", str(shared / "weights" / "testdata"), "--server", server.url, "--api-key-file", str(key),
               "--checkpoint", str(checkpoint), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "API key" in err[0]


def test_backoff_is_bounded() -> None:
    from silhouette.edge.client import EdgeClient

    c = EdgeClient("http://127.0.0.1:9", max_retries=10, backoff=0.5, max_backoff=3.0)
    try:
        assert [c.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    finally:
        c.close()


def _closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once, no packet leaves the machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtualTime:
    """Clock and sleep of the retry loop on a virtual timeline, so a 30-s budget is checked in milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_default_retry_budget_rides_out_a_30s_restart() -> None:
    from silhouette.edge.client import DEFAULT_RETRY_FOR, EdgeClient

    vt = VirtualTime()
    c = EdgeClient(f"http://127.0.0.1:{_closed_port()}", API_KEY, "cam-budget", sleep=vt.sleep, clock=vt.clock)
    try:
        result, retries = c.detect(b"not sent anywhere useful", "image/png", "cam-budget:run:0")
    finally:
        c.close()
    assert result is None and retries == len(vt.sleeps)
    assert DEFAULT_RETRY_FOR >= 30
    # capped exponential backoff, and the last try lands exactly on the deadline: a 30-s outage is covered
    assert vt.sleeps[:5] == [0.25, 0.5, 1.0, 2.0, 4.0] and max(vt.sleeps) <= 4.0
    assert sum(vt.sleeps) == pytest.approx(DEFAULT_RETRY_FOR)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"max_retries": 4}, [0.25, 0.5, 1.0, 2.0]),  # --retries alone keeps its old meaning: no time limit
        ({"max_retries": 0}, []),
        ({"retry_for": 2.0}, [0.25, 0.5, 1.0, 0.25]),  # clipped so the last try is at the deadline
        ({"max_retries": 2, "retry_for": 60.0}, [0.25, 0.5]),  # the first limit reached ends the retries
        ({"retry_for": 0.0}, []),
    ],
)
def test_retry_limits_combine(kwargs: dict, expected: list[float]) -> None:
    from silhouette.edge.client import EdgeClient

    vt = VirtualTime()
    c = EdgeClient(f"http://127.0.0.1:{_closed_port()}", sleep=vt.sleep, clock=vt.clock, **kwargs)
    try:
        assert c.detect(b"x", "image/png") == (None, len(expected))
    finally:
        c.close()
    assert vt.sleeps == pytest.approx(expected)


def test_bad_client_options_are_one_line_errors() -> None:
    from silhouette.edge.client import EdgeClient
    from silhouette.errors import SilhouetteError

    # a non-ASCII camera id would otherwise crash inside httpx when it builds the Idempotency-Key header
    for kwargs in ({"max_retries": -1}, {"retry_for": -1.0}, {"backoff": -0.1}, {"camera_id": "café"}, {"camera_id": "x" * 65}):
        with pytest.raises(SilhouetteError) as exc:
            EdgeClient("http://127.0.0.1:9", **kwargs)
        assert "\n" not in str(exc.value)


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list:
    """Tripwire: any socket connect fails the test (and is recorded), so the checks below provably send nothing."""
    import socket

    attempts: list = []

    def refuse(self, address, *a, **k):  # noqa: ANN001, ANN202
        attempts.append(address)
        raise AssertionError(f"unexpected connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_plain_http_check_warns_only_for_a_key_to_a_non_loopback_host(no_connections, caplog) -> None:
    import logging

    from silhouette.edge.client import check_transport

    def warnings_for(url: str, sends_key: bool = True) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="silhouette.edge"):
            check_transport(url, sends_key)
        return [r.getMessage() for r in caplog.records]

    for url in ("http://192.0.2.1:8000", "http://example.com", "http://localhost.example.com", "http://127.0.0.1.nip.io", "http://[2001:db8::1]:80"):
        msgs = warnings_for(url)
        assert len(msgs) == 1 and "http://" in msgs[0] and "API key" in msgs[0], (url, msgs)
        assert "\n" not in msgs[0] and API_KEY not in msgs[0]
    loopback = ("http://127.0.0.1:8000", "http://127.8.9.10", "http://localhost:8000", "http://LOCALHOST", "http://[::1]:8000",
                "http://[::ffff:127.0.0.1]:8000")
    for url in loopback + ("https://192.0.2.1:8443",):
        assert warnings_for(url) == [], url
    assert warnings_for("http://192.0.2.1:8000", sends_key=False) == []  # no key, nothing secret on the wire
    assert no_connections == []


def test_require_tls_refuses_plain_http_to_non_loopback(no_connections) -> None:
    from silhouette.edge.client import EdgeClient, check_transport
    from silhouette.errors import SilhouetteError

    for url in ("http://192.0.2.1:8000", "http://example.com/"):
        with pytest.raises(SilhouetteError, match="--require-tls") as exc:
            check_transport(url, sends_key=False, require_tls=True)
        assert "\n" not in str(exc.value)
    with pytest.raises(SilhouetteError, match="--require-tls"):
        EdgeClient("http://192.0.2.1:8000", API_KEY, require_tls=True)
    check_transport("https://192.0.2.1:8443", True, require_tls=True)
    check_transport("http://127.0.0.1:8000", True, require_tls=True)  # loopback never leaves the machine
    for bad in ("192.0.2.1:8000", "ftp://192.0.2.1", "http://", "http://192.0.2.1:99999"):
        with pytest.raises(SilhouetteError, match="--server"):
            check_transport(bad, True)
    assert no_connections == []


def test_edge_cli_require_tls_refuses_before_source_model_or_network(no_connections, tmp_path, capsys) -> None:
    from silhouette.cli import main

    key = tmp_path / "key"
    key.write_text(API_KEY + "\n")
    # a missing source and checkpoint: had the check come later, the error would name them instead
    args = ["edge", "--source", str(tmp_path / "missing"), "--server", "http://192.0.2.1:8000", "--api-key-file", str(key),
            "--checkpoint", str(tmp_path / "missing.pt"), "--quiet"]
    t0 = time.perf_counter()
    rc = main([*args, "--require-tls"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--require-tls" in err[0] and "https://" in err[0], err
    assert time.perf_counter() - t0 < 5 and no_connections == []


def test_edge_cli_warns_once_for_plain_http_without_connecting(no_connections, tmp_path, capsys, caplog) -> None:
    import logging

    from silhouette.cli import main

    key = tmp_path / "key"
    key.write_text(API_KEY + "\n")
    with caplog.at_level(logging.WARNING, logger="silhouette.edge"):
        rc = main(["edge", "--source", str(tmp_path / "missing"), "--server", "http://192.0.2.1:8000", "--api-key-file", str(key),
                   "--checkpoint", str(tmp_path / "missing.pt"), "--quiet"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "silhouette.edge"]
    assert len(warnings) == 1 and "clear text" in warnings[0] and "192.0.2.1" in warnings[0]
    # then it stops at the missing source, before a model is loaded or a frame is sent
    assert rc == 2 and "source not found" in capsys.readouterr().err
    assert no_connections == []
