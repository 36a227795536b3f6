"""Several cameras in one client, capture time and obfuscator headers, and the on-disk spool that rides out outages.

Real services on loopback: an in-process ServerThread for the client-side checks, and `silhouette serve` in its own
process for the test that SIGKILLs the service mid-stream (with `--db sqlite:///...` once the service has --db;
until then the in-memory service, wrapped to log every answered frame to a file that survives the SIGKILL).
"""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from silhouette.wire import CAPTURE_TIME_HEADER, IDEMPOTENCY_HEADER, OBFUSCATOR_HEADER

VIDEO = ("data", "pets2009", "vtest.avi")
FRAMES = ("weights", "testdata")


def _free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entries(folder: Path) -> list[Path]:
    """The spool entries of one camera folder, oldest first."""
    return sorted(folder.glob("*.frame")) if folder.is_dir() else []


class Recorder:
    """ASGI wrapper in front of the real app: records each /v1/detect request (camera, headers, body) and its status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/detect":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p)
        rec: dict[str, Any] = {"camera": query.get("camera_id"), "headers": headers, "body": b"", "status": None}
        self.requests.append(rec)

        async def recv() -> dict:
            msg = await receive()
            if msg["type"] == "http.request":
                rec["body"] += msg.get("body", b"")
            return msg

        async def snd(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                rec["status"] = msg["status"]
                rec["replayed"] = any(k.lower() == b"idempotent-replayed" for k, _ in msg.get("headers", []))
            await send(msg)

        await self.app(scope, recv, snd)

    def delivered(self, camera: str) -> list[dict[str, Any]]:
        """The camera's requests answered 200, in arrival order."""
        return [r for r in self.requests if r["camera"] == camera and r["status"] == 200]


@pytest.fixture(scope="module")
def local_obf(onnx_path: Path) -> Any:
    """The obfuscator the client runs (same ONNX file), to recompute what each frame must look like on the wire."""
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner

    return EdgeObfuscator(load_runner(onnx_path, "onnx"), (320, 200))


@pytest.fixture(scope="module")
def video_frames(shared: Path) -> list[np.ndarray]:
    """The first 12 full-resolution frames of the PETS clip (the source the client reads)."""
    from silhouette.data.sources import iter_frames

    frames = []
    for frame in iter_frames(str(shared.joinpath(*VIDEO))):
        frames.append(frame.image)
        if len(frames) == 12:
            break
    return frames


def _key_index(key: str) -> int:
    """The frame index at the end of an Idempotency-Key (camera:run:index)."""
    return int(key.rsplit(":", 1)[1])


def _balanced(s: dict) -> bool:
    """Every frame is accounted for: captured + found in the spool = delivered + failed + lost + left in the spool."""
    return s["frames"] + s["carried"] == s["sent"] + s["failed"] + s["lost"] + s["left"]


def _edge(*argv: str, onnx: Path, spool: Path) -> list[str]:
    """argv of `silhouette edge` with the test obfuscator, one thread and a short backoff."""
    return ["edge", *argv, "--checkpoint", str(onnx), "--threads", "1", "--spool", str(spool),
            "--backoff", "0.05", "--max-backoff", "0.3"]


# --- configuration: one-line errors before anything starts --------------------------------------------------------


@pytest.mark.parametrize(("extra", "needle"), [
    (["--source", "A", "--camera-id", "x", "--source", "B", "--camera-id", "x"], "camera id 'x' is given to two sources"),
    (["--source", "A", "--source", "B", "--camera-id", "x"], "2 --source but 1 --camera-id"),
    (["--source", "A", "--camera-id", "bad id"], "--camera-id 'bad id'"),
    ([], "give --source SRC"),
    (["--source", "A", "--source", "MISSING"], "source not found"),
    (["--source", "A", "--retries", "2"], "--retries"),
    (["--source", "A", "--spool-max-mb", "0"], "--spool-max-mb"),
    (["--fleet", "FLEET_DUP"], "camera id 'gate' is given to two sources"),
    (["--fleet", "FLEET_KEY"], "unknown key 'fps'"),
    (["--fleet", "FLEET_DUP", "--source", "A"], "--fleet lists the cameras"),
])
def test_bad_fleet_configuration_is_one_line_before_anything_starts(extra: list[str], needle: str, shared: Path,
                                                                    onnx_path: Path, tmp_path: Path, capsys) -> None:
    from silhouette.cli import main

    src = str(shared.joinpath(*FRAMES))
    (tmp_path / "dup.yaml").write_text(f"cameras:\n  - {{camera_id: gate, source: {src}}}\n  - {{camera_id: gate, source: {src}}}\n")
    (tmp_path / "key.yaml").write_text(f"cameras:\n  - {{camera_id: gate, source: {src}, fps: 2}}\n")
    names = {"A": src, "B": src, "MISSING": str(tmp_path / "nope.mp4"), "FLEET_DUP": str(tmp_path / "dup.yaml"),
             "FLEET_KEY": str(tmp_path / "key.yaml")}
    argv = _edge(*[names.get(a, a) for a in extra], "--server", f"http://127.0.0.1:{_free_port()}", onnx=onnx_path,
                 spool=tmp_path / "spool")
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("silhouette")]
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "spool").exists()  # nothing started: no spool folder, no model, no frame


# --- the spool on its own ----------------------------------------------------------------------------------------


def test_spool_is_private_bounded_oldest_first_and_survives_reopening(tmp_path: Path) -> None:
    from silhouette.edge.spool import Spool, pack

    meta = {"camera_id": "c", "headers": {IDEMPOTENCY_HEADER: "c:r:0"}}
    one = len(pack(meta, b"x" * 1000))
    spool = Spool(tmp_path / "root" / "c", max_bytes=3 * one + 10, camera_id="c")
    assert stat.S_IMODE((tmp_path / "root" / "c").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == 0o700
    results = [spool.put(seq, meta, bytes([seq]) * 1000) for seq in range(5)]
    assert results == [(True, 0), (True, 0), (True, 0), (True, 1), (True, 1)]  # the oldest made room, one at a time
    assert spool.seqs() == [2, 3, 4] and spool.bytes == 3 * one
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in _entries(spool.folder))
    assert spool.put(1, meta, b"y" * 1000) == (False, 1)  # older than everything kept: it is the one dropped
    assert spool.put(9, meta, b"z" * 10 * one) == (False, 1)  # larger than the whole spool
    spool.close()
    again = Spool(tmp_path / "root" / "c", max_bytes=3 * one + 10)
    assert again.seqs() == [2, 3, 4] and again.next_seq() == 5
    assert again.read(3).payload == bytes([3]) * 1000 and again.read(3).meta == meta
    again.close()


def test_spool_sweeps_temporary_files_refuses_a_second_client_and_detects_broken_entries(tmp_path: Path) -> None:
    from silhouette.edge.spool import Spool, SpoolError
    from silhouette.errors import SilhouetteError

    spool = Spool(tmp_path / "c", max_bytes=1 << 20)
    spool.put(0, {"camera_id": "c"}, b"payload")
    with pytest.raises(SilhouetteError, match="in use by another silhouette edge") as exc:
        Spool(tmp_path / "c", max_bytes=1 << 20)
    assert "\n" not in str(exc.value)
    spool.close()
    # what a client killed inside a write leaves: a temporary file (never an entry; renames are atomic)
    (tmp_path / "c" / ".tmp-00000000000000000001-deadbeef").write_bytes(b"SILHOUETTE-SPOOL 1\n{\"cam")
    # and, for the disk-fault path, an entry cut short
    whole = (tmp_path / "c" / "00000000000000000000.frame").read_bytes()
    (tmp_path / "c" / "00000000000000000002.frame").write_bytes(whole[:-3])
    again = Spool(tmp_path / "c", max_bytes=1 << 20)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        ".lock", "00000000000000000000.frame", "00000000000000000002.frame"]
    assert again.read(0).payload == b"payload"
    with pytest.raises(SpoolError):
        again.read(2)
    again.close()


# --- several cameras in one process -------------------------------------------------------------------------------


@pytest.fixture
def recording_server(detector: Any) -> Iterator[tuple[Any, Recorder]]:
    """The real service (in memory, no auth) behind a Recorder, on a loopback port."""
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    rec = Recorder(create_app("yolox_nano", None, detector=detector))
    srv = ServerThread(rec).start()
    yield srv, rec
    srv.stop()


def test_two_cameras_in_one_process_arrive_with_their_ids_in_capture_order(
        recording_server, shared: Path, onnx_path: Path, local_obf: Any, video_frames: list[np.ndarray],
        testdata_bgr: list[np.ndarray], tmp_path: Path, capsys) -> None:
    from silhouette.cli import main
    from silhouette.edge.checkpoint import file_digest
    from silhouette.imaging import encode_frame

    srv, rec = recording_server
    report = tmp_path / "r.json"
    t0 = time.time()
    rc = main(_edge("--source", str(shared.joinpath(*FRAMES)), "--camera-id", "cam-a", "--source",
                    str(shared.joinpath(*VIDEO)), "--camera-id", "cam-b", "--max-frames", "5", "--server", srv.url,
                    "--report", str(report), onnx=onnx_path, spool=tmp_path / "spool"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "camera cam-a: 3 frames, 3 delivered, 0 failed" in out and "camera cam-b: 5 frames, 5 delivered" in out
    assert "summary: 8 frames, 8 delivered, 0 failed, 0 spooled, 0 lost, 0 left" in out
    originals = {"cam-a": testdata_bgr, "cam-b": video_frames}
    for cam, n in (("cam-a", 3), ("cam-b", 5)):
        got = rec.delivered(cam)
        assert [_key_index(r["headers"][IDEMPOTENCY_HEADER.lower()]) for r in got] == list(range(n))  # capture order
        times = [float(r["headers"][CAPTURE_TIME_HEADER.lower()]) for r in got]
        assert times == sorted(times) and t0 - 1 < times[0] and times[-1] < time.time()
        assert all(len(r["headers"][CAPTURE_TIME_HEADER.lower()].split(".")[1]) == 3 for r in got)  # milliseconds
        assert {r["headers"][OBFUSCATOR_HEADER.lower()] for r in got} == {file_digest(onnx_path)}
        for r, image in zip(got, originals[cam]):  # the bytes sent are the obfuscator's output, nothing else
            assert r["body"] == encode_frame(local_obf(image), "png", 90)
        assert httpx.get(f"{srv.url}/v1/counts/{cam}", timeout=10).json()["frames"] == n
    data = json.loads(report.read_text())
    assert data["sent"] == 8 and set(data["cameras"]) == {"cam-a", "cam-b"} and data["cameras"]["cam-b"]["sent"] == 5


# --- outages: the spool ------------------------------------------------------------------------------------------


def test_unreachable_service_fills_a_bounded_spool_with_obfuscated_frames_only(
        shared: Path, onnx_path: Path, local_obf: Any, video_frames: list[np.ndarray], tmp_path: Path, capsys) -> None:
    from silhouette.cli import main
    from silhouette.edge.spool import Spool
    from silhouette.imaging import encode_frame, resize_frame

    one = len(encode_frame(local_obf(video_frames[0]), "png", 90))
    report = tmp_path / "r.json"
    t0 = time.monotonic()
    rc = main(_edge("--source", str(shared.joinpath(*VIDEO)), "--camera-id", "cam-s", "--max-frames", "8",
                    "--server", f"http://127.0.0.1:{_free_port()}", "--retry-for", "0", "--report", str(report),
                    "--spool-max-mb", f"{3.5 * one / 2**20:.4f}", "--quiet", onnx=onnx_path, spool=tmp_path / "spool"))
    assert rc == 1 and time.monotonic() - t0 < 60
    s = json.loads(report.read_text())
    assert (s["frames"], s["sent"], s["spooled"], s["left"], s["lost"], s["failed"]) == (8, 0, 8, 3, 5, 0), s
    assert _balanced(s)
    assert "5 lost, 3 left in the spool" in capsys.readouterr().out
    spool = Spool(tmp_path / "spool" / "cam-s", 1 << 30)
    kept = [spool.read(seq) for seq in spool.seqs()]
    spool.close()
    kept_idx = [e.meta["index"] for e in kept]
    # the newest frames stay, the oldest are dropped first; only the entry the sender is retrying at that moment is
    # spared (Spool.inflight), and which one that is depends on thread timing, so the third may be an older frame
    assert len(kept_idx) == 3 and kept_idx == sorted(kept_idx) and kept_idx[-2:] == [6, 7], kept_idx
    for entry in kept:
        original = video_frames[entry.meta["index"]]
        assert entry.payload == encode_frame(local_obf(original), "png", 90)
        for plain in (original, resize_frame(original, (320, 200))):
            assert entry.payload not in (encode_frame(plain, "png", 90), encode_frame(plain, "jpg", 90))
        h = entry.meta["headers"]
        assert entry.meta["camera_id"] == "cam-s" and h[IDEMPOTENCY_HEADER].startswith("cam-s:")
        assert float(h[CAPTURE_TIME_HEADER]) > 0 and h[OBFUSCATOR_HEADER] and "X-API-Key" not in h


def _start_edge(argv: list[str], cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """`silhouette edge` in its own process; its stdout lines are collected as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "silhouette", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def _wait(what: str, done: Any, timeout: float, proc: subprocess.Popen | None = None, lines: list | None = None) -> None:
    """Poll `done()` until true; fail with `what` (and the process's output) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            pytest.fail(f"timed out waiting for {what}; output:\n{''.join(lines or [])[-3000:]}", pytrace=False)
        time.sleep(0.1)


def test_client_killed_and_restarted_replays_its_spool_first(
        recording_server, shared: Path, onnx_path: Path, local_obf: Any, video_frames: list[np.ndarray],
        tmp_path: Path, capsys) -> None:
    from silhouette.cli import main
    from silhouette.edge.spool import unpack
    from silhouette.imaging import encode_frame

    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{_free_port()}"  # nobody listens: every frame goes to the spool
    proc, lines = _start_edge(_edge("--source", str(shared.joinpath(*VIDEO)), "--camera-id", "cam-k", "--max-fps", "4",
                                    "--max-frames", "12", "--server", down, onnx=onnx_path, spool=spool), tmp_path)
    try:
        _wait("4 spooled frames", lambda: len(_entries(spool / "cam-k")) >= 4, 90, proc, lines)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream, possibly inside a write
        proc.wait(timeout=30)
    assert stat.S_IMODE((spool / "cam-k").stat().st_mode) == 0o700
    spooled = [unpack(p.read_bytes()) for p in _entries(spool / "cam-k")]  # every entry is whole
    indices = [meta["index"] for meta, _ in spooled]
    assert indices == list(range(len(spooled))) and len(spooled) < 12
    for meta, payload in spooled:
        assert payload == encode_frame(local_obf(video_frames[meta["index"]]), "png", 90)
    (spool / "cam-k" / ".tmp-00000000000000000099-0badf00d").write_bytes(b"half an entry")  # a write cut short

    srv, rec = recording_server
    report = tmp_path / "r.json"
    rc = main(_edge("--source", str(shared.joinpath(*FRAMES)), "--camera-id", "cam-k", "--server", srv.url,
                    "--report", str(report), onnx=onnx_path, spool=spool))
    out = capsys.readouterr().out
    assert rc == 0, out
    s = json.loads(report.read_text())
    n = len(spooled)
    assert (s["frames"], s["carried"], s["replayed"], s["sent"], s["left"], s["lost"]) == (3, n, n, n + 3, 0, 0), s
    assert _balanced(s)
    got = rec.delivered("cam-k")
    old_keys = [meta["headers"][IDEMPOTENCY_HEADER] for meta, _ in spooled]
    assert [r["headers"][IDEMPOTENCY_HEADER.lower()] for r in got[:n]] == old_keys  # the spool first, in order
    assert [r["body"] for r in got[:n]] == [payload for _, payload in spooled]
    assert [_key_index(r["headers"][IDEMPOTENCY_HEADER.lower()]) for r in got[n:]] == [0, 1, 2]
    assert not any(r["headers"][IDEMPOTENCY_HEADER.lower()] in old_keys for r in got[n:])  # a new run, new keys
    assert sorted(p.name for p in (spool / "cam-k").iterdir()) == [".lock"]  # replayed, deleted, temp file swept
    assert f"{n} frame(s) from an earlier run's spool, {n} of them delivered" in out


# --- the service SIGKILLed mid-stream ----------------------------------------------------------------------------

# The in-memory service for a service without --db: the real app, logging each answered frame to a file with one
# write() per line, which the kernel keeps when the process is SIGKILLed right after
RECORDING_SERVICE = """
import json, os, sys
import uvicorn
from silhouette.serve.app import create_app

app = create_app("yolox_nano", None, threads=1)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

async def recording(scope, receive, send):
    if scope["type"] != "http" or scope["path"] != "/v1/detect":
        return await app(scope, receive, send)
    h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    camera = scope["query_string"].decode().partition("camera_id=")[2].split("&")[0]

    async def answered(msg):
        if msg["type"] == "http.response.start" and msg["status"] == 200:
            replayed = any(k.lower() == b"idempotent-replayed" for k, _ in msg.get("headers", []))
            line = {"camera": camera, "key": h.get("idempotency-key"), "captured": h.get("x-capture-time"),
                    "obfuscator": h.get("x-silhouette-obfuscator"), "replayed": replayed}
            os.write(fd, (json.dumps(line) + "\\n").encode())
        await send(msg)

    await app(scope, receive, answered)

uvicorn.run(recording, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _serve_has_db() -> bool:
    """Whether `silhouette serve` stores detections in a database (--db) yet."""
    done = subprocess.run([sys.executable, "-m", "silhouette", "serve", "--help"], capture_output=True, text=True, timeout=120)
    return "--db" in done.stdout


class Service:
    """`silhouette serve --no-auth` in its own process (with --db when it has one), killable and restartable on one port."""

    def __init__(self, folder: Path, use_db: bool) -> None:
        self.folder, self.port = folder, _free_port()
        self.db = f"sqlite:///{folder / 'counts.db'}" if use_db else None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "answered.jsonl"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start on the same port and wait until /healthz answers."""
        if self.db:
            cmd = [sys.executable, "-m", "silhouette", "serve", "--no-auth", "--port", str(self.port), "--threads", "1",
                   "--db", self.db]
        else:
            cmd = [sys.executable, "-c", RECORDING_SERVICE, str(self.port), str(self.log)]
        with open(self.folder / "serve.out", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(f"the service on {self.url}", healthy, 120, self.proc)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests die with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stored(self, camera: str) -> list[dict[str, Any]]:
        """What the service counted for `camera`, in the order it counted it: key, capture time, obfuscator."""
        if self.db:
            from silhouette.serve.storage import CountStore

            with CountStore(self.db) as store:
                rows = sorted(store.recent(camera, 1_000_000), key=lambda d: d.id)
                assert [c.frames for c in store.cameras(camera)] == [len(rows)]
            return [{"key": d.idempotency_key, "captured": d.captured_at, "obfuscator": d.obfuscator_id} for d in rows]
        lines = [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []
        return [x for x in lines if x["camera"] == camera and not x["replayed"]]


@pytest.mark.timeout(400)
def test_service_killed_midstream_and_restarted_counts_every_frame_exactly_once(
        shared: Path, onnx_path: Path, tmp_path: Path) -> None:
    from silhouette.edge.checkpoint import file_digest

    use_db = _serve_has_db()
    svc = Service(tmp_path, use_db)
    fleet = tmp_path / "fleet.yaml"
    video = str(shared.joinpath(*VIDEO))
    fleet.write_text(f"cameras:\n  - {{camera_id: cam-1, source: {video}, max_frames: 36}}\n"
                     f"  - {{camera_id: cam-2, source: {video}, every: 3, max_frames: 24}}\n")
    spool, report = tmp_path / "spool", tmp_path / "r.json"
    svc.start()
    proc, lines = _start_edge(_edge("--fleet", str(fleet), "--max-fps", "4", "--server", svc.url, "--retry-for", "120",
                                    "--report", str(report), onnx=onnx_path, spool=spool), tmp_path)
    try:
        _wait("frames delivered before the kill", lambda: sum("person(s)" in x for x in lines) >= 6, 120, proc, lines)
        svc.kill()
        _wait("frames spooled during the outage", lambda: sum(len(_entries(spool / c)) for c in ("cam-1", "cam-2")) >= 6,
              60, proc, lines)
        svc.start()  # same port; the client finds it again and sends its spool, oldest first
        proc.wait(timeout=180)
        # the service's own answer (the database's counts; an in-memory service lost what came before the kill)
        served = {cam: httpx.get(f"{svc.url}/v1/counts/{cam}", timeout=10).json()["frames"] for cam in ("cam-1", "cam-2")}
    finally:
        if proc.poll() is None:
            proc.kill()
        svc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out[-3000:]
    s = json.loads(report.read_text())
    assert s["spooled"] >= 6 and s["lost"] == s["failed"] == s["left"] == 0 and s["sent"] == s["frames"] == 36 + 24, s
    assert _balanced(s) and all(_balanced(c) for c in s["cameras"].values())
    for cam, n, every in (("cam-1", 36, 1), ("cam-2", 24, 3)):
        stored = svc.stored(cam)
        keys = [x["key"] for x in stored]
        expected = [f"{cam}:{s['run_id']}:{i * every}" for i in range(n)]
        # zero lost, zero stored twice (the database's unique key; in memory, a frame answered by the killed
        # service may be counted again by the new one if its answer died with it), in capture order
        assert sorted(set(keys), key=_key_index) == expected
        dupes = len(keys) - len(set(keys))
        assert dupes == 0 if use_db else dupes <= 1, keys
        firsts = list(dict.fromkeys(keys))
        assert firsts == expected, "frames were stored out of capture order"
        captured = [float(x["captured"]) for x in {x["key"]: x for x in reversed(stored)}.values()]
        assert all(t > 1e9 for t in captured) and {x["obfuscator"] for x in stored} == {file_digest(onnx_path)}
    if use_db:
        assert served == {"cam-1": 36, "cam-2": 24}
    assert not _entries(spool / "cam-1") and not _entries(spool / "cam-2")
    print(f"service with {'--db ' + str(svc.db) if use_db else 'no --db (in-memory, answered-frame log)'}; "
          f"{s['spooled']} frames spooled during the outage, {s['retries']} failed tries")


def test_spooled_frames_the_service_refuses_for_good_are_deleted_and_counted_failed(
        detector: Any, shared: Path, onnx_path: Path, tmp_path: Path, capsys) -> None:
    from silhouette.cli import main
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    spool = tmp_path / "spool"
    argv = ["--source", str(shared.joinpath(*FRAMES)), "--camera-id", "cam-r", "--quiet", "--report", str(tmp_path / "r.json")]
    assert main(_edge(*argv, "--server", f"http://127.0.0.1:{_free_port()}", "--retry-for", "0", onnx=onnx_path, spool=spool)) == 1
    assert len(_entries(spool / "cam-r")) == 3
    rec = Recorder(create_app("yolox_nano", None, detector=detector, max_bytes=2000))  # every frame is too large: 413
    with ServerThread(rec) as srv:
        rc = main(_edge(*argv, "--max-frames", "1", "--server", srv.url, onnx=onnx_path, spool=spool))
    s = json.loads((tmp_path / "r.json").read_text())
    assert rc == 1 and (s["carried"], s["frames"], s["sent"], s["failed"], s["left"]) == (3, 1, 0, 4, 0), s
    assert _balanced(s)
    assert [r["status"] for r in rec.requests] == [413] * 4  # one try each: retrying the same bytes cannot help
    assert not _entries(spool / "cam-r")
    capsys.readouterr()
