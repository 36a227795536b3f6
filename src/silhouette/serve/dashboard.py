"""The dashboard: a login-protected web page of live people counts, count history and the latest obfuscated frames.

`dashboard_router(api_key, source)` is a standalone FastAPI router; the service mounts it (any prefix works: every
URL in the page is relative). The page reads a `DashboardSource`; `MemorySource` is the in-process one, fed by the
service with each detection. Only obfuscated frames ever reach the service, and they are kept in RAM only: the last
one of each camera, never written to disk.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import math
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).with_name("static")
COOKIE_NAME = "silhouette_session"
SESSION_TTL_S = 12 * 3600.0
LOGIN_LIMIT = (5, 60.0)  # failed logins per client IP within this many seconds; then every attempt is refused
MAX_KEY_CHARS = 4096  # a longer "key" is refused before hashing: no API key is that long
MAX_HISTORY_S = 7 * 24 * 3600
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # same rule as the service's camera ids
IMAGE_TYPES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/webp": b"RIFF"}
Box = list[float]  # [x1, y1, x2, y2] or [x1, y1, x2, y2, score], pixels of the frame it belongs to

# the page loads only its own script and style; frames arrive as data: URLs inside JSON
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@runtime_checkable
class DashboardSource(Protocol):
    """What the dashboard reads: per-camera state, count history, the latest obfuscated frame, service health."""

    def cameras(self) -> list[dict[str, Any]]:
        """One dict per camera: id, last_seen (epoch s), frames (frames counted), last_count."""
        ...

    def history(self, camera: str, seconds: float) -> list[tuple[float, int]]:
        """(epoch s, people count) of `camera` over the last `seconds`, oldest first; [] for an unknown camera."""
        ...

    def latest_frame(self, camera: str) -> tuple[bytes, str, list[Box]] | None:
        """(encoded obfuscated image, its content type, person boxes in its pixels), or None when there is none."""
        ...

    def health(self) -> dict[str, Any]:
        """Service health as flat JSON-able key/values (shown as a table)."""
        ...


@dataclass
class _Camera:
    """In-memory state of one camera."""

    history: deque[tuple[float, int]]
    last_seen: float = 0.0
    frames: int = 0
    last_count: int = 0
    frame: tuple[bytes, str, list[Box]] | None = None


@dataclass
class MemorySource:
    """A bounded in-memory DashboardSource: count history and the last obfuscated frame per camera, RAM only."""

    max_cameras: int = 256  # the least recently seen camera is forgotten beyond this
    max_points: int = 7200  # history points kept per camera (2 h at one frame a second)
    history_s: float = 24 * 3600.0  # points older than this are dropped
    max_frame_bytes: int = 2 * 1024 * 1024  # a larger frame is counted but not kept (bounds RAM: cameras x this)
    extra_health: Callable[[], dict[str, Any]] | None = None  # the service's own health, merged into health()
    _cams: OrderedDict[str, _Camera] = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _started: float = field(default_factory=time.time, init=False, repr=False)

    def record(
        self, camera: str, count: int, boxes: Sequence[Sequence[float]] = (), image_bytes: bytes | None = None,
        content_type: str = "image/png", t: float | None = None,
    ) -> None:
        """Note one counted frame of `camera`; `image_bytes` (its obfuscated frame, PNG/JPEG/WebP) replaces the last one."""
        _check_camera(camera)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count {count!r}: must be a whole number >= 0")
        t = time.time() if t is None else float(t)
        clean, frame = _clean_boxes(boxes), None
        if image_bytes is not None:
            _check_image(image_bytes, content_type)
            if len(image_bytes) <= self.max_frame_bytes:
                frame = (bytes(image_bytes), content_type, clean)
        with self._lock:
            cam = self._camera(camera)
            cam.history.append((t, count))
            cam.last_seen, cam.last_count, cam.frames = max(cam.last_seen, t), count, cam.frames + 1
            if frame is not None:
                cam.frame = frame
            self._cams.move_to_end(camera)

    def _camera(self, camera: str) -> _Camera:
        """The state of `camera`, created (and the stalest camera evicted) when new; caller holds the lock."""
        cam = self._cams.get(camera)
        if cam is None:
            while len(self._cams) >= self.max_cameras:
                self._cams.popitem(last=False)
            cam = self._cams[camera] = _Camera(history=deque(maxlen=self.max_points))
        return cam

    def cameras(self) -> list[dict[str, Any]]:
        """Every camera, sorted by id."""
        with self._lock:
            rows = [
                {"id": k, "last_seen": c.last_seen, "frames": c.frames, "last_count": c.last_count}
                for k, c in self._cams.items()
            ]
        return sorted(rows, key=lambda r: r["id"])

    def history(self, camera: str, seconds: float) -> list[tuple[float, int]]:
        """Points of the last `seconds` (at most history_s) of `camera`."""
        now = time.time()
        since = now - min(float(seconds), self.history_s)
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                return []
            while cam.history and cam.history[0][0] < now - self.history_s:
                cam.history.popleft()  # drop expired points here: record() stays O(1)
            return [p for p in cam.history if p[0] >= since]

    def latest_frame(self, camera: str) -> tuple[bytes, str, list[Box]] | None:
        """The last kept obfuscated frame of `camera`."""
        with self._lock:
            cam = self._cams.get(camera)
            return None if cam is None else cam.frame

    def health(self) -> dict[str, Any]:
        """Uptime, cameras and frames held, merged with `extra_health()`."""
        with self._lock:
            held = [c.frame for c in self._cams.values() if c.frame is not None]
            info: dict[str, Any] = {
                "status": "ok", "uptime_s": round(time.time() - self._started, 1), "cameras": len(self._cams),
                "frames_in_memory": len(held), "frame_bytes_in_memory": sum(len(f[0]) for f in held),
            }
        if self.extra_health is not None:
            info.update(self.extra_health())
        return info


def _check_camera(camera: str) -> None:
    """ValueError unless `camera` is a valid camera id."""
    if not isinstance(camera, str) or not CAMERA_ID_RE.match(camera):
        raise ValueError(f"camera id {camera!r}: 1-64 characters of A-Z a-z 0-9 . _ -")


def _check_image(data: bytes, content_type: str) -> None:
    """ValueError unless `data` starts like an image of `content_type`: the browser is told that type (nosniff)."""
    magic = IMAGE_TYPES.get(content_type)
    if magic is None:
        raise ValueError(f"content type {content_type!r}: one of {', '.join(IMAGE_TYPES)}")
    if not bytes(data[: len(magic)]) == magic:
        raise ValueError(f"image bytes do not look like {content_type}")


def _clean_boxes(boxes: Sequence[Sequence[float]]) -> list[Box]:
    """Boxes as lists of 4 or 5 finite floats; ValueError otherwise."""
    out = []
    for b in boxes:
        vals = [float(v) for v in b]
        if len(vals) not in (4, 5) or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"box {b!r}: [x1, y1, x2, y2] or [x1, y1, x2, y2, score] of finite numbers")
        out.append(vals)
    return out


class _Sessions:
    """Signed, expiring session tokens 'sid.expiry.hmac' (no key inside); logout revokes a sid in this process."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self.revoked: dict[str, float] = {}  # sid -> expiry, purged as they expire
        self.lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new token valid for ttl_s."""
        payload = f"{secrets.token_urlsafe(24)}.{int(time.time() + self.ttl_s)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, token: str | None) -> bool:
        """True for an unexpired, unrevoked token signed with this secret."""
        parts = (token or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return False
        payload = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(payload), parts[2]) or int(parts[1]) < time.time():
            return False
        with self.lock:
            return parts[0] not in self.revoked

    def revoke(self, token: str | None) -> None:
        """Refuse this token from now on (the browser's cookie is cleared too)."""
        if not self.valid(token):
            return
        sid, expiry = token.split(".")[:2]  # type: ignore[union-attr]
        now = time.time()
        with self.lock:
            self.revoked = {s: e for s, e in self.revoked.items() if e >= now}
            if len(self.revoked) < 100_000:  # bounded: a flood of logouts cannot grow memory without end
                self.revoked[sid] = float(expiry)


class _LoginLimiter:
    """Failed logins per client IP in a sliding window; a client over the limit is refused, right key or not."""

    def __init__(self, max_failures: int, window_s: float, max_clients: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        now = time.monotonic()
        with self.lock:
            times = self.failures.get(client)
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if not times or len(times) < self.max_failures:
                return 0.0
            return max(times[0] + self.window_s - now, 0.001)

    def fail(self, client: str) -> None:
        """Count one failed login of `client`."""
        with self.lock:
            times = self.failures.pop(client, None) or deque(maxlen=self.max_failures)
            times.append(time.monotonic())
            self.failures[client] = times  # most recent last: the stalest client is evicted first
            while len(self.failures) > self.max_clients:
                self.failures.popitem(last=False)

    def reset(self, client: str) -> None:
        """Forget the failures of a client that logged in."""
        with self.lock:
            self.failures.pop(client, None)


def _read_static(name: str) -> str:
    """A file of the static folder as text."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _page(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    """An HTML response with the dashboard's security headers."""
    return HTMLResponse(body, status_code=status, headers={**_HEADERS, **(headers or {})})


def _base(request: Request) -> str:
    """The dashboard's own path ('/', or '/prefix/' where it is mounted), for redirects and the cookie path."""
    return request.url_for("dashboard_page").path


def _client(request: Request) -> str:
    """The peer address (a proxy in front must pass the real one through uvicorn's --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


@dataclass
class _Auth:
    """The dashboard's login state: key check, sessions, failed-login limit."""

    api_key: bytes | None
    sessions: _Sessions
    limiter: _LoginLimiter

    def ok(self, request: Request) -> bool:
        """Whether the request may see the dashboard."""
        return self.api_key is None or self.sessions.valid(request.cookies.get(COOKIE_NAME))

    def key_matches(self, given: str) -> bool:
        """Constant-time comparison of a posted key with the API key (bytes: compare_digest refuses non-ASCII str)."""
        assert self.api_key is not None
        return len(given) <= MAX_KEY_CHARS and hmac.compare_digest(given.encode("utf-8"), self.api_key)


def dashboard_router(
    api_key: str | None, source: DashboardSource, *, session_ttl_s: float = SESSION_TTL_S,
    login_limit: tuple[int, float] = LOGIN_LIMIT, session_secret: bytes | None = None,
) -> APIRouter:
    """The dashboard: page '/', '/login' (GET form, POST key), POST '/logout', JSON under '/ui/'; api_key None: no login.

    Sessions are signed with `session_secret` (default: random per process, so a restart logs everyone out; pass a
    shared one when several worker processes serve the same dashboard).
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key is empty: pass the service's API key, or None for a loopback no-auth dashboard")
    auth = _Auth(
        api_key=None if api_key is None else api_key.encode("utf-8"),
        sessions=_Sessions(session_secret or secrets.token_bytes(32), session_ttl_s),
        limiter=_LoginLimiter(*login_limit),
    )
    router = APIRouter(include_in_schema=False)
    head = _read_static("head.html")  # the <head> lines both pages share; each adds its title
    templates = {name: _read_static(name).replace("{{head}}\n", head) for name in ("index.html", "login.html")}
    _add_page_routes(router, auth, templates)
    _add_login_routes(router, auth, templates["login.html"])
    _add_ui_routes(router, auth, source)
    _add_static_routes(router)
    return router


def _add_page_routes(router: APIRouter, auth: _Auth, templates: dict[str, str]) -> None:
    """GET '/': the dashboard page, or a redirect to the login form."""

    @router.get("/", name="dashboard_page")
    def page(request: Request) -> Response:
        if not auth.ok(request):
            return RedirectResponse(_base(request) + "login", status_code=303, headers={"Cache-Control": "no-store"})
        logout = "" if auth.api_key is None else '<form method="post" action="logout"><button>Log out</button></form>'
        return _page(templates["index.html"].replace("{{logout}}", logout))


def _login_form(template: str, error: str = "") -> str:
    """The login page with an (escaped) error line."""
    line = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return template.replace("{{error}}", line)


def _add_login_routes(router: APIRouter, auth: _Auth, template: str) -> None:
    """GET/POST '/login' and POST '/logout'."""

    @router.get("/login", name="dashboard_login")
    def login_form(request: Request) -> Response:
        if auth.ok(request):  # already in, or no login needed
            return RedirectResponse(_base(request), status_code=303)
        return _page(_login_form(template))

    @router.post("/login")
    def login(request: Request, key: str = Form("")) -> Response:
        if auth.api_key is None:
            return RedirectResponse(_base(request), status_code=303)
        client = _client(request)
        wait = auth.limiter.retry_after(client)
        if wait > 0:  # refused without looking at the key: a guess made while limited tells nothing
            msg = f"Too many failed logins; try again in {math.ceil(wait)} s."
            return _page(_login_form(template, msg), 429, {"Retry-After": str(math.ceil(wait))})
        if not auth.key_matches(key):
            auth.limiter.fail(client)
            return _page(_login_form(template, "Wrong key."), 401)
        auth.limiter.reset(client)
        response = RedirectResponse(_base(request), status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE_NAME, auth.sessions.issue(), max_age=int(auth.sessions.ttl_s), path=_base(request),
            httponly=True, samesite="strict", secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        auth.sessions.revoke(request.cookies.get(COOKIE_NAME))
        target = _base(request) + ("" if auth.api_key is None else "login")
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        response.delete_cookie(COOKIE_NAME, path=_base(request), httponly=True, samesite="strict")
        return response


def _unauthorized() -> JSONResponse:
    """401 for the JSON endpoints (the page script sends the browser to the login form)."""
    return JSONResponse({"detail": "not logged in"}, status_code=401, headers={"Cache-Control": "no-store"})


def _json(body: Any, status: int = 200) -> JSONResponse:
    """A JSON response that no cache keeps."""
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _add_ui_routes(router: APIRouter, auth: _Auth, source: DashboardSource) -> None:
    """The page's JSON: cameras, history, latest frame, health (sync handlers: a source may block on a database)."""

    @router.get("/ui/cameras")
    def ui_cameras(request: Request) -> Response:
        if not auth.ok(request):
            return _unauthorized()
        return _json({"now": time.time(), "cameras": source.cameras()})

    @router.get("/ui/history/{camera}")
    def ui_history(request: Request, camera: str, seconds: float = Query(600.0, gt=0, le=MAX_HISTORY_S)) -> Response:
        if not auth.ok(request):
            return _unauthorized()
        if not CAMERA_ID_RE.match(camera):
            return _json({"detail": "bad camera id"}, 400)
        points = [[float(t), int(c)] for t, c in source.history(camera, seconds)]
        return _json({"camera": camera, "seconds": seconds, "points": points})

    @router.get("/ui/frame/{camera}")
    def ui_frame(request: Request, camera: str) -> Response:
        # image and boxes in one answer, so the boxes drawn always belong to the frame shown
        if not auth.ok(request):
            return _unauthorized()
        frame = source.latest_frame(camera) if CAMERA_ID_RE.match(camera) else None
        if frame is None:
            return _json({"detail": "no frame"}, 404)
        data, content_type, boxes = frame
        if content_type not in IMAGE_TYPES:  # only image types reach the data: URL the page builds
            return _json({"detail": "frame of an unsupported type"}, 404)
        image = base64.b64encode(data).decode("ascii")
        return _json({"camera": camera, "content_type": content_type, "image": image, "boxes": [list(b) for b in boxes]})

    @router.get("/ui/health")
    def ui_health(request: Request) -> Response:
        if not auth.ok(request):
            return _unauthorized()
        return _json(source.health())


def _add_static_routes(router: APIRouter) -> None:
    """The page's script and style (public: they hold no data), read once."""
    files = {p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix]) for p in STATIC_DIR.iterdir() if p.suffix in _STATIC_TYPES}

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in files:
            return Response("not found", status_code=404, media_type="text/plain")
        body, media_type = files[name]
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=media_type, headers=headers)


__all__ = ["DashboardSource", "MemorySource", "dashboard_router", "COOKIE_NAME"]
