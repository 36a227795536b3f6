"""experiments/silhouette_floor.py --smoke: both attacks on a silhouette style, faces on its reconstructions too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "silhouette_floor.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_mask_rows_carry_faces_on_obfuscated_and_reconstructed_frames(pets_every: Callable[[int], Path],
                                                                      tmp_path: Path) -> None:
    run = _run("--smoke", "--styles", "mask:4", "--threads", "1", "--data", str(pets_every(10)), "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((tmp_path / "scorecard" / "scorecard.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["bgsub:mask:4"]  # only the style asked for
    row = rows[0]
    for column in ("face_obf", "face_rec", "rec_psnr_person", "reid_adaptive"):
        assert row[column] is not None and 0 <= row[column] <= 100, column
    faces = json.loads((tmp_path / "silhouette_floor.json").read_text())["results"]["mask:4"]["faces"]
    for det in faces["key"]["detectors"]:
        assert faces[det]["reconstructed"]["reference_faces"] == faces[det]["obfuscated"]["reference_faces"] > 0
    assert (tmp_path / "example.png").stat().st_size > 0


def test_unknown_style_is_one_line() -> None:
    run = _run("--styles", "mask,outline")
    assert run.returncode == 2 and "--styles mask,outline: expected one or more of mask, scene" in run.stderr
    assert _run("--styles", "mask:0").returncode == 2
    assert "Traceback" not in run.stderr
