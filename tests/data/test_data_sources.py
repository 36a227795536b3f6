"""Frame sources: decoding real footage (AVI, MP4, GIF, image folders), sampling, resizing, errors."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from silhouette.data.sources import count_frames, iter_frames, open_source, parse_size
from silhouette.errors import SilhouetteError
from silhouette.imaging import resize_frame
from silhouette.paths import data_dir

VTEST = data_dir() / "pets2009" / "vtest.avi"
INTEL = data_dir() / "intel"


def _pyav_frames(path: Path, limit: int | None = None) -> list[tuple[float, np.ndarray]]:
    """Independent decode through PyAV: (time in s, BGR image) per frame."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append((float(frame.time), frame.to_ndarray(format="bgr24")))
            if limit is not None and len(out) >= limit:
                break
    return out


def test_vtest_count_and_every_sampling() -> None:
    assert count_frames(VTEST) == 795
    kept = [f.index for f in iter_frames(VTEST, every=7)]
    assert kept == list(range(0, 795, 7))


def test_vtest_fps_sampling_by_timestamp() -> None:
    frames = list(iter_frames(VTEST, fps=2.5))  # 10 fps footage -> one frame in four
    assert [f.index for f in frames] == list(range(0, 795, 4))
    assert frames[1].timestamp == pytest.approx(0.4)
    assert all(f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8 for f in frames[:3])


@pytest.mark.parametrize("name", ["people-detection.gif", "worker-zone-detection.gif"])
def test_gif_matches_pyav(name: str) -> None:
    path = INTEL / name
    ours = list(iter_frames(path))
    ref = _pyav_frames(path)
    assert len(ours) == len(ref) == count_frames(path)
    for k in (0, len(ref) // 2, len(ref) - 1):
        assert np.array_equal(ours[k].image, ref[k][1])
        assert ours[k].timestamp == pytest.approx(ref[k][0], abs=1e-3)
    # GIF frame delays vary; timestamps must still increase
    assert all(b.timestamp > a.timestamp for a, b in zip(ours, ours[1:]))


def test_gif_fps_sampling_spacing() -> None:
    path = INTEL / "people-detection.gif"
    all_frames = list(iter_frames(path))
    kept = list(iter_frames(path, fps=5.0))
    duration = all_frames[-1].timestamp
    assert abs(len(kept) - (math.floor(duration * 5.0) + 1)) <= 1
    gaps = [b.timestamp - a.timestamp for a, b in zip(kept, kept[1:])]
    assert min(gaps) >= 0.2 - 0.1  # never closer than one period minus one source frame


def test_mp4_first_frames_match_pyav() -> None:
    path = INTEL / "one-by-one-person-detection.mp4"
    assert count_frames(path) == 1394
    ours = []
    for f in iter_frames(path):
        ours.append(f)
        if len(ours) == 3:
            break
    ref = _pyav_frames(path, limit=3)
    for a, (t, img) in zip(ours, ref):
        assert a.image.shape == (432, 768, 3)
        assert np.array_equal(a.image, img)
        assert a.timestamp == pytest.approx(t, abs=1e-3)


def test_image_folder_natural_order_and_single_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = {n: rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for n in ("f10.png", "f2.png", "f1.jpg")}
    for n, img in imgs.items():
        cv2.imwrite(str(tmp_path / n), img)
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(iter_frames(tmp_path))
    assert len(frames) == 3 and count_frames(tmp_path) == 3
    assert np.array_equal(frames[1].image, imgs["f2.png"]) and np.array_equal(frames[2].image, imgs["f10.png"])
    single = list(iter_frames(tmp_path / "f2.png"))
    assert len(single) == 1 and np.array_equal(single[0].image, imgs["f2.png"])


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SilhouetteError, match="not found"):
        open_source(tmp_path / "missing.mp4")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(SilhouetteError, match="broken.mp4"):
        open_source(bad)
    badimg = tmp_path / "broken.png"
    badimg.write_bytes(b"\x89PNG garbage")
    with pytest.raises(SilhouetteError, match="broken.png"):
        open_source(badimg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SilhouetteError, match="no images"):
        open_source(tmp_path / "empty")
    # live sources open lazily; an unreachable stream or absent webcam fails with one clear error
    assert open_source("rtsp://127.0.0.1:9/cam").kind == "stream"
    with pytest.raises(SilhouetteError, match="cannot open stream"):
        list(iter_frames("http://127.0.0.1:9/clip.mp4"))
    assert open_source(99).kind == "webcam" and open_source("99").name == "webcam99"
    with pytest.raises(SilhouetteError, match="cannot open webcam"):
        list(iter_frames(99))
    with pytest.raises(SilhouetteError, match="exclusive"):
        list(iter_frames(VTEST, every=2, fps=1.0))


def test_resize_and_parse_size() -> None:
    img = next(iter_frames(VTEST)).image
    small = resize_frame(img, (320, 200))
    assert small.shape == (200, 320, 3)
    assert np.array_equal(small, cv2.resize(img, (320, 200), interpolation=cv2.INTER_AREA))
    assert parse_size("640x400") == (640, 400)
    for bad in ("320", "axb", "320x2", "0x0"):
        with pytest.raises(SilhouetteError, match="--size"):
            parse_size(bad)
