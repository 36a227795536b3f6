"""Hardening of the detection service against hostile clients, on real loopback servers with the real YOLOX-Nano.

Socket floods, slow headers and bodies, a memory-bomb batch, disk spooling of uploads, client drops mid-body, and
exactly-once counting with Idempotency-Key. The server runs in a subprocess where the test needs its own file
descriptor limit, $TMPDIR or peak memory, and in a thread otherwise.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import httpx
import numpy as np
import pytest

API_KEY = "test-key-0123456789"
KEY = {"X-API-Key": API_KEY}
SERVER_NOFILE = 1024  # the subprocess server's soft descriptor limit: the old service ran out of it under a flood
pytestmark = pytest.mark.timeout(240)  # every test bounds its own waits; this only guards against a hung server

# serves create_app() with the real detector on an ephemeral loopback port until stdin closes; prints the port
RUNNER = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from silhouette.serve.app import create_app
from silhouette.serve.server import ServerThread
srv = ServerThread(create_app("yolox_nano", sys.argv[1], threads=1)).start()
print(srv.port, flush=True)
sys.stdin.read()
srv.stop()
"""


class SubprocessServer:
    """`silhouette` service in its own process: its pid (for /proc), its log file and its $TMPDIR."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "server.log"
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1"}

        def low_nofile() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, hard))

        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, API_KEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=env, preexec_fn=low_nofile,
        )
        started = select.select([self.proc.stdout], [], [], 120)[0]  # detector load takes a few seconds
        line = self.proc.stdout.readline().strip() if started else b""
        if not line:
            self.stop()
            pytest.fail(f"subprocess server did not start:\n{self.log_path.read_text()[-3000:]}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        """VmHWM of the server: the most resident memory it ever had."""
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc status")

    def open_files_under(self, folder: Path) -> list[str]:
        """Paths of the server's open descriptors that lie in `folder` (deleted temporary files included)."""
        from serve_process import open_files_in

        return open_files_in([self.proc.pid], folder)

    def stop(self) -> None:
        """Close its stdin (it shuts down) and wait; kill it if it does not."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture(scope="module")
def sub_server(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[SubprocessServer]:  # noqa: ARG001 - checks the shared assets
    srv = SubprocessServer(tmp_path_factory.mktemp("sub_server"))
    yield srv
    srv.stop()


@pytest.fixture()
def fresh_app(detector: Any) -> Callable[..., Any]:
    """Build a new app (own metrics, counts and idempotency cache) around the session's YOLOX-Nano."""
    from silhouette.serve.app import create_app

    return lambda **kw: create_app("yolox_nano", API_KEY, detector=detector, **kw)


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _frame_png(testdata_bgr: list[np.ndarray], i: int = 1) -> bytes:
    return _png(testdata_bgr[i])


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"this test needs {needed} open files; the hard limit (ulimit -Hn) is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _closed_within(sock: socket.socket, seconds: float, drip: bytes = b"", every: float = 0.2) -> float | None:
    """Seconds until the server closes `sock` (sending `drip` one byte per `every` s meanwhile), or None if it did not."""
    sock.settimeout(every)
    t0 = time.monotonic()
    for i in range(int(seconds / every)):
        try:
            if i < len(drip):
                sock.send(drip[i : i + 1])
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:  # reset: closed as well
            return time.monotonic() - t0
    return None


# ---------------------------------------------------------------------------------------------- sockets


def _open_stalled(port: int, n: int, within: float = 30.0) -> list[socket.socket]:
    """`n` connections that never finish a request: half silent, half stopped inside their headers."""
    import selectors

    socks, sel = [], selectors.DefaultSelector()
    for _ in range(n):  # non-blocking: a full listen queue costs the kernel a SYN retry, not this loop a second
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    deadline, pending = time.monotonic() + within, n
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    for i, s in enumerate(socks):
        if i % 2:
            try:
                s.send(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: ")  # headers that never end
            except OSError:
                pass  # already closed by the server: an evicted socket
    time.sleep(0.5)  # let the server take in the last of them
    return socks


def test_thousands_of_stalled_connections_do_not_block_a_keyed_request(sub_server, testdata_bgr) -> None:
    """3000 silent or half-sent connections against a server allowed 1024 descriptors; a keyed request still gets through."""
    n = 3000
    _raise_nofile(n + 1000)
    body = _frame_png(testdata_bgr)
    log_before = len(sub_server.log_text())
    stalled = _open_stalled(sub_server.port, n)
    try:
        assert len(stalled) == n
        start = time.monotonic()
        try:
            r = httpx.post(
                f"{sub_server.url}/v1/detect", content=body, headers={**KEY, "content-type": "image/png"},
                params={"camera_id": "flood"}, timeout=2.0,
            )
        except httpx.TransportError as exc:
            pytest.fail(f"keyed request not answered under the flood: {exc!r}")
        took = time.monotonic() - start
        print(f"keyed request answered in {took:.3f} s")
    finally:
        for s in stalled:
            s.close()
    assert r.status_code == 200 and r.json()["count"] >= 1, r.text
    assert took < 2.0
    grown = sub_server.log_text()[log_before:]
    assert "Traceback" not in grown and len(grown) < 10_000, grown[-2000:]  # summary lines, not one per socket


def test_slow_header_and_stalled_body_are_dropped(fresh_app, testdata_bgr) -> None:
    """A silent socket and a one-byte-a-second header are closed at the header timeout; a stalled body at the body timeout."""
    from silhouette.serve.limits import ConnectionLimits
    from silhouette.serve.server import ServerThread

    limits = ConnectionLimits(header_timeout=1.0, body_timeout=1.0)
    with ServerThread(fresh_app(), limits=limits) as srv:
        silent = socket.create_connection(("127.0.0.1", srv.port))
        slow = socket.create_connection(("127.0.0.1", srv.port))
        header = b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode() + b"\r\nContent-Length: 10\r\n\r\n"
        slow_t = _closed_within(slow, 5.0, drip=header, every=0.2)  # 5 bytes/s: the header would take 14 s
        silent_t = _closed_within(silent, 1.0)
        stall = socket.create_connection(("127.0.0.1", srv.port))
        stall.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode()
            + b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG" * 100
        )
        stall_t = _closed_within(stall, 5.0)
        ok = httpx.post(f"{srv.url}/v1/detect", content=_frame_png(testdata_bgr), headers=KEY, timeout=10)
        for s in (silent, slow, stall):
            s.close()
    assert slow_t is not None and 0.8 < slow_t < 2.0, slow_t
    assert silent_t is not None  # by then it had been silent for longer than the header timeout
    assert stall_t is not None and 0.8 < stall_t < 2.0, stall_t
    assert ok.status_code == 200


def test_connection_cap_evicts_idle_and_limits_are_validated(fresh_app, testdata_bgr) -> None:
    """At --max-connections the oldest idle socket makes room; a bad limit is a one-line SilhouetteError."""
    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.limits import ConnectionLimits
    from silhouette.serve.server import ServerThread
    from silhouette.errors import SilhouetteError

    with ServerThread(fresh_app(), limits=ConnectionLimits(max_connections=8)) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(8)]
        time.sleep(0.2)
        r = httpx.post(f"{srv.url}/v1/detect", content=_frame_png(testdata_bgr), headers=KEY, timeout=5)
        evicted = _closed_within(idle[0], 1.0)
        for s in idle:
            s.close()
    assert r.status_code == 200 and evicted is not None
    for bad in ({"header_timeout": 0}, {"body_timeout": float("nan")}, {"keep_alive": -1}, {"max_connections": 0}):
        with pytest.raises(SilhouetteError, match="--"):
            ConnectionLimits(**bad)
    for bad in ({"max_request_pixels": 100}, {"max_decoded_pixels": 10**6}, {"max_concurrency": 0}, {"idempotency_cache": 1.5}):
        with pytest.raises(SilhouetteError, match="--") as err:
            ServiceConfig(**bad).check()
        assert "\n" not in str(err.value)


def test_serve_cli_help_and_bad_limits(capsys) -> None:
    """`silhouette serve --help` documents every limit; a bad one stops it with one line before anything is loaded."""
    from silhouette.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for opt in ("--header-timeout", "--body-timeout", "--keep-alive", "--max-connections", "--max-concurrency",
                "--max-request-pixels", "--max-decoded-pixels", "--idempotency-cache"):
        assert opt in text
    for argv in (["--header-timeout", "0"], ["--body-timeout", "inf"], ["--max-request-pixels", "64"], ["--max-connections", "-5"]):
        assert main(["serve", "--no-auth", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("silhouette serve: error: --") and "\n" not in err, err


# ---------------------------------------------------------------------------------------------- memory and disk


def test_huge_batch_is_refused_413_and_memory_stays_bounded(sub_server, testdata_bgr) -> None:
    """64 images of 4096x4096 (1.07 Gpx, ~3 MB of PNG) are refused from their headers; the server never grows past 1.5 GB."""
    big = _png(np.zeros((4096, 4096, 3), np.uint8))
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(64)]
    with httpx.Client(base_url=sub_server.url, timeout=60, headers=KEY) as c:
        r = c.post("/v1/detect/batch", files=files)
        after = c.post("/v1/detect", content=_frame_png(testdata_bgr), headers={"content-type": "image/png"})
    assert r.status_code == 413, r.text
    assert "per-request limit" in r.json()["detail"] and "pixels" in r.json()["detail"]
    assert after.status_code == 200
    assert sub_server.peak_rss_mb() < 1536, sub_server.peak_rss_mb()


class BudgetProbe:
    """The real detector, noting at each call how many decoded pixels the service holds (its decoded-pixel budget)."""

    def __init__(self, detector) -> None:  # noqa: ANN001
        self.detector = detector
        self.name = detector.name
        self.app = None
        self.held: list[int] = []

    def predict(self, batch):  # noqa: ANN001, ANN201
        self.held.append(self.app.state.detection.budget.used)
        return self.detector.predict(batch)


def test_batch_is_decoded_one_image_at_a_time(detector, testdata_bgr) -> None:
    """Six 1000x1000 images: each reaches the detector while it is the only decoded image of the request."""
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    probe = BudgetProbe(detector)
    probe.app = app = create_app("yolox_nano", API_KEY, detector=probe, max_pixels=1_000_000, max_request_pixels=6_000_000)
    img = _png(cv2.resize(testdata_bgr[2], (1000, 1000)))
    with ServerThread(app) as srv:
        r = httpx.post(f"{srv.url}/v1/detect/batch", files=[("files", (f"{i}.png", img)) for i in range(6)], headers=KEY, timeout=60)
    assert r.status_code == 200 and [x["width"] for x in r.json()] == [1000] * 6
    assert probe.held == [1_000_000] * 6  # never two decoded at once (the old service decoded all of them together)
    assert app.state.detection.budget.used == 0


def test_multipart_upload_never_reaches_disk(sub_server) -> None:
    """A 2.3 MB multipart upload, paused mid-body: no descriptor and no file of the server ever points into its $TMPDIR."""
    noise = np.random.default_rng(0).integers(0, 256, (800, 960, 3), dtype=np.uint8)
    image = _png(noise)
    assert len(image) > 2 * 1024 * 1024  # Starlette spooled anything over 1 MiB to a temporary file
    boundary = b"silhouette-test-boundary"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="f.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--" + boundary + b"--\r\n"
    )
    head = (
        f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\nConnection: close\r\n\r\n"
    ).encode()
    before = sorted(os.listdir(sub_server.tmpdir))
    seen: list[str] = []
    with socket.create_connection(("127.0.0.1", sub_server.port)) as s:
        s.sendall(head + body[: 1536 * 1024])  # 1.5 MiB in: past the point where a spooled part rolls over to disk
        for _ in range(20):
            time.sleep(0.05)
            seen += sub_server.open_files_under(sub_server.tmpdir)
        s.sendall(body[1536 * 1024 :])
        s.settimeout(30)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert seen == [], seen
    assert sorted(os.listdir(sub_server.tmpdir)) == before


def _huge_header_png(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height pixels (never decodable)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_every_oversized_image_is_413(fresh_app, testdata_bgr) -> None:
    """docs/deploy.md: larger than --max-pixels -> 413, also when Pillow's own bomb check fires first; too many images -> 413."""
    from silhouette.serve.server import ServerThread

    small = _frame_png(testdata_bgr, 0)
    with ServerThread(fresh_app(max_pixels=1_000_000, max_request_pixels=2_000_000)) as srv, httpx.Client(base_url=srv.url, timeout=30, headers=KEY) as c:
        bomb = c.post("/v1/detect", content=_huge_header_png(20_000, 20_000))  # 400 Mpx: past Pillow's own ceiling
        over = c.post("/v1/detect", content=_huge_header_png(1001, 1000))
        in_batch = c.post("/v1/detect/batch", files=[("files", ("a.png", small)), ("files", ("b.png", _huge_header_png(20_000, 20_000)))])
        request_px = c.post("/v1/detect/batch", files=[("files", (f"{i}.png", _huge_header_png(1000, 1000))) for i in range(3)])
        too_many = c.post("/v1/detect/batch", files=[("files", (f"{i}.png", small)) for i in range(70)])
        ok = c.post("/v1/detect/batch", files=[("files", (f"{i}.png", small)) for i in range(3)])
    assert bomb.status_code == 413 and "pixels" in bomb.json()["detail"], bomb.text
    assert over.status_code == 413 and "1001x1000" in over.json()["detail"]
    assert in_batch.status_code == 413 and in_batch.json()["detail"].startswith("image 1:")
    assert request_px.status_code == 413 and "--max-request-pixels" in request_px.json()["detail"]
    assert too_many.status_code == 413 and "64" in too_many.json()["detail"]
    assert ok.status_code == 200 and len(ok.json()) == 3


# ---------------------------------------------------------------------------------------------- logs


class _Lines(logging.Handler):
    """Every formatted log line (tracebacks included) of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += self.format(record).splitlines()


def test_client_dropping_mid_body_logs_one_line(fresh_app, testdata_bgr) -> None:
    """A keyed client that sends half a body and hangs up: one warning line, no traceback, and the service goes on."""
    from silhouette.serve.server import ServerThread

    lines = _Lines()
    loggers = [logging.getLogger(n) for n in ("silhouette", "uvicorn", "uvicorn.error", "uvicorn.asgi")]
    with ServerThread(fresh_app()) as srv:
        for lg in loggers:  # after the server started: uvicorn's logging setup runs when its Config is made
            lg.addHandler(lines)
        try:
            part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="f.png"\r\n\r\n'
            for ctype, start in (("image/png", b"\x89PNG"), ("multipart/form-data; boundary=xyz", part)):
                s = socket.create_connection(("127.0.0.1", srv.port))
                s.sendall(
                    f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: 200000\r\n\r\n".encode() + start + b"\0" * 20_000
                )
                time.sleep(0.3)
                s.close()
                time.sleep(0.5)  # a traceback, if any, is logged right after the disconnect
            ok = httpx.post(f"{srv.url}/v1/detect", content=_frame_png(testdata_bgr), headers=KEY, timeout=10)
        finally:
            for lg in loggers:
                lg.removeHandler(lines)
    assert ok.status_code == 200
    assert len(lines.lines) == 2, lines.lines  # one per dropped request
    assert all("closed by the client" in line and "/v1/detect" in line for line in lines.lines), lines.lines
    assert not any("Traceback" in line or "Exception" in line for line in lines.lines)


# ---------------------------------------------------------------------------------------------- exactly once


def _counted(srv, camera_id: str) -> int:  # noqa: ANN001
    r = httpx.get(f"{srv.url}/v1/counts/{camera_id}", headers=KEY, timeout=10)
    return int(r.json()["frames"]) if r.status_code == 200 else 0


def _metric(app, name: str) -> float:  # noqa: ANN001
    from prometheus_client import generate_latest

    for row in generate_latest(app.state.metrics.registry).decode().splitlines():
        if row.startswith(name + " "):
            return float(row.split()[1])
    raise AssertionError(f"no metric {name}")


def test_repeated_idempotency_key_is_counted_once_with_the_same_answer(fresh_app, testdata_bgr) -> None:
    """Repeats of (camera, key) replay the first answer and count nothing; bad or reused keys are refused."""
    from silhouette.serve.server import ServerThread

    app = fresh_app()
    frame, other = _frame_png(testdata_bgr, 2), _frame_png(testdata_bgr, 0)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30, headers=KEY) as c:
        post = lambda key, body=frame, cam="idem", **kw: c.post(  # noqa: E731
            "/v1/detect", content=body, params={"camera_id": cam}, headers={"Idempotency-Key": key, "content-type": "image/png"}, **kw
        )
        first, again, third = post("cam1:frame:17"), post("cam1:frame:17"), post("cam1:frame:17")
        multi = [c.post("/v1/detect", files={"file": ("f.png", frame)}, params={"camera_id": "idem-m"}, headers={"Idempotency-Key": "k"}) for _ in range(2)]
        new_key = post("cam1:frame:18")
        other_cam = post("cam1:frame:17", cam="idem-2")
        reused = post("cam1:frame:17", body=other)
        bad = [post("x" * 201), c.post("/v1/detect", content=frame, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]),
               c.post("/v1/detect", content=frame, headers={"Idempotency-Key": b"caf\xe9"})]
        counted = {cam: _counted(srv, cam) for cam in ("idem", "idem-2", "idem-m")}
    assert first.status_code == again.status_code == third.status_code == 200
    assert first.content == again.content == third.content  # byte for byte the first answer
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert multi[0].status_code == multi[1].status_code == 200 and multi[1].headers["idempotent-replayed"] == "true"
    assert new_key.status_code == other_cam.status_code == 200 and "idempotent-replayed" not in other_cam.headers
    assert reused.status_code == 422 and "Idempotency-Key" in reused.json()["detail"]
    assert [b.status_code for b in bad] == [400, 400, 400] and all("Idempotency-Key" in b.json()["detail"] for b in bad)
    assert counted == {"idem": 2, "idem-2": 1, "idem-m": 1}  # frames 17 and 18; 17 again on another camera; multipart
    assert _metric(app, "silhouette_images_total") == 4 and _metric(app, "silhouette_idempotent_replays_total") == 3


def test_concurrent_duplicates_are_processed_and_counted_once(fresh_app, testdata_bgr) -> None:
    """The duplicate arrives while the first request waits in the detector queue: it waits for that answer."""
    from silhouette.serve.server import ServerThread
    app = fresh_app(batch_size=2, batch_wait_ms=1500)
    frame = _frame_png(testdata_bgr, 2)
    answers: dict[str, httpx.Response] = {}
    with ServerThread(app) as srv:

        def post(name: str) -> None:
            answers[name] = httpx.post(
                f"{srv.url}/v1/detect", content=frame, params={"camera_id": "dup"},
                headers={**KEY, "Idempotency-Key": "dup:frame:1", "content-type": "image/png"}, timeout=30,
            )

        first = threading.Thread(target=post, args=("first",))
        first.start()
        replies = app.state.detection.replies
        deadline = time.monotonic() + 10
        while len(replies) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first request has claimed its key
        assert len(replies) == 1 and not first.join(0) and first.is_alive()  # in flight
        post("second")
        first.join(30)
        counted = _counted(srv, "dup")
    a, b = answers["first"], answers["second"]
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert b.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in a.headers
    assert counted == 1
    assert _metric(app, "silhouette_images_total") == 1
    assert _metric(app, "silhouette_detector_batch_size_count") == 1  # the duplicate never reached the detector


def test_idempotency_header_is_documented(fresh_app) -> None:
    """The Idempotency-Key header is part of both detect operations and of the service description in OpenAPI."""
    spec = fresh_app().openapi()
    for path in ("/v1/detect", "/v1/detect/batch"):
        params = {p["name"]: p for p in spec["paths"][path]["post"]["parameters"]}
        assert params["Idempotency-Key"]["in"] == "header" and "once" in params["Idempotency-Key"]["description"]
    assert "Idempotency-Key" in spec["info"]["description"]


def test_pixel_limit_defaults_come_from_imaging() -> None:
    """The single-image limit is silhouette.imaging.MAX_PIXELS everywhere; DEFAULT_MAX_PIXELS stays as its alias."""
    import inspect

    from silhouette.imaging import MAX_PIXELS, decode_frame, probe_frame
    from silhouette.serve.app import create_app
    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.limits import DEFAULT_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS == MAX_PIXELS == ServiceConfig().max_pixels
    for fn in (create_app, decode_frame, probe_frame):
        assert inspect.signature(fn).parameters["max_pixels"].default == MAX_PIXELS
