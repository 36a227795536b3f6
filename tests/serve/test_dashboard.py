"""The dashboard router: login flow, sessions, failed-login limit, JSON endpoints, a real Chromium on a real server,
and the dashboard of the real service (`silhouette serve`) fed by the real edge client."""

from __future__ import annotations

import base64
import io
import math
import os
import random
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from silhouette.serve.dashboard import COOKIE_NAME, DashboardSource, MemorySource, dashboard_router

if TYPE_CHECKING:
    from playwright.sync_api import Page

API_KEY = "dash-key-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32  # header only: the JSON endpoints pass bytes through without decoding them
CHROMIUM = os.environ.get("SILHOUETTE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
Frame = tuple[bytes, list[list[float]]]  # an obfuscated PNG and its person boxes [x1, y1, x2, y2, score]


def _app(api_key: str | None = API_KEY, source: MemorySource | None = None, prefix: str = "", **kw: object) -> FastAPI:
    """A bare app serving only the dashboard (the service mounts the same router)."""
    app = FastAPI()
    app.include_router(dashboard_router(api_key, source or MemorySource(), **kw), prefix=prefix)  # type: ignore[arg-type]
    return app


def _client(app: FastAPI, **kw: object) -> TestClient:
    return TestClient(app, follow_redirects=False, **kw)  # type: ignore[arg-type]


def _as(app: FastAPI, token: str) -> TestClient:
    """A fresh client that sends `token` as its session cookie (as a copied or forged cookie would be)."""
    return _client(app, cookies={COOKIE_NAME: token})


def _login(client: TestClient, key: str = API_KEY, path: str = "/login") -> object:
    return client.post(path, data={"key": key})


# --- login flow ---------------------------------------------------------------------------------------------------


def test_memory_source_is_a_dashboard_source() -> None:
    assert isinstance(MemorySource(), DashboardSource)


def test_page_without_session_redirects_to_login_form() -> None:
    client = _client(_app())
    r = client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    form = client.get("/login")
    assert form.status_code == 200 and '<form method="post" action="login">' in form.text
    assert 'type="password"' in form.text and "default-src 'none'" in form.headers["content-security-policy"]
    assert form.text.startswith("<!doctype html>") and "<title>silhouette · log in</title>" in form.text
    assert '<meta name="referrer" content="no-referrer">' in form.text and "{{" not in form.text


def test_ui_json_needs_a_session() -> None:
    source = MemorySource()
    source.record("cam1", 2, [[1, 2, 3, 4]], PNG)
    client = _client(_app(source=source))
    for path in ("/ui/cameras", "/ui/history/cam1", "/ui/frame/cam1", "/ui/health"):
        r = client.get(path)
        assert r.status_code == 401 and r.json() == {"detail": "not logged in"}, path


def test_wrong_key_shows_the_form_again_and_sets_no_cookie() -> None:
    client = _client(_app())
    r = _login(client, "not-the-key")
    assert r.status_code == 401 and "Wrong key." in r.text and 'action="login"' in r.text
    assert "set-cookie" not in r.headers and not client.cookies
    assert "not-the-key" not in r.text  # the guess is not echoed back
    assert client.get("/").status_code == 303


def test_right_key_sets_a_signed_http_only_strict_cookie_without_the_key() -> None:
    client = _client(_app())
    r = _login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=43200" in cookie and "Path=/" in cookie and "Secure" not in cookie  # plain http here
    assert API_KEY not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "obfuscated" in page.text and 'action="logout"' in page.text
    assert page.text.startswith("<!doctype html>") and 'href="static/dashboard.css"' in page.text and "{{" not in page.text
    assert client.get("/ui/cameras").json()["cameras"] == []
    assert client.get("/login").status_code == 303  # already logged in: straight to the page


def test_cookie_is_secure_over_https() -> None:
    client = _client(_app(), base_url="https://testserver")
    assert "Secure" in _login(client).headers["set-cookie"]


def test_logout_ends_the_session_and_revokes_its_token() -> None:
    client = _client(_app())
    _login(client)
    token = client.cookies[COOKIE_NAME]
    r = client.post("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/").status_code == 303
    assert _as(client.app, token).get("/ui/cameras").status_code == 401  # a copy of the old cookie: refused too


def test_forged_tampered_and_foreign_tokens_are_refused() -> None:
    client = _client(_app())
    _login(client)
    token = client.cookies[COOKIE_NAME]
    sid, expiry, sig = token.split(".")
    other = _client(_app())
    _login(other)
    forged = [
        f"{sid}.{int(expiry) + 3600}.{sig}",  # expiry pushed out: the signature no longer matches
        f"{sid}.{expiry}.{'0' * len(sig)}",
        other.cookies[COOKIE_NAME],  # signed by another process's secret
        API_KEY, "", "a.b.c", "...",
    ]
    for value in forged:
        assert _as(client.app, value).get("/ui/health").status_code == 401, value
    assert _as(client.app, token).get("/ui/health").status_code == 200


def test_sessions_expire() -> None:
    client = _client(_app(session_ttl_s=1.0))
    _login(client)
    token = client.cookies[COOKIE_NAME]
    assert _as(client.app, token).get("/ui/health").status_code == 200
    time.sleep(1.1)
    # sent by hand: the server must refuse it even from a client that ignores Max-Age
    assert _as(client.app, token).get("/ui/health").status_code == 401


def test_no_key_in_any_url_or_redirect() -> None:
    source = MemorySource()
    source.record("cam1", 1, [], PNG)
    client = TestClient(_app(source=source))  # follows redirects: every hop lands in history
    hops = [client.get("/"), _login(client, "wrong"), _login(client), client.post("/logout")]
    for r in hops:
        for step in (*r.history, r):
            assert API_KEY not in str(step.url) and API_KEY not in step.headers.get("location", "")
            assert API_KEY not in step.text
    # a key put in the query string by hand logs nobody in
    r = client.get(f"/login?key={API_KEY}", follow_redirects=False)
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert client.post(f"/login?key={API_KEY}", follow_redirects=False).status_code == 401


def test_failed_logins_are_rate_limited_per_client() -> None:
    app = _app()
    client = _client(app, client=("10.0.0.1", 5000))
    for _ in range(5):
        assert _login(client, "guess").status_code == 401
    r = _login(client)  # the right key, but too late: refused without being checked
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
    assert "Too many failed logins" in r.text and "set-cookie" not in r.headers
    assert _login(_client(app, client=("10.0.0.2", 5000))).status_code == 303  # another client is not affected


def test_rate_limit_window_passes_and_success_resets_it() -> None:
    app = _app(login_limit=(2, 0.5))
    client = _client(app)
    _login(client, "a")
    _login(client, "b")
    assert _login(client).status_code == 429
    time.sleep(0.6)
    assert _login(client).status_code == 303
    _login(client, "c")  # failures counted from zero again after the successful login
    assert _login(client).status_code == 303


def test_non_ascii_and_huge_keys_are_plain_failures() -> None:
    client = _client(_app())
    assert _login(client, "clé-ünïcode").status_code == 401
    assert _login(client, "x" * 100_000).status_code == 401


def test_no_auth_mode_needs_no_login() -> None:
    client = _client(_app(api_key=None))
    page = client.get("/")
    assert page.status_code == 200 and 'action="logout"' not in page.text
    assert client.get("/ui/cameras").status_code == 200
    assert client.get("/login").headers["location"] == "/"
    assert "set-cookie" not in _login(client, "anything").headers


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        dashboard_router("  ", MemorySource())


def test_works_under_a_prefix() -> None:
    client = _client(_app(prefix="/dashboard"))
    assert client.get("/dashboard/").headers["location"] == "/dashboard/login"
    r = _login(client, path="/dashboard/login")
    assert r.headers["location"] == "/dashboard/" and "Path=/dashboard/" in r.headers["set-cookie"]
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/static/..%2Fdashboard.py").status_code == 404


# --- JSON endpoints and the in-memory source ----------------------------------------------------------------------


def test_ui_endpoints_serve_cameras_history_frame_and_health() -> None:
    source = MemorySource(extra_health=lambda: {"detector": "yolox_nano"})
    now = time.time()
    source.record("cam-b", 1, t=now - 300)
    source.record("cam-a", 2, t=now - 100)
    source.record("cam-a", 5, [[10, 20, 30, 60, 0.9]], PNG, "image/png", t=now)
    client = _client(_app(source=source))
    _login(client)
    cams = client.get("/ui/cameras").json()["cameras"]
    assert [(c["id"], c["frames"], c["last_count"]) for c in cams] == [("cam-a", 2, 5), ("cam-b", 1, 1)]
    assert cams[0]["last_seen"] == pytest.approx(now)
    assert [p[1] for p in client.get("/ui/history/cam-a?seconds=600").json()["points"]] == [2, 5]
    assert [p[1] for p in client.get("/ui/history/cam-a?seconds=50").json()["points"]] == [5]
    frame = client.get("/ui/frame/cam-a").json()
    assert base64.b64decode(frame["image"]) == PNG and frame["content_type"] == "image/png"
    assert frame["boxes"] == [[10.0, 20.0, 30.0, 60.0, 0.9]]
    assert client.get("/ui/frame/cam-b").status_code == 404  # counted without a frame
    assert client.get("/ui/frame/nope").status_code == 404
    assert client.get("/ui/history/bad%20id").status_code == 400
    assert client.get("/ui/history/cam-a?seconds=0").status_code == 422
    health = client.get("/ui/health").json()
    assert health["status"] == "ok" and health["cameras"] == 2 and health["detector"] == "yolox_nano"


def test_memory_source_is_bounded() -> None:
    source = MemorySource(max_cameras=2, max_points=3, max_frame_bytes=len(PNG))
    for i in range(5):
        source.record("cam1", i, image_bytes=PNG)
    assert [c for _, c in source.history("cam1", 600)] == [2, 3, 4]
    source.record("cam2", 1)
    source.record("cam3", 1)  # cam1 is the least recently seen: forgotten
    assert [c["id"] for c in source.cameras()] == ["cam2", "cam3"]
    source.record("cam3", 2, image_bytes=PNG + b"x")  # over max_frame_bytes: counted, frame not kept
    assert source.latest_frame("cam3") is None and source.cameras()[1]["last_count"] == 2


def test_memory_source_drops_points_older_than_its_window() -> None:
    source = MemorySource(history_s=60)
    source.record("cam1", 1, t=time.time() - 120)
    source.record("cam1", 2)
    assert [c for _, c in source.history("cam1", 3600)] == [2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"camera": "bad id"}, "camera id"),
        ({"count": -1}, "count"),
        ({"count": True}, "count"),
        ({"image_bytes": b"GIF89a...."}, "look like"),
        ({"image_bytes": PNG, "content_type": "text/html"}, "content type"),
        ({"boxes": [[1, 2, 3]]}, "box"),
        ({"boxes": [[1, 2, 3, float("nan")]]}, "box"),
    ],
)
def test_memory_source_refuses_bad_records(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"camera": "cam1", "count": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        MemorySource().record(**args)  # type: ignore[arg-type]


# --- a real browser against a real server -------------------------------------------------------------------------


def _need(ok: bool, why: str) -> None:
    """Skip without the browser on a developer machine; FAIL in CI, where it must be installed."""
    if not ok:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{why} (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(why)


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server for `app` on a free loopback port, in a background thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "dashboard test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path once Playwright and Chromium are both there (checked before the frames are made: fail fast)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need(False, "playwright is not installed (pip install -e '.[dev]')")
    _need(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set SILHOUETTE_CHROMIUM)")
    return CHROMIUM


@pytest.fixture(scope="module")
def obfuscated_frames(pets_frames: dict[str, torch.Tensor]) -> dict[str, Frame]:
    """The PETS test frames through the shipped obfuscator as PNG bytes, with the person boxes YOLOX-Nano finds on them."""
    from PIL import Image

    from silhouette.detectors import create_detector
    from silhouette.models import load_obfuscator

    obfuscator, detector = load_obfuscator(), create_detector("yolox_nano")
    out = {}
    with torch.no_grad():
        for name, image in pets_frames.items():
            obf = obfuscator(image[None]).clamp(0, 1)
            found = detector.predict(obf)[0].persons(0.3)
            boxes = [[*map(float, b), float(s)] for b, s in zip(found.boxes, found.scores)]
            buf = io.BytesIO()
            Image.fromarray((obf[0] * 255).round().byte().permute(1, 2, 0).numpy()).save(buf, "PNG")
            out[name] = (buf.getvalue(), boxes)
    return out


def _seed_history(source: MemorySource, camera: str, frames: list[Frame], now: float) -> None:
    """Ten minutes of counts of `camera` from real frames and their real detections, one every 5 s, oldest first."""
    rng = random.Random(camera)
    frame = frames[0]
    for i in range(119):
        if rng.random() < 0.15:  # a scene changes now and then, not every frame
            frame = rng.choice(frames)
        png, boxes = frame
        source.record(camera, len(boxes), boxes, png, "image/png", t=now - 600 + 5 * i)


# polled predicates are functions: the page's CSP (no 'unsafe-eval') refuses Playwright's eval of an expression string
_COUNT_IS = "([cam, n]) => document.querySelector(`[data-camera='${cam}'] .count`)?.textContent === String(n)"
_BOXES_ARE = "([cam, n]) => document.querySelector(`[data-camera='${cam}'] canvas.frame`)?.dataset.boxes === String(n)"
_ALL_DRAWN = (
    "(n) => document.querySelectorAll('canvas.chart[data-points]').length === n"
    " && document.querySelectorAll('canvas.frame[data-boxes]').length === n"
)


def _count_is(page: Page, camera: str, count: int) -> None:
    """Wait (up to 10 s: the page polls every 2 s) until `camera`'s card shows `count`."""
    page.wait_for_function(_COUNT_IS, arg=[camera, count], timeout=10_000)


@pytest.mark.slow  # ~20 s on 2 cores: obfuscator + detector on three frames, Chromium, a few 2 s polls
def test_dashboard_in_chromium(chromium: str, obfuscated_frames: dict[str, Frame], tmp_path: Path) -> None:
    """Log in through the form, watch cameras appear and counts change while frames are recorded, take a screenshot."""
    from playwright.sync_api import sync_playwright

    source = MemorySource(extra_health=lambda: {"detector": "yolox_nano", "workers": 1})
    frames = [obfuscated_frames[k] for k in sorted(obfuscated_frames)]
    shot = tmp_path / "dashboard.png"
    with _serve(_app(source=source)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            seen = _watch(page)
            _login_in_browser(page, url)
            _counts_follow_records(page, source, frames)
            _second_camera(page, source, frames)
            page.screenshot(path=str(shot), full_page=True)
            page.click("text=Log out")
            page.wait_for_url(url + "/login")
            page.goto(url + "/")
            assert page.url == url + "/login"
        finally:
            browser.close()
    assert not seen["problems"], seen["problems"]  # no script error, no CSP violation
    assert seen["failed"] == [("POST", url + "/login", 401)], seen["failed"]  # the wrong key only
    assert seen["requests"] and not [r for r in seen["requests"] if API_KEY in r]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # docs/img/dashboard.png comes from the real service, below


def _watch(page: Page) -> dict[str, list]:
    """Record every request URL, every HTTP error answer, and script errors and CSP violations of `page`."""
    seen: dict[str, list] = {"requests": [], "failed": [], "problems": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("response", lambda r: seen["failed"].append((r.request.method, r.url, r.status)) if r.status >= 400 else None)
    page.on("console", lambda m: _console_error(seen["problems"], m.type, m.text))
    page.on("pageerror", lambda e: seen["problems"].append(str(e)))
    return seen


def _console_error(problems: list[str], kind: str, text: str) -> None:
    """Keep a console error, but not the line each HTTP error also logs (see "failed")."""
    if kind == "error" and not text.startswith("Failed to load resource"):
        problems.append(text)


def _login_in_browser(page: Page, url: str) -> None:
    """Redirected to the form, a wrong key first, then the right one; the session cookie is out of the script's reach."""
    page.goto(url + "/")
    assert page.url == url + "/login"
    page.fill("#key", "wrong-key")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Wrong key.")
    page.fill("#key", API_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.wait_for_selector("#empty:visible")
    cookies = page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [(COOKIE_NAME, True, "Strict")]
    assert page.evaluate("document.cookie") == ""


def _counts_follow_records(page: Page, source: MemorySource, frames: list[Frame]) -> None:
    """Frames recorded while the page is open: the camera appears with its frame and boxes, then its count changes."""
    _seed_history(source, "car-park", frames, time.time() - 5)
    # two real frames with different counts (the detector is deterministic on these fixed frames)
    (png, boxes), (png2, boxes2) = next((a, b) for a in frames for b in frames if len(a[1]) != len(b[1]))
    source.record("car-park", len(boxes), boxes, png, "image/png")
    _count_is(page, "car-park", len(boxes))
    page.wait_for_function(_BOXES_ARE, arg=["car-park", len(boxes)], timeout=10_000)
    canvas = "[data-camera='car-park'] canvas.frame"
    assert page.eval_on_selector(canvas, "c => [c.width, c.height]") == [320, 200]
    _check_box_drawn(page, canvas, boxes[0])
    source.record("car-park", len(boxes2), boxes2, png2, "image/png")
    _count_is(page, "car-park", len(boxes2))
    page.wait_for_function(_BOXES_ARE, arg=["car-park", len(boxes2)], timeout=10_000)  # the new frame replaced the old


def _second_camera(page: Page, source: MemorySource, frames: list[Frame]) -> None:
    """A second camera with ten minutes of history: two cards, two frames, two charts, the health table."""
    _seed_history(source, "north-gate", frames[::-1], time.time() - 5)
    png, boxes = frames[1]
    source.record("north-gate", len(boxes), boxes, png, "image/png")
    _count_is(page, "north-gate", len(boxes))
    page.wait_for_function(_ALL_DRAWN, arg=2, timeout=10_000)
    assert "obfuscated" in page.inner_text("[data-camera='north-gate'] figcaption")
    assert page.inner_text("#health").count("yolox_nano") == 1


def _check_box_drawn(page: Page, canvas: str, box: list[float]) -> None:
    """The frame canvas shows the box colour on the box's left edge: boxes are drawn over the obfuscated frame."""
    # the 2 px stroke covers [x1 - 1, x1 + 1]: pixel floor(x1) lies wholly inside it (no antialiased blend)
    x, y = math.floor(box[0]), math.floor((box[1] + box[3]) / 2)
    pixel = "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)"
    rgba = page.eval_on_selector(canvas, pixel, [x, y])
    assert rgba[1] > 180 and rgba[0] < 100, rgba  # the box green (#00e676), not the frame


# --- the dashboard of the real service, fed by the real edge client -------------------------------------------------

_FRAMES_ARE = "([cam, text]) => document.querySelector(`[data-camera='${cam}'] .frames`)?.textContent === text"
_POINTS_FROM = "([cam, n]) => Number(document.querySelector(`[data-camera='${cam}'] canvas.chart`)?.dataset.points) >= n"
PNG_MARKS = (b"\x89PNG\r\n\x1a\n", b"IHDR", b"IDAT")  # the signature and chunk tags of every PNG the edge sends


def _edge(shared: Path, url: str, camera: str, frame: str, tmpdir: Path) -> None:
    """Run `silhouette edge` on one PETS test frame: it obfuscates it and posts it to the service."""
    import subprocess
    import sys

    source = shared / "weights" / "testdata" / f"pets2009_s2l1_v1_{frame}_320x200.png"
    env = {**os.environ, "SILHOUETTE_API_KEY": API_KEY, "TMPDIR": str(tmpdir)}
    argv = [sys.executable, "-m", "silhouette", "edge", "--source", str(source), "--server", url, "--camera-id", camera, "--quiet"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _last_count(url: str, camera: str) -> int:
    """The camera's latest count as the service's API reports it."""
    import httpx

    return int(httpx.get(f"{url}/v1/counts/{camera}", headers={"X-API-Key": API_KEY}, timeout=30).json()["last"])


def _edge_rows_are_complete(url: str, camera: str, frames: int) -> None:
    """The edge's frames are stored with its capture time, obfuscator id and key, and the service's detector."""
    import csv

    import httpx

    text = httpx.get(f"{url}/v1/counts/{camera}.csv", headers={"X-API-Key": API_KEY}, timeout=30).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == frames
    for row in rows:
        assert row["captured_at"].endswith("Z") and row["obfuscator_id"] and row["idempotency_key"].startswith(camera), row
        assert row["detector_id"] == "yolox_nano" and row["received_at"] >= row["captured_at"], row


def _history_in_store(db: str, cameras: list[str], counts: list[int]) -> None:
    """Ten minutes of earlier counts (one frame every 10 s) written straight into the service's database."""
    from silhouette.serve.storage import CountStore

    rng, now = random.Random(7), time.time()
    with CountStore(db) as store:
        for camera in cameras:
            count = rng.choice(counts)
            for i in range(58):
                if rng.random() < 0.2:
                    count = rng.choice(counts)
                store.record(camera, count, [], [], "yolox_nano", received_at=now - 600 + 10 * i)


@pytest.mark.slow  # ~40 s on 2 cores: the service loads YOLOX-Nano, three edge runs, Chromium polling every 2 s
def test_dashboard_in_the_real_service(chromium: str, shared: Path, tmp_path: Path) -> None:
    """`silhouette serve` with a SQLite file: log in, run `silhouette edge`, watch cameras and counts follow.

    No image byte reaches the disk: the database holds no PNG, no file appears in the service's $TMPDIR (or is held
    open there) while frames flow, and its working directory stays empty."""
    from playwright.sync_api import sync_playwright

    from serve_process import ServeProcess

    db_file, edge_tmp = tmp_path / "counts.sqlite", tmp_path / "edge-tmp"
    edge_tmp.mkdir()
    srv = ServeProcess(tmp_path / "serve", f"sqlite:///{db_file}", API_KEY)
    at_start = set(srv.tmpdir.rglob("*"))  # what torch leaves there when it loads: an empty torchinductor_<user> folder
    shot, opened = tmp_path / "dashboard.png", []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                seen = _watch(page)
                _login_in_browser(page, srv.url)
                counts = []
                for camera, frame, frames_text in (("car-park", "f0000", "1 frame counted"),
                                                   ("car-park", "f0794", "2 frames counted"),
                                                   ("north-gate", "f0400", "1 frame counted")):
                    _edge(shared, srv.url, camera, frame, edge_tmp)
                    opened += srv.open_files_under(srv.tmpdir)
                    counts.append(_last_count(srv.url, camera))
                    _count_is(page, camera, counts[-1])
                    page.wait_for_function(_FRAMES_ARE, arg=[camera, frames_text], timeout=10_000)
                    page.wait_for_function(_BOXES_ARE, arg=[camera, counts[-1]], timeout=10_000)
                assert counts[0] != counts[1]  # the second frame changed the count shown
                _edge_rows_are_complete(srv.url, "car-park", 2)
                _history_in_store(f"sqlite:///{db_file}", ["car-park", "north-gate"], counts)
                page.wait_for_function(_FRAMES_ARE, arg=["north-gate", "59 frames counted"], timeout=10_000)
                for camera in ("car-park", "north-gate"):  # each chart redrawn with the history (every 4 s)
                    page.wait_for_function(_POINTS_FROM, arg=[camera, 50], timeout=15_000)
                assert "sqlite:///" in page.inner_text("#health") and "obfuscated" in page.inner_text("figcaption")
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        srv.stop()
    assert not seen["problems"], seen["problems"]
    assert seen["failed"] == [("POST", srv.url + "/login", 401)], seen["failed"]  # the wrong key only
    assert not [r for r in seen["requests"] if API_KEY in r]
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("counts.sqlite*"))
    assert stored and not [m for m in PNG_MARKS if m in stored]  # results only: no image in the database
    assert opened == [] and list(srv.cwd.iterdir()) == []
    # ONNX Runtime, imported at the first detection, writes its telemetry session file .ses (a time and a uuid)
    appeared = {f.name: f.stat().st_size for f in set(srv.tmpdir.rglob("*")) - at_start}
    assert appeared.keys() <= {".ses"} and all(size < 200 for size in appeared.values()), appeared
    left = b"".join(f.read_bytes() for f in srv.tmpdir.rglob("*") if f.is_file())
    assert not [m for m in PNG_MARKS if m in left]
    if os.environ.get("SILHOUETTE_UPDATE_SCREENSHOTS") == "1":  # docs are refreshed on request, not by every test run
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
