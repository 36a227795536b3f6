"""`silhouette obfuscate` is honest about inputs and outputs: pixel limit, one decode per image, OpenCV limits,
truncated videos, output permissions, SIGTERM and stale temporary files. `edge` shares the frame decoding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from silhouette.cli import main
from media import truncated_mp4, zero_png

pytestmark = pytest.mark.timeout(180)


def _one_line_error(err: str, command: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING no API key")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"silhouette {command}: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _silhouette(*argv: str) -> subprocess.Popen:
    """`silhouette ARGV` in its own process (it inherits SILHOUETTE_SHARED and the tests' ONNX cache)."""
    return subprocess.Popen([sys.executable, "-m", "silhouette", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture()
def umask_027() -> Iterator[None]:
    """A umask other than the usual 022, so a hard-coded mode cannot pass for 'what the umask gives'."""
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_obfuscate_refuses_oversized_inputs_in_one_line(onnx_path: Path, shared: Path, tmp_path: Path, capsys) -> None:
    big = zero_png(tmp_path / "big.png", 5000, 4000)
    ckpt = ["--checkpoint", str(onnx_path), "--no-progress"]
    assert main(["obfuscate", str(big), "--out", str(tmp_path / "o.png"), *ckpt]) == 2
    _one_line_error(capsys.readouterr().err, "obfuscate", "big.png", "5000x4000", "16,777,216", "resize it")
    video = shared / "data" / "pets2009" / "vtest.avi"
    assert main(["obfuscate", str(video), "--out", str(tmp_path / "o.mp4"), "--max-pixels", "400000", *ckpt]) == 2
    _one_line_error(capsys.readouterr().err, "obfuscate", "vtest.avi", "768x576", "400,000")
    gif = shared / "data" / "intel" / "worker-zone-detection.gif"
    assert main(["obfuscate", str(gif), "--out", str(tmp_path / "gif"), "--max-pixels", "100000", *ckpt]) == 2
    _one_line_error(capsys.readouterr().err, "obfuscate", "worker-zone-detection.gif", "480x270")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]
    assert main(["obfuscate", str(big), "--out", str(tmp_path / "o.png"), "--max-pixels", "20000000", *ckpt]) == 0
    assert cv2.imread(str(tmp_path / "o.png")).shape == (200, 320, 3)


def test_obfuscate_decodes_an_image_once(onnx_path: Path, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png"
    calls: list[str] = []
    real = cv2.imread

    def counting_imread(path: str, *args: object) -> np.ndarray | None:
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(cv2, "imread", counting_imread)
    assert main(["obfuscate", str(src), "--checkpoint", str(onnx_path), "--out", str(tmp_path / "o.png"), "--no-progress"]) == 0
    assert calls == [str(src)]


def test_opencv_decoder_limit_is_one_line_in_obfuscate_prepare_and_edge(onnx_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = folder / "cam.png"
    cv2.imwrite(str(img), np.zeros((100, 100, 3), np.uint8))  # 10,000 pixels: over OpenCV's limit below
    script = (
        "import contextlib, io, json, sys\n"
        "from silhouette.cli import main\n"
        "results = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(argv)\n"
        "    results.append([rc, err.getvalue()])\n"
        "print(json.dumps(results))\n"
    )
    commands = [
        ["obfuscate", str(img), "--checkpoint", str(onnx_path), "--out", str(tmp_path / "o.png"), "--no-progress"],
        ["prepare", "folder", "--source", str(folder), "--out", str(tmp_path / "ds"), "--no-progress"],
        ["edge", "--source", str(img), "--server", "http://127.0.0.1:9", "--checkpoint", str(onnx_path), "--no-spool",
         "--retries", "0"],
    ]
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for argv, (rc, err) in zip(commands, json.loads(proc.stdout.strip().splitlines()[-1])):
        assert rc == 2, (argv[0], err)
        _one_line_error(err, argv[0], "cam.png", "OPENCV_IO_MAX_IMAGE_PIXELS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_obfuscate_truncated_video_warns_and_strict_writes_nothing(onnx_path: Path, tmp_path: Path, capsys, caplog) -> None:
    clip, decoded = truncated_mp4(tmp_path / "cut.mp4")
    out = tmp_path / "out.mp4"
    ckpt = ["--checkpoint", str(onnx_path), "--no-progress"]
    assert main(["obfuscate", str(clip), "--out", str(out), "--strict", *ckpt]) == 2
    _one_line_error(capsys.readouterr().err, "obfuscate", "cut.mp4", f"decoded {decoded} of the 40 frames", "--strict")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]
    caplog.clear()
    assert main(["obfuscate", str(clip), "--out", str(out), *ckpt]) == 0
    assert f"obfuscated {decoded} frame(s)" in capsys.readouterr().out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cut.mp4" in warnings[0] and f"decoded {decoded} of the 40 frames" in warnings[0]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == decoded
    cap.release()


def test_all_outputs_get_the_same_umask_permissions(onnx_path: Path, shared: Path, tmp_path: Path, umask_027: None) -> None:
    video = shared / "data" / "pets2009" / "vtest.avi"
    image = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png"
    ckpt = ["--checkpoint", str(onnx_path), "--no-progress"]
    assert main(["obfuscate", str(video), "--out", str(tmp_path / "clip.mp4"), "--max-frames", "3", *ckpt]) == 0
    assert main(["obfuscate", str(video), "--out", str(tmp_path / "frames"), "--max-frames", "2", *ckpt]) == 0
    assert main(["obfuscate", str(image), "--out", str(tmp_path / "one.png"), *ckpt]) == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o640 for p in files}  # 0666 & ~027


@pytest.mark.parametrize("out_name", ["clip.mp4", "frames"])
def test_sigterm_mid_run_leaves_no_temp_and_no_half_output(onnx_path: Path, shared: Path, tmp_path: Path, out_name: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / out_name
    proc = _silhouette("obfuscate", str(shared / "data" / "pets2009" / "vtest.avi"), "--out", str(out),
                       "--checkpoint", str(onnx_path), "--no-progress")
    need = 1 if out.suffix else 3  # the video's temporary file, or three finished frame images
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len([p for p in out_dir.rglob("*") if p.is_file()]) < need:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len([p for p in out_dir.rglob("*") if p.is_file()]) >= need, "obfuscate never started writing"
        time.sleep(0.5)  # still well inside the 795-frame video
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["silhouette obfuscate: terminated (SIGTERM); partial outputs removed"]
    assert list(out_dir.iterdir()) == []


def test_temp_file_of_a_killed_run_is_swept_by_the_next_run(onnx_path: Path, shared: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".clip.silhouette-tmp-{dead.pid}-0123abcd.mp4"  # what SIGKILL leaves mid-write
    live = tmp_path / f".clip.silhouette-tmp-{os.getpid()}-89abcdef.mp4"  # a live writer's: never touched
    for p in (stale, live):
        p.write_bytes(b"\x00" * 1000)
    video = shared / "data" / "pets2009" / "vtest.avi"
    assert main(["obfuscate", str(video), "--out", str(tmp_path / "clip.mp4"), "--max-frames", "2", "--checkpoint", str(onnx_path), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", live.name])
