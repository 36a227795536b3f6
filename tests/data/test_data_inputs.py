"""Honest inputs for `prepare` and every frame source: pixel limit from headers, one decode per image, truncated
videos, OpenCV decoder limits, and a failed or terminated prepare that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from silhouette.cli import main
from silhouette.data import load_manifest, prepare_dataset
from silhouette.data.sources import iter_frames, open_source
from silhouette.errors import SilhouetteError
from silhouette.paths import data_dir
from media import truncated_mp4, zero_png

VTEST = data_dir() / "pets2009" / "vtest.avi"
GIF = data_dir() / "intel" / "people-detection.gif"  # 480x270, 23 frames


def _one_line_error(err: str, command: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"silhouette {command}: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak Python/numpy memory while `fn` runs (decoded frames are numpy arrays, which tracemalloc sees)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_large_image_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    big = zero_png(tmp_path / "big.png", 5000, 4000)  # 20 Mpx > 4096x4096; 60 MB once decoded

    def refuse() -> None:
        with pytest.raises(SilhouetteError, match=r"big\.png: image is 5000x4000 = 20,000,000 pixels, over the limit of 16,777,216; resize it"):
            open_source(big)

    assert _peak_bytes(refuse) < 5_000_000
    folder = tmp_path / "folder"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 30, 3), np.uint8))
    (folder / "b.png").write_bytes(big.read_bytes())
    frames = iter_frames(folder)
    assert next(frames).image.shape == (20, 30, 3)

    def refuse_in_folder() -> None:
        with pytest.raises(SilhouetteError, match=r"b\.png: image is 5000x4000"):
            next(frames)

    assert _peak_bytes(refuse_in_folder) < 5_000_000
    # an explicit, higher limit lets it through, decoded at full size
    assert next(iter_frames(open_source(big, max_pixels=20_000_000))).image.shape == (4000, 5000, 3)


def test_decompression_bomb_refused_cheaply(tmp_path: Path) -> None:
    bomb = zero_png(tmp_path / "bomb.png", 20000, 20000)  # ~0.4 MB on disk, 1.2 GB decoded
    assert bomb.stat().st_size < 2_000_000
    t0 = time.perf_counter()
    with pytest.raises(SilhouetteError, match=r"bomb\.png: .*16,777,216"):
        open_source(bomb)
    with pytest.raises(SilhouetteError, match=r"bomb\.png: .*16,777,216"):
        list(iter_frames(tmp_path))
    assert time.perf_counter() - t0 < 5


def test_each_image_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), np.full((20, 30, 3), 7, np.uint8))
    calls: list[str] = []
    real = cv2.imread

    def counting_imread(path: str, *args: object) -> np.ndarray | None:
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(cv2, "imread", counting_imread)
    frames = list(iter_frames(img))
    assert len(frames) == 1 and int(frames[0].image[0, 0, 0]) == 7
    assert calls == [str(img)]


def test_video_and_gif_frame_size_checked_from_the_header(tmp_path: Path) -> None:
    with pytest.raises(SilhouetteError, match=r"vtest\.avi: video frame is 768x576 = 442,368 pixels, over the limit of 400,000; downscale"):
        open_source(VTEST, max_pixels=400_000)
    with pytest.raises(SilhouetteError, match=r"people-detection\.gif: video frame is 480x270"):
        open_source(GIF, max_pixels=100_000)
    assert open_source(VTEST, max_pixels=442_368).count() == 795
    with pytest.raises(SilhouetteError, match="--max-pixels"):
        open_source(VTEST, max_pixels=0)


def test_prepare_refuses_large_footage_with_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((20, 30, 3), np.uint8))
    zero_png(src / "b.png", 5000, 4000)
    assert main(["prepare", "folder", "--source", str(src), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, "prepare", "b.png", "16,777,216", "resize it")
    rc = main(["prepare", "video", "--source", str(GIF), "--out", str(tmp_path / "ds"), "--max-pixels", "100000", "--no-progress"])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "prepare", "people-detection.gif", "480x270", "100,000")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]
    rc = main(["prepare", "folder", "--source", str(src), "--out", str(tmp_path / "ds"), "--max-pixels", "20000000",
               "--size", "32x32", "--no-progress"])
    assert rc == 0 and len(load_manifest(tmp_path / "ds")["frames"]) == 2


def test_prepare_truncated_video_warns_and_strict_writes_nothing(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    clip, decoded = truncated_mp4(tmp_path / "cut.mp4")
    out = tmp_path / "ds"
    assert main(["prepare", "video", "--source", str(clip), "--out", str(out), "--strict", "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, "prepare", "cut.mp4", f"decoded {decoded} of the 40 frames", "--strict")
    assert not out.exists()
    caplog.clear()
    assert main(["prepare", "video", "--source", str(clip), "--out", str(out), "--no-progress"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"decoded {decoded} of the 40 frames" in warnings[0] and "cut.mp4" in warnings[0]
    assert len(load_manifest(out)["frames"]) == decoded
    # a complete file gives no warning: the GIF promises and holds 23 frames
    caplog.clear()
    assert main(["prepare", "video", "--source", str(GIF), "--out", str(tmp_path / "gif"), "--strict", "--no-progress"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_failed_prepare_records_nothing_so_the_corrected_retry_needs_no_force(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(4):
        cv2.imwrite(str(src / f"cam-{i}.png"), np.full((40, 60, 3), i * 40, np.uint8))
    (src / "cam-9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorted last: fails after 4 frames were written
    out = tmp_path / "ds"
    with pytest.raises(SilhouetteError, match="cam-9.png"):
        prepare_dataset("folder", out, sources=[str(src)], progress=False)
    assert not out.exists()  # no frames, no options file
    out.mkdir()  # an existing --out keeps what it held; only this run's frames go
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SilhouetteError, match="cam-9.png"):
        prepare_dataset("folder", out, sources=[str(src)], progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (src / "cam-9.png").unlink()
    prepare_dataset("folder", out, size=(64, 40), sources=[str(src)], progress=False)  # other options, no --force
    m = load_manifest(out)
    assert m["size"] == [64, 40] and m["stats"] == {"written": 4, "skipped": 0, "frames": 4}
    assert json.loads((out / ".prepare-options.json").read_text())["size"] == [64, 40]


def test_frames_left_by_a_killed_run_are_rewritten_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    stale = out / "frames" / "people-detection" / "000000.png"
    stale.parent.mkdir(parents=True)
    cv2.imwrite(str(stale), np.zeros((10, 10, 3), np.uint8))  # a killed run with other options: no manifest, no record
    prepare_dataset("video", out, sources=[str(GIF)], every=4, progress=False)
    m = load_manifest(out)
    assert m["stats"] == {"written": 6, "skipped": 0, "frames": 6}
    assert cv2.imread(str(stale)).shape == (200, 320, 3)


def test_sigterm_mid_prepare_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "pets"
    proc = subprocess.Popen([sys.executable, "-m", "silhouette", "prepare", "pets2009", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob("frames/*/*.png"))) < 5:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len(list(out.glob("frames/*/*.png"))) >= 5, "prepare never started writing frames"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["silhouette prepare: terminated (SIGTERM); partial outputs removed"]
    assert not out.exists()
    assert os.listdir(tmp_path) == []
