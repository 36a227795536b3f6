"""The Ray Serve backend: replicas on a local Ray instance count the same persons as the local detector, in batches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason='the Ray backend is an optional extra: pip install -e ".[ray]"')

from silhouette.errors import SilhouetteError  # noqa: E402
from silhouette.serve import ray_backend  # noqa: E402

pytestmark = pytest.mark.timeout(300)  # a replica that never comes up must fail the run, not hang it
FRAMES = ("f0000", "f0400", "f0794")
REPLICAS, MAX_BATCH = 2, 4
CONCURRENT = 24  # > REPLICAS * 2 * MAX_BATCH in flight: both replicas must take requests, and batches must form


@pytest.fixture(scope="module")
def frames(shared: Path) -> list[np.ndarray]:
    """The three 320x200 PETS test frames as HxWx3 uint8 BGR frames, as the service decodes uploads."""
    from silhouette.imaging import decode_image_file

    return [decode_image_file(shared / "weights" / "testdata" / f"pets2009_s2l1_v1_{f}_320x200.png") for f in FRAMES]


@pytest.fixture(scope="module")
def local_persons(frames: list[np.ndarray]) -> list[Any]:
    """Person detections of each frame from the detector in this process (the reference)."""
    import torch

    from silhouette.detectors import create_detector
    from silhouette.imaging import bgr_batch_to_tensor

    det = create_detector("yolox_nano")
    with torch.inference_mode():
        return [det.predict(bgr_batch_to_tensor([f]))[0].persons() for f in frames]


@pytest.fixture(scope="module")
def ray_detector() -> Iterator[ray_backend.RayDetectorHandle]:
    """Two yolox_nano replicas on a private local Ray instance, shared by the tests of this module."""
    import ray

    handle = ray_backend.start_ray_detector("yolox_nano", replicas=REPLICAS, max_batch=MAX_BATCH)
    yield handle
    handle.shutdown()
    assert not ray.is_initialized(), "shutdown() left the local Ray instance running"


def _predict_all(handle: ray_backend.RayDetectorHandle, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every frame predicted concurrently through the async interface, bounded in time."""

    async def run() -> list[dict[str, np.ndarray]]:
        return await asyncio.wait_for(asyncio.gather(*(handle.predict(im) for im in images)), 120)

    return asyncio.run(run())


@pytest.mark.slow
def test_two_replicas_count_like_the_local_detector(
    ray_detector: ray_backend.RayDetectorHandle, frames: list[np.ndarray], local_persons: list[Any]
) -> None:
    images = [frames[i % len(frames)] for i in range(CONCURRENT)]
    results = _predict_all(ray_detector, images)
    want = [len(p) for p in local_persons]
    assert all(want), "each PETS test frame shows people"
    assert [len(r["scores"]) for r in results] == [want[i % len(frames)] for i in range(CONCURRENT)]
    for i, r in enumerate(results):
        ref = local_persons[i % len(frames)]
        assert r["boxes"].dtype == np.float32 and r["boxes"].shape == (len(ref), 4)
        # batched, one onnxruntime thread: the same boxes up to float rounding
        np.testing.assert_allclose(r["boxes"], ref.boxes.numpy(), atol=0.05)
        np.testing.assert_allclose(r["scores"], ref.scores.numpy(), atol=1e-4)
    assert len(ray_detector.replica_pids()) == REPLICAS, f"answers came from {ray_detector.frames_by_pid}"


@pytest.mark.slow
def test_replicas_batch_concurrent_frames(ray_detector: ray_backend.RayDetectorHandle, frames: list[np.ndarray]) -> None:
    before = ray_detector.batch_sizes.copy()
    _predict_all(ray_detector, [frames[i % len(frames)] for i in range(CONCURRENT)])
    sizes = ray_detector.batch_sizes - before  # the batches of this load alone
    assert sum(sizes.values()) == CONCURRENT
    assert max(sizes) > 1, f"no detector batch held more than one frame: {dict(sizes)}"
    assert max(sizes) <= MAX_BATCH, f"a batch exceeded max_batch={MAX_BATCH}: {dict(sizes)}"


@pytest.mark.slow
def test_a_bad_frame_is_refused_before_it_is_sent(ray_detector: ray_backend.RayDetectorHandle) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        _predict_all(ray_detector, [np.zeros((200, 320, 3), np.float32)])


@pytest.mark.parametrize(
    ("detector", "replicas", "max_batch", "match"),
    [
        ("yolo_nope", 2, 8, "unknown detector 'yolo_nope'"),
        ("yolox_nano+nope*2", 1, 8, "unknown detector 'nope'"),
        ("yolox_nano", 0, 8, "--replicas 0"),
        ("yolox_nano", -1, 8, "--replicas -1"),
        ("yolox_nano", True, 8, "--replicas True"),
        ("yolox_nano", 2.0, 8, "--replicas 2.0"),
        ("yolox_nano", 1, 0, "--batch-size 0"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_ray_starts(
    monkeypatch: pytest.MonkeyPatch, detector: str, replicas: Any, max_batch: Any, match: str
) -> None:
    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a request that validation should have refused")

    monkeypatch.setattr(ray_backend, "_connect", no_ray)
    with pytest.raises(SilhouetteError, match=match.replace("+", r"\+").replace("*", r"\*")) as err:
        ray_backend.start_ray_detector(detector, replicas=replicas, max_batch=max_batch)
    assert "\n" not in str(err.value)


def test_missing_weights_fail_before_ray_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("SILHOUETTE_SHARED", str(tmp_path))
    monkeypatch.setattr(ray_backend, "_connect", lambda *a: pytest.fail("Ray was started without the weights"))
    with pytest.raises(SilhouetteError, match="weights file .*yolox_nano.onnx not found") as err:
        ray_backend.start_ray_detector("yolox_nano", replicas=1)
    assert "\n" not in str(err.value)


def test_an_absent_head_node_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port that nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        monkeypatch.setattr(ray_backend.ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray_backend.ray, "init", lambda **kw: pytest.fail("ray.init would retry for minutes"))
        with pytest.raises(SilhouetteError, match=f"nothing answers at 127.0.0.1:{port}") as err:
            ray_backend.start_ray_detector("yolox_nano", replicas=1, address=f"127.0.0.1:{port}")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_shutdown_stops_local_ray(ray_detector: ray_backend.RayDetectorHandle, frames: list[np.ndarray]) -> None:
    import ray

    ray_detector.shutdown()
    ray_detector.shutdown()  # idempotent: the fixture's teardown calls it again
    assert not ray.is_initialized()
    with pytest.raises(SilhouetteError, match="shut down"):
        _predict_all(ray_detector, frames[:1])
