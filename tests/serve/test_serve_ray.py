"""`silhouette serve --backend ray`: the same HTTP API, auth and counts with the detector on Ray Serve replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import cv2
import httpx
import numpy as np
import pytest

from silhouette.errors import SilhouetteError
from silhouette.serve.backends import check_backend

API_KEY = "test-key-0123456789"  # the key the `server` fixture (conftest.py) was started with

REPLICAS = 2
CONCURRENT = 12  # frames posted at once: more than one replica's batch, so both replicas answer


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real uvicorn server whose app runs the detector as 2 replicas on a private local Ray instance."""
    pytest.importorskip("ray.serve", reason='the Ray backend is an optional extra: pip install -e ".[ray]"')
    import ray

    from silhouette.serve.app import app_from_config
    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.server import ServerThread

    key_file = tmp_path_factory.mktemp("ray_key") / "key"
    key_file.write_text(API_KEY + "\n")
    cfg = ServiceConfig(backend="ray", replicas=REPLICAS, batch_size=4, api_key_env=None, api_key_file=str(key_file))
    srv = ServerThread(app_from_config(cfg)).start(timeout=240)  # the lifespan starts Ray and waits for the replicas
    yield srv
    srv.stop()
    assert not ray.is_initialized(), "the app's shutdown left the local Ray instance running"


def _jpegs(frames: list[np.ndarray]) -> list[bytes]:
    """The frames as JPEG bodies, as a camera posts them."""
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]


def _post_all(url: str, bodies: list[bytes]) -> list[dict[str, Any]]:
    """POST every body to /v1/detect at once; the JSON answers in order (any non-200 fails the test)."""

    async def run() -> list[dict[str, Any]]:
        """All posts concurrently on one client."""
        async with httpx.AsyncClient(base_url=url, timeout=120, headers={"X-API-Key": API_KEY}) as c:
            replies = await asyncio.gather(*(c.post("/v1/detect", content=b, headers={"content-type": "image/jpeg"}) for b in bodies))
        assert [r.status_code for r in replies] == [200] * len(bodies), [r.text for r in replies if r.status_code != 200]
        return [r.json() for r in replies]

    return asyncio.run(run())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_backend_answers_like_the_local_backend(ray_server: Any, server: Any, testdata_bgr: list[np.ndarray]) -> None:
    bodies = _jpegs(testdata_bgr)
    local = _post_all(server.url, bodies)
    assert all(r["count"] for r in local), "each PETS test frame shows people"
    remote = _post_all(ray_server.url, [bodies[i % len(bodies)] for i in range(CONCURRENT)])
    assert [r["count"] for r in remote] == [local[i % len(bodies)]["count"] for i in range(CONCURRENT)]
    for i, r in enumerate(remote):
        ref = local[i % len(bodies)]
        # one onnxruntime thread per replica, batched: the same boxes up to float rounding
        np.testing.assert_allclose(r["boxes"], ref["boxes"], atol=0.1)
        assert (r["width"], r["height"], r["detector"]) == (ref["width"], ref["height"], ref["detector"])
    handle = ray_server.app.state.detection.batcher.handle
    assert len(handle.replica_pids()) == REPLICAS, f"answers came from {dict(handle.frames_by_pid)}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_backend_keeps_auth_and_limits(ray_server: Any, testdata_bgr: list[np.ndarray]) -> None:
    body = _jpegs(testdata_bgr[:1])[0]
    with httpx.Client(base_url=ray_server.url, timeout=60) as c:
        assert c.post("/v1/detect", content=body, headers={"content-type": "image/jpeg"}).status_code == 401
        wrong = c.post("/v1/detect", content=body, headers={"content-type": "image/jpeg", "X-API-Key": "wrong"})
        assert wrong.status_code == 401
        bad = c.post("/v1/detect", content=b"not an image", headers={"content-type": "image/jpeg", "X-API-Key": API_KEY})
        assert bad.status_code == 400
        assert c.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "ray", "workers": 2}, "--backend ray with --workers 2: each worker would redeploy"),
        ({"backend": "local", "replicas": 2}, "--replicas and --ray-address need --backend ray"),
        ({"backend": "local", "ray_address": "auto"}, "--replicas and --ray-address need --backend ray"),
        ({"backend": "ray", "replicas": 0}, "--replicas 0"),
        ({"backend": "gpu"}, "--backend 'gpu'"),
        ({"backend": "ray", "pair": "x.pt"}, "--pair serves"),
    ],
)
def test_bad_backend_settings_are_one_line(kwargs: dict[str, Any], match: str) -> None:
    args = {"backend": "local", "replicas": 1, "ray_address": None, **kwargs}
    with pytest.raises(SilhouetteError, match=match) as err:
        check_backend(**args)
    assert "\n" not in str(err.value)


def test_serve_refuses_ray_with_workers_before_anything_starts(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from silhouette.cli import main

    monkeypatch.chdir(tmp_path)  # a database file would land here if serve got that far
    for argv, match in (
        (["--backend", "ray", "--replicas", "2", "--workers", "2"], "--backend ray with --workers 2"),
        (["--replicas", "3"], "--replicas and --ray-address need --backend ray"),
        (["--backend", "ray", "--replicas", "0"], "--replicas 0"),
    ):
        assert main(["serve", "--no-auth", "--port", "1", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("silhouette serve: error: ") and match in err and "\n" not in err, err
    assert not list(tmp_path.iterdir()), "serve created files before refusing its options"
