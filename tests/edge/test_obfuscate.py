"""`silhouette obfuscate` on an image, a folder, a video and a GIF; atomic outputs; one-line CLI errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from silhouette.cli import main


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]


def test_obfuscate_single_image_matches_model(checkpoint: Path, shared: Path, tmp_path: Path, capsys) -> None:
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner

    src = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png"
    out = tmp_path / "one.png"
    assert main(["obfuscate", str(src), "--checkpoint", str(checkpoint), "--out", str(out), "--show-fps"]) == 0
    text = capsys.readouterr().out
    assert "obfuscated 1 frame(s)" in text and "frames/s obfuscator only" in text
    got = cv2.imread(str(out))
    expected = EdgeObfuscator(load_runner(checkpoint, "onnx"))(cv2.imread(str(src)))
    assert got.shape == (200, 320, 3) and np.array_equal(got, expected)  # PNG is lossless
    assert [p.name for p in tmp_path.iterdir()] == ["one.png"]  # no temp files left behind


def test_obfuscate_folder_to_jpg_folder_resizes(checkpoint: Path, shared: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):  # full-size camera frames: must come out at the model size
        cv2.imwrite(str(folder / f"cam_{i}.png"), cv2.resize(cv2.imread(str(next((shared / "weights" / "testdata").glob("*.png")))), (640, 400)))
    out = tmp_path / "out"
    assert main(["obfuscate", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--format", "jpg", "--quality", "80", "--size", "160x100"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cam_0.jpg", "cam_1.jpg", "cam_2.jpg"]
    assert all(cv2.imread(str(out / n)).shape == (100, 160, 3) for n in names)


def test_obfuscate_video_writes_expected_frames(checkpoint: Path, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    video = shared / "data" / "pets2009" / "vtest.avi"
    assert main(["obfuscate", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--every", "2", "--max-frames", "6"]) == 0
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (200, 320, 3)
    assert fps == pytest.approx(5.0, abs=0.1)  # 10 fps source, every 2nd frame
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_obfuscate_gif_to_folder(checkpoint: Path, shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "gif_frames"
    gif = shared / "data" / "intel" / "worker-zone-detection.gif"
    assert main(["obfuscate", str(gif), "--checkpoint", str(checkpoint), "--out", str(out), "--max-frames", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]


def test_obfuscate_cli_errors_are_one_line_exit_2(checkpoint: Path, shared: Path, tmp_path: Path, capsys) -> None:
    img = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png"
    assert main(["obfuscate", str(tmp_path / "nope.mp4"), "--checkpoint", str(checkpoint)]) == 2
    _one_line_error(capsys, "nope.mp4", "not found")
    assert main(["obfuscate", str(img), "--checkpoint", str(checkpoint), "--size", "320by200"]) == 2
    _one_line_error(capsys, "--size")
    assert main(["obfuscate", str(img), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    _one_line_error(capsys, "missing.pt")
    assert main(["obfuscate", str(shared / "weights" / "testdata"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.png")]) == 2
    _one_line_error(capsys, "x.png")
    assert main(["obfuscate", str(img), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.gif")]) == 2
    _one_line_error(capsys, "GIF")
    assert main(["obfuscate", str(img), "--checkpoint", str(checkpoint), "--codec", "h264x"]) == 2
    _one_line_error(capsys, "--codec")
    assert not any(tmp_path.iterdir())
