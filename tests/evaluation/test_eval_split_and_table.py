"""`evaluate` on the user's own footage: no silent 20 % test split of a single clip; the table shows found boxes and bias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silhouette.cli import main
from silhouette.paths import data_dir

WALKING = "face-demographics-walking.gif"  # 35 frames, two people walking towards the camera
WORKER = "worker-zone-detection.gif"


@pytest.fixture(scope="module")
def own_footage(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a factory
    """Prepare the user-footage `video` dataset from some Intel clips (every 5th frame, 160x100)."""
    from silhouette.data import prepare_dataset

    def make(*clips: str) -> Path:
        out = tmp_path_factory.mktemp("own") / "data"
        return prepare_dataset("video", out, size=(160, 100), every=5, progress=False,
                               sources=[str(data_dir() / "intel" / c) for c in clips])

    return make


def test_single_camera_footage_asks_for_a_split(own_footage, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    data = own_footage(WALKING)  # 7 frames: 5 train, 1 val, 1 test
    rc = main(["evaluate", "--clean", "--data", str(data), "--detectors", "fastestdet", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--split all" in err and "--split test" in err and "last 1 of 7 frames" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["evaluate", "--clean", "--data", str(data), "--detectors", "fastestdet", "--no-progress",
                 "--split", "all"]) == 0
    assert "split=all frames=7 " in capsys.readouterr().out
    # one camera chosen out of several is the same situation; the whole multi-camera dataset keeps the test split
    both = own_footage(WALKING, WORKER)
    rc = main(["evaluate", "--clean", "--data", str(both), "--cameras", "worker-zone-detection", "--detectors",
               "fastestdet", "--no-progress"])
    assert rc == 2 and "one camera (worker-zone-detection)" in capsys.readouterr().err
    assert main(["evaluate", "--clean", "--data", str(both), "--detectors", "fastestdet", "--no-progress"]) == 0
    assert "split=test frames=4 " in capsys.readouterr().out  # 1 of 7 walking frames + 3 of 15 worker frames


def test_table_shows_pseudo_boxes_found_and_bias(pets_eval: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """PETS (a registered benchmark, one camera) keeps its test split by default; the table matches the JSON."""
    rc = main(["evaluate", "--baseline", "blur:3", "--data", str(pets_eval), "--detectors", "fastestdet",
               "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "split=test frames=8 " in out
    row = json.loads((tmp_path / "evaluation.json").read_text())["detectors"]["fastestdet"]
    boxes, found, bias = row["pseudo_boxes"], row["pseudo_found"], row["count"]["obf_vs_clean"]["bias"]
    assert boxes > 0 and found < boxes and bias < 0  # blur 3 loses people: fewer found, counts run low
    header = next(line for line in out.splitlines() if line.startswith("detector"))
    assert header.split()[:8] == ["detector", "relAP50", "relAP", "pseudo", "found%", "countMAE", "bias", "gtAP50"]
    cells = next(line for line in out.splitlines() if line.startswith("fastestdet")).split()
    assert cells[3] == str(boxes) and cells[4] == f"{100 * found / boxes:.1f}" and cells[6] == f"{bias:+.2f}"
    assert "found% = " in out
