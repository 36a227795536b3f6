"""Fuzzing what arrives from outside as images: files on the camera, uploads at the service, multipart bodies.

Random and mutated bytes get a 4xx answer or a one-line error: never a 500, a traceback or a hang."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from silhouette.errors import SilhouetteError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FRAME = "pets2009_s2l1_v1_f0000_320x200.png"


def _seeds(shared: Path) -> dict[str, bytes]:
    """Real encodings to mutate: a PETS frame as PNG and JPEG, and a tiny PNG."""
    img = cv2.imread(str(shared / "weights" / "testdata" / FRAME))
    small = cv2.resize(img, (40, 25))
    return {"png": cv2.imencode(".png", img)[1].tobytes(), "jpg": cv2.imencode(".jpg", img)[1].tobytes(),
            "small": cv2.imencode(".png", small)[1].tobytes()}


def _mutate(data: st.DataObject, blob: bytes) -> bytes:
    """A few byte flips, cuts and splices: the damage a network or an attacker does to a real image."""
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 5))):
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "splice", "grow"]))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
        elif op == "splice":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # claim a huge canvas in a PNG IHDR / JPEG SOF: the header check must catch it before decoding
            b[i : i + 4] = (0x7FFF0000 + data.draw(st.integers(0, 65535))).to_bytes(4, "big")
    return bytes(b)


@pytest.fixture(scope="module")
def seeds(shared: Path) -> dict[str, bytes]:
    return _seeds(shared)


@pytest.fixture(scope="module")
def client() -> TestClient:
    from silhouette.serve.app import create_app

    with TestClient(create_app("fastestdet", None, max_bytes=1 << 20)) as c:
        yield c


@FUZZ
@given(st.data())
def test_service_decoder_answers_4xx_or_an_image(seeds: dict[str, bytes], data: st.DataObject) -> None:
    from silhouette.imaging import ImageError, decode_frame

    blob = _mutate(data, seeds[data.draw(st.sampled_from(sorted(seeds)))]) if data.draw(st.booleans()) \
        else data.draw(st.binary(max_size=300))
    try:
        arr = decode_frame(blob, max_pixels=4096 * 4096)
    except ImageError as exc:
        assert 400 <= exc.status < 500 and "\n" not in str(exc)
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


@FUZZ
@given(st.data())
def test_camera_decoder_gives_an_image_or_one_line(seeds: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory,
                                                   data: st.DataObject) -> None:
    from silhouette.imaging import decode_image_file

    suffix = data.draw(st.sampled_from([".png", ".jpg"]))
    path = tmp_path_factory.mktemp("img") / f"frame{suffix}"
    path.write_bytes(_mutate(data, seeds["png" if suffix == ".png" else "jpg"]))
    try:
        arr = decode_image_file(path)
    except SilhouetteError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3


@FUZZ
@given(st.data())
def test_uploads_never_get_a_500(client: TestClient, seeds: dict[str, bytes], data: st.DataObject) -> None:
    """Raw bodies and multipart uploads with mutated images, names and boundaries: a 200 or a 4xx, always JSON."""
    blob = _mutate(data, seeds["small"]) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200))
    how = data.draw(st.sampled_from(["raw", "file", "files", "wrong_field", "many"]))
    if how == "raw":
        r = client.post("/v1/detect", content=blob, headers={"Content-Type": data.draw(st.sampled_from(
            ["image/png", "image/jpeg", "application/octet-stream", "text/plain"]))})
    elif how == "many":
        r = client.post("/v1/detect/batch", files=[("files", (f"{i}.png", blob, "image/png")) for i in range(data.draw(st.integers(0, 70)))])
    else:
        field = {"file": "file", "files": "files", "wrong_field": data.draw(st.text(max_size=8))}[how]
        url = "/v1/detect/batch" if how == "files" else "/v1/detect"
        r = client.post(url, files={field: (data.draw(st.text(max_size=20)), blob, "image/png")})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert r.headers["content-type"].startswith("application/json")


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["multipart/form-data; boundary=x", "multipart/form-data",
                                                 "multipart/form-data; boundary=" + "a" * 80, "multipart/mixed; boundary=x"]))
def test_malformed_multipart_bodies_are_4xx(client: TestClient, body: bytes, ctype: str) -> None:
    """Bodies that only claim to be multipart: broken boundaries, missing headers, random bytes."""
    for url in ("/v1/detect", "/v1/detect/batch"):
        r = client.post(url, content=b"--x\r\n" + body + b"\r\n--x--\r\n", headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:200])
