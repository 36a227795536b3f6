"""The detection service on a real loopback uvicorn server: auth, hostile uploads, limits, batching, counts, metrics."""

from __future__ import annotations

import logging

import cv2
import httpx
import numpy as np
import pytest

API_KEY = "test-key-0123456789"  # the key the `server` fixture (conftest.py) was started with
KEY = {"X-API-Key": API_KEY}


def _jpeg(img: np.ndarray, q: int = 90) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


def _expected(detector, jpeg: bytes) -> list:
    """What the detector itself finds on the frame the server decodes from the same JPEG."""
    from silhouette.imaging import bgr_batch_to_tensor, decode_frame

    return detector.predict(bgr_batch_to_tensor([decode_frame(jpeg)]))[0].persons()


def test_auth_refused_without_or_with_wrong_key(server, testdata_bgr, caplog) -> None:
    body = _jpeg(testdata_bgr[1])
    with caplog.at_level(logging.WARNING, logger="silhouette.serve"), httpx.Client(base_url=server.url, timeout=30) as c:
        missing = c.post("/v1/detect", content=body, headers={"content-type": "image/jpeg"})
        wrong = c.post("/v1/detect", content=body, headers={"X-API-Key": "not-the-key", "content-type": "image/jpeg"})
        counts = c.get("/v1/counts/cam0")
        ok = c.post("/v1/detect", content=body, headers={**KEY, "content-type": "image/jpeg"})
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    assert wrong.status_code == 401 and counts.status_code == 401
    assert ok.status_code == 200
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) >= 2 and any("missing" in m for m in refusals) and any("wrong" in m for m in refusals)
    # the log carries no image bytes (and never the key that was tried)
    assert all(len(m) < 300 and "not-the-key" not in m and "JFIF" not in m for m in refusals)


def test_detect_matches_detector_raw_and_multipart(server, detector, testdata_bgr) -> None:
    body = _jpeg(testdata_bgr[2])
    exp = _expected(detector, body)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        raw = c.post("/v1/detect", content=body, headers={**KEY, "content-type": "image/jpeg"}, params={"camera_id": "gate-1"}).json()
        multi = c.post("/v1/detect", files={"file": ("f.jpg", body, "image/jpeg")}, headers=KEY).json()
    assert raw["count"] == len(exp) >= 3  # frame 794 has 7 GT persons; the clean frame is easy for YOLOX-Nano
    assert (raw["width"], raw["height"], raw["detector"], raw["camera_id"]) == (320, 200, "yolox_nano", "gate-1")
    np.testing.assert_allclose(np.array(raw["boxes"]), exp.boxes.numpy(), atol=0.01)
    assert multi["count"] == raw["count"] and multi["boxes"] == raw["boxes"]


@pytest.mark.parametrize(
    "name,make,status",
    [
        ("garbage", lambda j: bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), 400),
        ("truncated jpeg", lambda j: j[: len(j) // 2], 422),
        ("text", lambda j: b"hello, this is not an image\n" * 20, 400),
        ("empty", lambda j: b"", 400),
        ("gif not accepted", lambda j: _gif(), 415),
    ],
)
def test_bad_upload_is_refused_then_service_still_works(server, testdata_bgr, name, make, status) -> None:
    good = _jpeg(testdata_bgr[0])
    with httpx.Client(base_url=server.url, timeout=30) as c:
        bad = c.post("/v1/detect", content=make(good), headers={**KEY, "content-type": "application/octet-stream"})
        after = c.post("/v1/detect", content=good, headers={**KEY, "content-type": "image/jpeg"})
    assert bad.status_code == status, (name, bad.text)
    assert bad.json()["detail"]  # a clear message, not an empty error
    assert after.status_code == 200 and after.json()["count"] >= 1


def _gif() -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="GIF")
    return buf.getvalue()


def test_oversize_body_and_pixels_give_413(server, testdata_bgr) -> None:
    good = _jpeg(testdata_bgr[0])
    huge_pixels = cv2.imencode(".png", np.zeros((1100, 1000, 3), np.uint8))[1].tobytes()  # 1.1 MP > 1 MP, ~5 kB

    def chunks():
        for _ in range(40):
            yield b"\xff" * 10_000  # 400 kB streamed without a Content-Length

    with httpx.Client(base_url=server.url, timeout=30) as c:
        declared = c.post("/v1/detect", content=b"\0" * 400_000, headers=KEY)
        streamed = c.post("/v1/detect", content=chunks(), headers=KEY)
        pixels = c.post("/v1/detect", content=huge_pixels, headers=KEY)
        after = c.post("/v1/detect", content=good, headers=KEY)
    assert declared.status_code == 413 and "300000" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert pixels.status_code == 413 and "pixels" in pixels.json()["detail"]
    assert after.status_code == 200


def test_batch_counts_metrics_health_docs(server, detector, testdata_bgr) -> None:
    bodies = [_jpeg(f) for f in testdata_bgr]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        batch = c.post("/v1/detect/batch", files=[("files", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(bodies)],
                       headers=KEY, params={"camera_id": "cam-b"})
        bad_batch = c.post("/v1/detect/batch", files=[("files", ("a.jpg", bodies[0], "image/jpeg")), ("files", ("b.jpg", b"nope", "image/jpeg"))], headers=KEY)
        counts = c.get("/v1/counts/cam-b", headers=KEY)
        unknown = c.get("/v1/counts/never-seen", headers=KEY)
        bad_cam = c.post("/v1/detect", content=bodies[0], headers=KEY, params={"camera_id": "../etc"})
        health = c.get("/healthz")
        metrics = c.get("/metrics").text
        spec = c.get("/openapi.json").json()
        docs = c.get("/docs")
    assert batch.status_code == 200
    got = [r["count"] for r in batch.json()]
    assert got == [len(_expected(detector, b)) for b in bodies]
    assert bad_batch.status_code == 400 and bad_batch.json()["detail"].startswith("image 1:")
    assert counts.status_code == 200
    summary = counts.json()
    assert summary["frames"] == 3 and summary["last"] == got[-1] and summary["max"] == max(got)
    assert unknown.status_code == 404 and bad_cam.status_code == 422
    assert health.json()["status"] == "ok"
    assert 'silhouette_requests_total{endpoint="/v1/detect/batch",status="200"}' in metrics
    assert "silhouette_request_latency_seconds_bucket" in metrics and "silhouette_people_counted_total" in metrics
    assert 'silhouette_errors_total{endpoint="/v1/detect/batch",reason="bad_image_400"}' in metrics
    paths = spec["paths"]
    assert {"/v1/detect", "/v1/detect/batch", "/v1/counts/{camera_id}", "/healthz", "/metrics"} <= set(paths)
    for p in ("/v1/detect", "/v1/detect/batch"):
        op = paths[p]["post"]
        assert op["description"] and "multipart/form-data" in op["requestBody"]["content"] and "401" in op["responses"]
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_concurrent_requests_are_batched(detector, testdata_bgr) -> None:
    """Eight simultaneous requests run as detector batches (batch size 8) and each gets its own answer."""
    import asyncio

    from silhouette.serve.app import create_app

    app = create_app("yolox_nano", None, detector=detector, batch_size=8, batch_wait_ms=200)
    bodies = [_jpeg(testdata_bgr[i % 3]) for i in range(8)]

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/v1/detect", content=b) for b in bodies))
            return [r.json()["count"] for r in rs]

    counts = asyncio.run(run())
    expected = [len(_expected(detector, b)) for b in bodies]
    assert counts == expected
    batches = app.state.metrics.batches
    assert batches.collect()[0].samples  # histogram exported
    n_calls = [s.value for s in batches.collect()[0].samples if s.name.endswith("_count")][0]
    assert n_calls < 8  # at least some requests shared a detector call


def test_api_key_sources(tmp_path, monkeypatch) -> None:
    from silhouette.wire import load_api_key
    from silhouette.errors import SilhouetteError

    f = tmp_path / "key"
    f.write_text("  abc123 \n")
    assert load_api_key(None, f) == "abc123"
    monkeypatch.setenv("MY_KEY", "zzz")
    assert load_api_key("MY_KEY") == "zzz"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(SilhouetteError, match="MY_KEY"):
        load_api_key("MY_KEY")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SilhouetteError, match="empty"):
        load_api_key(None, tmp_path / "empty")


def test_worker_processes_find_the_app_and_protocol_by_name() -> None:
    """`serve --workers N` hands uvicorn import strings; they must name what the split modules define."""
    from uvicorn.importer import import_from_string

    from silhouette.serve import app, connections
    from silhouette.serve.limits import ConnectionLimits
    from silhouette.serve.server import WORKER_APP

    assert import_from_string(WORKER_APP) is app.app_from_env
    protocol = import_from_string(connections.uvicorn_options(ConnectionLimits(), by_name=True)["http"])
    assert protocol is connections.GuardedH11Protocol
