"""`silhouette prepare` / `silhouette label` run in-process: help, listing, summaries, one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from silhouette.cli import main
from silhouette.data import load_manifest
from silhouette.paths import data_dir


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_prepare_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--size", "--every", "--fps", "--format", "--quality", "--force", "--source",
                "--camera-pattern", "--split-fractions", "--list"):
        assert opt in out


def test_prepare_list(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "prepare", "--list")
    assert rc == 0
    for name in ("pets2009", "intel", "video", "folder"):
        assert f"\n{name} " in f"\n{out}"
    assert "by camera" in out and "by time" in out and "people-detection" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["prepare", "pets2009", "--out", "{tmp}/x", "--size", "320by200"], "--size"),
        (["prepare", "video", "--out", "{tmp}/x", "--source", "{tmp}/missing.mp4"], "missing.mp4"),
        (["prepare", "pets2009", "--out", "{tmp}/x", "--split-fractions", "0.5,0.5"], "--split-fractions"),
        (["prepare", "pets2009"], "--out"),
        (["prepare", "intel", "--out", "{tmp}/x", "--camera-split", "people-detection=holdout"], "--camera-split"),
        (["label", "{tmp}", "--detector", "yolo_fastest_xl"], "silhouette prepare"),
    ],
)
def test_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needle: str) -> None:
    rc, _, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert rc == 2
    line = _one_line_error(err)
    assert line.startswith(f"silhouette {argv[0]}: error:") and needle in line


def test_prepare_summary_and_label_counts(capsys: pytest.CaptureFixture[str], tmp_path: Path, pets_sparse: Path) -> None:
    gif = data_dir() / "intel" / "worker-zone-detection.gif"
    rc, out, _ = _run(capsys, "prepare", "video", "--out", str(tmp_path / "own"), "--source", str(gif),
                      "--size", "160x100", "--fps", "5", "--format", "jpg", "--quality", "80", "--no-progress")
    assert rc == 0
    m = load_manifest(tmp_path / "own")
    n = len(m["frames"])
    assert m["size"] == [160, 100] and m["created_with"]["jpeg_quality"] == 80 and 15 <= n <= 30
    assert f"{n} frames of 160x100" in out and "worker-zone-detection" in out and "ground truth: none" in out
    rc, _, err = _run(capsys, "prepare", "video", "--out", str(tmp_path / "own"), "--source", str(gif), "--no-progress")
    assert rc == 2 and "--force" in _one_line_error(err)

    root = tmp_path / "pets"
    shutil.copytree(pets_sparse, root)
    rc, out, _ = _run(capsys, "prepare", "pets2009", "--out", str(root), "--every", "40", "--no-progress")
    assert rc == 0 and "(0 written, 20 already there)" in out
    gt = sum(len(r["gt_boxes"]) for r in load_manifest(root)["frames"])
    assert f"ground truth: {gt} person boxes on 20 frames" in out
    rc, out, _ = _run(capsys, "label", str(root), "--detector", "yolo_fastest_xl", "--split", "val", "--no-progress")
    assert rc == 0 and "(written)" in out
    val_frames = sum(r["split"] == "val" for r in load_manifest(root)["frames"])
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("val "))
    assert int(row[1]) == val_frames and int(row[2]) >= val_frames  # several people in every PETS frame
    rc, out, _ = _run(capsys, "label", str(root), "--detector", "yolo_fastest_xl", "--split", "val", "--no-progress")
    assert rc == 0 and "(up to date)" in out


def test_label_without_detector_weights_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    pets_sparse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing weights file names the file and the fix every command accepts, not an option no command has."""
    from silhouette.paths import ENV_SHARED

    (tmp_path / "empty_shared").mkdir()
    monkeypatch.setenv(ENV_SHARED, str(tmp_path / "empty_shared"))
    rc, _, err = _run(capsys, "label", str(pets_sparse), "--detector", "yolo_fastest_xl", "--split", "val",
                      "--no-progress")
    line = _one_line_error(err)
    assert rc == 2 and str(tmp_path / "empty_shared" / "weights") in line and f"set {ENV_SHARED}" in line
    assert "--weights" not in line
