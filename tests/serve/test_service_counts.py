"""Counts in a real database, in the running service: restarts, workers, exactly-once, queries, CSV, retention.

Real servers on loopback (ServerThread, and `silhouette serve --workers 2` subprocesses) on a SQLite file and on
PostgreSQL (tests/serve/pg_cluster.py: skipped without PostgreSQL locally, a failure under CI=true).
"""

from __future__ import annotations

import csv
import io
import math
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import httpx
import numpy as np
import pytest

from silhouette.serve.app import create_app
from silhouette.serve.server import ServerThread
from serve_process import ServeProcess
from silhouette.serve.storage import CountStore

API_KEY = "test-key-0123456789"
KEY = {"X-API-Key": API_KEY}
DAY = 86400.0
pytestmark = pytest.mark.timeout(300)  # every wait below is bounded; this only guards against a hung server


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _post(c: httpx.Client, body: bytes, camera: str | None, key: str | None = None, path: str = "/v1/detect",
          **headers: str) -> httpx.Response:
    """POST one frame as the edge client does: raw PNG body, camera in the query, optional key and headers."""
    hdrs = {"content-type": "image/png", **({"Idempotency-Key": key} if key else {}), **headers}
    return c.post(path, content=body, params={"camera_id": camera} if camera else {}, headers=hdrs)


def _snapshot(c: httpx.Client, cameras: list[str]) -> dict[str, Any]:
    """Everything the count endpoints answer about `cameras`."""
    return {
        "cameras": c.get("/v1/cameras").json(),
        "counts": {cam: c.get(f"/v1/counts/{cam}").json() for cam in cameras},
        "hourly": {cam: c.get(f"/v1/counts/{cam}", params={"from": 0, "bucket": "1h"}).json() for cam in cameras},
        "csv": {cam: c.get(f"/v1/counts/{cam}.csv").text for cam in cameras},
    }


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture()
def app_on(detector: Any) -> Callable[..., Any]:
    """A new service app around the session's YOLOX-Nano on the count store `db` (URL or CountStore)."""
    return lambda db, **kw: create_app("yolox_nano", API_KEY, detector=detector, db=db, **kw)


# ------------------------------------------------------------------------------------------ one process, restarts


def test_counts_survive_a_restart(db_url: str, app_on: Callable[..., Any], testdata_bgr: list[np.ndarray]) -> None:
    """Frames recorded, the server stopped, a new app on the same database: identical answers, and an old key replays."""
    frames = [_png(f) for f in testdata_bgr]
    with ServerThread(app_on(db_url)) as srv, httpx.Client(base_url=srv.url, headers=KEY, timeout=60) as c:
        first = [_post(c, f, "gate", f"gate:run1:{i}") for i, f in enumerate(frames)]
        assert _post(c, frames[0], "lobby").status_code == 200  # without a key: counted every time
        before = _snapshot(c, ["gate", "lobby"])
    with ServerThread(app_on(db_url)) as srv, httpx.Client(base_url=srv.url, headers=KEY, timeout=60) as c:
        after = _snapshot(c, ["gate", "lobby"])
        retry = _post(c, frames[1], "gate", "gate:run1:1")  # the edge retrying across the restart
        after_retry = _snapshot(c, ["gate", "lobby"])
        images = srv.app.state.metrics.images._value.get()
    assert [r.status_code for r in first] == [200, 200, 200]
    assert before == after == after_retry
    assert [c["id"] for c in before["cameras"]["cameras"]] == ["gate", "lobby"]
    assert before["counts"]["gate"]["frames"] == 3 and before["counts"]["gate"]["last"] == first[2].json()["count"]
    assert len(_rows(before["csv"]["gate"])) == 3
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first[1].content  # byte for byte the first answer, from the database
    assert images == 0  # the restarted service answered the retry without running the detector


def test_two_apps_on_one_database_count_each_key_once(tmp_path: Path, app_on: Callable[..., Any],
                                                      testdata_bgr: list[np.ndarray]) -> None:
    """Two apps (two workers) on one store: a key answered by one is replayed by the other, for single and batch."""
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    frames = [_png(f) for f in testdata_bgr]
    batch = [("files", (f"{i}.png", f, "image/png")) for i, f in enumerate(frames)]
    with ServerThread(app_on(url)) as a, ServerThread(app_on(url)) as b, \
            httpx.Client(base_url=a.url, headers=KEY, timeout=60) as ca, httpx.Client(base_url=b.url, headers=KEY, timeout=60) as cb:
        one_a, one_b = _post(ca, frames[0], "cam", "k1"), _post(cb, frames[0], "cam", "k1")
        many_a = ca.post("/v1/detect/batch", files=batch, params={"camera_id": "cam"}, headers={"Idempotency-Key": "b1"})
        many_b = cb.post("/v1/detect/batch", files=batch, params={"camera_id": "cam"}, headers={"Idempotency-Key": "b1"})
        reused = [_post(cb, frames[2], "cam", "k1"), _post(cb, frames[0], "cam", "b1"), _post(cb, frames[1], "cam", "b1#1")]
        counted = cb.get("/v1/counts/cam").json()["frames"]
        keys = [r["idempotency_key"] for r in _rows(ca.get("/v1/counts/cam.csv").text)]
        ran_b = b.app.state.metrics.images._value.get()
    assert one_a.status_code == one_b.status_code == many_a.status_code == many_b.status_code == 200
    assert one_b.content == one_a.content and one_b.headers["idempotent-replayed"] == "true"
    assert many_b.content == many_a.content and many_b.headers["idempotent-replayed"] == "true"
    assert [r["count"] for r in many_a.json()] == [len(r["boxes"]) for r in many_a.json()]
    assert ran_b == 0  # worker b never ran the detector: every answer came from the store
    # another request under a used key is refused by a worker that never saw it (no in-memory state involved)
    assert [r.status_code for r in reused] == [422, 422, 422] and "Idempotency-Key" in reused[0].json()["detail"]
    assert counted == 4 and keys == ["k1", "b1", "b1#1", "b1#2"]


def test_frame_headers_are_stored_and_checked(tmp_path: Path, app_on: Callable[..., Any],
                                              testdata_bgr: list[np.ndarray]) -> None:
    """X-Capture-Time and X-Silhouette-Obfuscator are stored (null without them); bad ones are 400, stored nothing."""
    frame = _png(testdata_bgr[0])
    with ServerThread(app_on(f"sqlite:///{tmp_path / 'c.db'}")) as srv, \
            httpx.Client(base_url=srv.url, headers=KEY, timeout=60) as c:
        ok = _post(c, frame, None, "k1", **{"X-Capture-Time": "1714564800.25", "X-Silhouette-Obfuscator": "obf_w025-3f2a9c"})
        bare = _post(c, frame, "cam2")
        bad = [_post(c, frame, "cam2", **h) for h in (
            {"X-Capture-Time": "yesterday"}, {"X-Capture-Time": "nan"}, {"X-Capture-Time": "-5"},
            {"X-Capture-Time": "1e12"}, {"X-Silhouette-Obfuscator": "x" * 129})]
        bad.append(c.post("/v1/detect", content=frame, headers={"X-Silhouette-Obfuscator": b"caf\xe9"}))
        bad.append(c.post("/v1/detect", content=frame, headers=[("X-Capture-Time", "1"), ("X-Capture-Time", "2")]))
        cams = [(x["id"], x["frames"]) for x in c.get("/v1/cameras").json()["cameras"]]
        stored, plain = _rows(c.get("/v1/counts/default.csv").text), _rows(c.get("/v1/counts/cam2.csv").text)
    assert ok.status_code == bare.status_code == 200 and ok.json()["camera_id"] is None  # as given: none
    assert [b.status_code for b in bad] == [400] * 7, [b.text for b in bad]
    assert all("\n" not in b.json()["detail"] and "X-" in b.json()["detail"] for b in bad)
    assert cams == [("cam2", 1), ("default", 1)]  # no camera_id: stored as camera 'default'
    row = stored[0]
    assert (row["captured_at"], row["obfuscator_id"], row["detector_id"], row["idempotency_key"]) == (
        "2024-05-01T12:00:00.250Z", "obf_w025-3f2a9c", "yolox_nano", "k1")
    assert int(row["count"]) == ok.json()["count"] and row["boxes"].startswith("[[")
    assert (plain[0]["captured_at"], plain[0]["obfuscator_id"], plain[0]["idempotency_key"]) == ("", "", "")


# ------------------------------------------------------------------------------------------ queries and retention


def _seed(url: str, now: float) -> float:
    """Back-dated frames of camera 'yard' as an earlier run left them; returns the hour they start (3 hours ago)."""
    t0 = math.floor(now / 3600) * 3600 - 3 * 3600
    with CountStore(url) as store:
        for age_days, count in ((40, 9), (31, 8), (2, 5)):
            store.record("yard", count, [], [], "yolox_nano", received_at=now - age_days * DAY)
        for dt, count in ((10, 2), (70, 4), (130, 6), (3700, 1)):
            store.record("yard", count, [[1, 2, 3, 4]] * count, [0.5] * count, "yolox_nano", received_at=t0 + dt,
                         idempotency_key=f"yard:{dt}")
    return t0


def _iso(t: float, hours: int = 0) -> str:
    """`t` as ISO 8601 in a zone `hours` east of UTC ('Z' for UTC)."""
    text = datetime.fromtimestamp(t, timezone(timedelta(hours=hours))).isoformat()
    return text.replace("+00:00", "Z")


def test_ranges_buckets_csv_and_retention(db_url: str, app_on: Callable[..., Any]) -> None:
    """from/to (unix or ISO), bucket, CSV both ways, the camera list; --keep-days prunes at start-up, 0 keeps all."""
    t0 = _seed(db_url, time.time())
    with ServerThread(app_on(db_url, keep_days=0)) as srv, httpx.Client(base_url=srv.url, headers=KEY, timeout=30) as c:
        plain = c.get("/v1/counts/yard").json()
        minutes = c.get("/v1/counts/yard", params={"from": t0, "to": t0 + 3600, "bucket": "1m"}).json()
        hours = c.get("/v1/counts/yard", params={"from": _iso(t0), "to": _iso(t0 + 7200, 2), "bucket": "1h"}).json()
        naive = c.get("/v1/counts/yard", params={"from": _iso(t0).rstrip("Z"), "bucket": "90"}).json()
        csv_path = c.get("/v1/counts/yard.csv", params={"from": t0})
        csv_query = c.get("/v1/counts/yard", params={"from": t0, "format": "csv"})
        everything = _rows(c.get("/v1/counts/yard.csv").text)
    with ServerThread(app_on(db_url, keep_days=30)) as srv, httpx.Client(base_url=srv.url, headers=KEY, timeout=30) as c:
        kept = _rows(c.get("/v1/counts/yard.csv").text)
        cameras = c.get("/v1/cameras").json()["cameras"]
    assert "buckets" not in plain and {"camera_id", "frames", "window", "last", "mean", "max", "since", "until"} <= plain.keys()
    assert (plain["frames"], plain["last"], plain["max"]) == (7, 1, 9)
    got = [(b["start"] - t0, b["frames"], b["mean"], b["max"], b["last"]) for b in minutes["buckets"]]
    assert got == [(0, 1, 2, 2, 2), (60, 1, 4, 4, 4), (120, 1, 6, 6, 6)]  # to is exclusive: 3700 s is out
    assert (minutes["from"], minutes["to"], minutes["bucket_s"]) == (t0, t0 + 3600, 60)
    assert [(b["start"] - t0, b["frames"], b["max"], b["last"]) for b in hours["buckets"]] == [(0, 3, 6, 6), (3600, 1, 1, 1)]
    assert naive["from"] == t0 and [b["frames"] for b in naive["buckets"]] == [2, 1, 1]  # no zone: UTC; 90 s buckets
    assert csv_path.status_code == 200 and csv_path.headers["content-type"].startswith("text/csv")
    assert 'filename="yard.csv"' in csv_path.headers["content-disposition"]
    assert csv_path.text == csv_query.text and [r["count"] for r in _rows(csv_path.text)] == ["2", "4", "6", "1"]
    assert len(everything) == 7 and [r["count"] for r in kept] == ["5", "2", "4", "6", "1"]  # 40 and 31 days: pruned
    assert [(x["id"], x["frames"], x["last_count"]) for x in cameras] == [("yard", 7, 1)]  # lifetime frames stay


@pytest.mark.parametrize("path, params, words", [
    ("/v1/counts/yard", {"from": "yesterday"}, "from='yesterday'"),
    ("/v1/counts/yard", {"to": "2024-13-45"}, "to="),
    ("/v1/counts/yard", {"from": "nan"}, "from="),
    ("/v1/counts/yard", {"from": "1e12"}, "year 5000"),
    ("/v1/counts/yard", {"from": "200", "to": "100"}, "is before"),
    ("/v1/counts/yard", {"bucket": "0s"}, "bucket="),
    ("/v1/counts/yard", {"bucket": "1y"}, "bucket="),
    ("/v1/counts/yard", {"bucket": "-1m"}, "bucket="),
    ("/v1/counts/yard", {"from": "0", "to": "1e9", "bucket": "1s"}, "more than 100000 buckets"),
    ("/v1/counts/yard", {"format": "xml"}, "format="),
    ("/v1/counts/yard.csv", {"from": "soon"}, "from="),
    ("/v1/counts/bad%20id", {}, "camera_id"),
    ("/v1/counts/bad%20id.csv", {}, "camera_id"),
])
def test_bad_query_parameters_are_422_in_one_line(app_on: Callable[..., Any], path: str, params: dict[str, str],
                                                  words: str) -> None:
    store = CountStore.in_memory()
    store.record("yard", 1, [], [], "yolox_nano")
    with ServerThread(app_on(store)) as srv:
        r = httpx.get(srv.url + path, params=params, headers=KEY, timeout=30)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail


def test_unknown_camera_missing_key_and_openapi(app_on: Callable[..., Any]) -> None:
    """404 for a camera never seen, 401 without the key; every count endpoint and frame header is in OpenAPI."""
    app = app_on(CountStore.in_memory())
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        unknown = [c.get(p, headers=KEY) for p in ("/v1/counts/nobody", "/v1/counts/nobody.csv", "/v1/counts/nobody?format=csv")]
        no_key = [c.get(p) for p in ("/v1/cameras", "/v1/counts/x", "/v1/counts/x.csv")]
        empty = c.get("/v1/cameras", headers=KEY).json()
    assert [r.status_code for r in unknown] == [404, 404, 404] and "nobody" in unknown[0].json()["detail"]
    assert [r.status_code for r in no_key] == [401, 401, 401] and empty == {"cameras": []}
    paths = app.openapi()["paths"]
    assert {"/v1/cameras", "/v1/counts/{camera_id}", "/v1/counts/{camera_id}.csv"} <= paths.keys()
    names = {p["name"] for p in paths["/v1/counts/{camera_id}"]["get"]["parameters"]}
    assert {"from", "to", "bucket", "format"} <= names
    detect = {p["name"] for p in paths["/v1/detect"]["post"]["parameters"]}
    assert {"Idempotency-Key", "X-Capture-Time", "X-Silhouette-Obfuscator"} <= detect
    assert "text/csv" in paths["/v1/counts/{camera_id}.csv"]["get"]["responses"]["200"]["content"]


# ------------------------------------------------------------------------------------------ `silhouette serve` itself


@pytest.fixture()
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory of ServeProcess, each stopped after the test."""
    started: list[ServeProcess] = []

    def start(db: str, workers: int = 1, *extra: str) -> ServeProcess:
        started.append(ServeProcess(tmp_path / f"serve{len(started)}", db, API_KEY, workers, *extra))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def _by_worker(url: str, paths: list[str], per_worker: int, workers: set[int], timeout: float = 60) -> dict[int, list[Any]]:
    """Answers to `paths`, asked again and again on new connections, grouped by the worker pid that answered them."""
    answers: dict[int, list[Any]] = {}
    deadline = time.monotonic() + timeout
    while any(len(answers.get(pid, [])) < per_worker for pid in workers) and time.monotonic() < deadline:
        # one connection is served by one worker process: its /healthz names the pid that answers the rest
        with httpx.Client(base_url=url, headers=KEY, timeout=30) as c:
            pid = c.get("/healthz").json()["worker_pid"]
            answers.setdefault(pid, []).append([c.get(p).text for p in paths])
    return answers


@pytest.mark.slow  # ~25 s per backend on 2 cores: two workers load YOLOX-Nano
def test_workers_share_one_database(db_url: str, serve_process: Callable[..., ServeProcess],
                                    testdata_bgr: list[np.ndarray]) -> None:
    """`serve --workers 2`: repeated keys from many connections stored once; every worker answers the same counts."""
    now = time.time()
    with CountStore(db_url) as store:  # left by an earlier run: the 40-day-old frame is pruned when the service starts
        store.record("gate", 3, [], [], "yolox_nano", received_at=now - 40 * DAY, idempotency_key="gate:old:1")
        store.record("gate", 2, [], [], "yolox_nano", received_at=now - 10 * DAY, idempotency_key="gate:old:2")
    srv = serve_process(db_url, 2, "--keep-days", "30")
    frames = [_png(f) for f in testdata_bgr]
    replies: dict[str, list[httpx.Response]] = {}

    def send(i: int, copy: int) -> None:
        with httpx.Client(base_url=srv.url, headers=KEY, timeout=120) as c:  # a connection of its own
            key = f"gate:run:{i}"
            replies.setdefault(key, []).append(_post(c, frames[i], "gate", key))
            if copy == 0:
                replies.setdefault("no-key", []).append(_post(c, frames[i], "gate"))

    threads = [threading.Thread(target=send, args=(i, copy)) for copy in range(3) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    answers = _by_worker(srv.url, ["/v1/counts/gate", "/v1/cameras", "/v1/counts/gate?from=0&bucket=1d"], 3, srv.pids)
    with httpx.Client(base_url=srv.url, headers=KEY, timeout=30) as c:
        rows = _rows(c.get("/v1/counts/gate.csv").text)
    log = srv.log()
    for key in (f"gate:run:{i}" for i in range(3)):
        got = replies[key]
        assert [r.status_code for r in got] == [200] * 3 and len({r.content for r in got}) == 1, key
        assert sum(r.headers.get("idempotent-replayed") != "true" for r in got) == 1, key  # one first answer, two replays
    assert [r.status_code for r in replies["no-key"]] == [200] * 3
    assert {pid: len(a) >= 3 for pid, a in answers.items()} == {pid: True for pid in srv.pids}, answers.keys()
    distinct = {tuple(a) for per_worker in answers.values() for a in per_worker}
    assert len(distinct) == 1, distinct  # every worker, every time: the same counts, cameras and buckets
    summary = httpx.Response(200, text=distinct.pop()[0]).json()
    assert summary["frames"] == 1 + 3 + 3  # the 10-day-old frame, three keys once each, three without a key
    assert sorted(r["idempotency_key"] for r in rows) == ["", "", "", "gate:old:2", "gate:run:0", "gate:run:1", "gate:run:2"]
    assert "counts stored in " in log and "Traceback" not in log


# ------------------------------------------------------------------------------------------ dashboard, CLI, frames


def test_dashboard_sessions_hold_across_workers_and_no_auth_needs_none(app_on: Callable[..., Any]) -> None:
    """The session secret is derived from the key: a cookie from one worker's app is good on another's, never the key."""
    from fastapi.testclient import TestClient

    from silhouette.serve.dashboard import COOKIE_NAME

    first, second = TestClient(app_on(None), follow_redirects=False), TestClient(app_on(None), follow_redirects=False)
    other_key = TestClient(create_app("yolox_nano", "another-key-987654", detector=first.app.state.detector), follow_redirects=False)
    assert first.get("/").status_code == 303 and first.get("/ui/cameras").status_code == 401
    login = first.post("/login", data={"key": API_KEY})
    token = first.cookies[COOKIE_NAME]
    assert login.status_code == 303 and API_KEY not in login.headers["set-cookie"] and API_KEY not in token
    second.cookies.set(COOKIE_NAME, token)
    other_key.cookies.set(COOKIE_NAME, token)
    assert second.get("/").status_code == 200 and second.get("/ui/cameras").json()["cameras"] == []
    assert other_key.get("/ui/cameras").status_code == 401
    health = second.get("/ui/health").json()
    assert health["database"] == "sqlite://" and health["frames_in_memory"] == 0 and health["worker_pid"] == os.getpid()
    open_app = TestClient(create_app("yolox_nano", None, detector=first.app.state.detector), follow_redirects=False)
    assert open_app.get("/").status_code == 200 and open_app.get("/ui/cameras").status_code == 200


def test_latest_frames_stay_in_ram_and_bounded() -> None:
    from silhouette.serve.live import LatestFrames

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 92  # 100 bytes
    frames = LatestFrames(max_cameras=2, max_bytes=250)
    frames.keep("a", png, [[1.0, 2.0, 3.0, 4.0, 0.9]])
    frames.keep("b", b"BM" + b"\0" * 98, [])  # BMP: counted by the service, but the page cannot show it
    frames.keep("b", png, [])
    frames.keep("c", png, [])  # a third camera: the least recently updated ('a') goes
    assert frames.get("a") is None and frames.get("c") == (png, "image/png", []) and frames.usage() == (2, 200)
    frames.keep("d", b"\xff\xd8\xff" + b"\0" * 197, [])  # 200 bytes: over the byte budget with two others
    assert frames.usage() == (1, 200) and frames.get("d")[1] == "image/jpeg"


def test_serve_cli_db_and_keep_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--help documents --db and --keep-days; the default database is a file here, printed; mistakes are one line."""
    from silhouette.cli import main
    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.server import with_store

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert "--dbURL" in text and "sqlite:///./silhouette-counts.sqlite" in text and "--keep-daysN" in text
    monkeypatch.chdir(tmp_path)
    cfg = with_store(ServiceConfig(no_auth=True))
    assert cfg.db == f"sqlite:///{tmp_path / 'silhouette-counts.sqlite'}" and (tmp_path / "silhouette-counts.sqlite").is_file()
    assert f"counts stored in {cfg.db} (kept 30 days)" in capsys.readouterr().err
    for argv in (["--db", "mysql://alice:pw@db/counts"], ["--db", "sqlite:////no-such-folder/c.db"]):
        assert main(["serve", "--no-auth", "--port", "1", *argv]) == 2, argv  # before any detector is loaded
        err = capsys.readouterr().err.strip()
        assert err.startswith("silhouette serve: error: --db ") and "\n" not in err and ":pw@" not in err, err
    for days in ("-1", "1.5"):
        with pytest.raises(SystemExit):
            main(["serve", "--no-auth", "--keep-days", days])
        assert "argument --keep-days: " in capsys.readouterr().err
