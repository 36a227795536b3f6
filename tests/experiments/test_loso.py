"""experiments/loso.py --smoke: a fold trained without its source, scored on it beside fold:1, in both modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "loso.py"
pytestmark = pytest.mark.slow  # a seconds-long training per fold, then scoring: about a minute each on 2 cores
SOURCE = "intel/people-detection"


@pytest.fixture(scope="module")
def intel_sparse(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """The shared Intel footage prepared keeping every 10th frame: every camera, few frames."""
    from silhouette.data import prepare_dataset

    return prepare_dataset("intel", tmp_path_factory.mktemp("intel10") / "intel", every=10, progress=False)


def _run(pets: Path, intel: Path, tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = tmp / "loso.json"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--no-progress", "--threads", "1", "--pets", str(pets), "--intel",
           str(intel), "--runs", str(tmp / "runs"), "--sources", SOURCE, "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200), out


@pytest.mark.parametrize("mode", ["compatible", "private"])
def test_a_fold_never_sees_its_source_and_is_scored_on_it(mode: str, pets_every: Callable[[int], Path],
                                                          intel_sparse: Path, tmp_path: Path) -> None:
    extra = ["--finetune", "bgsub:mask"] if mode == "private" else []
    run, out = _run(pets_every(10), intel_sparse, tmp_path, *extra)
    assert run.returncode == 0, run.stderr[-3000:]
    res: dict[str, Any] = json.loads(out.read_text())
    assert list(res["results"]) == [SOURCE] and res["provenance"]["commit"] and "--smoke" in res["provenance"]["command"]
    fold = res["folds"][SOURCE]
    rows = res["results"][SOURCE]
    expected = ["learned", "shipped pair", "fold:1"] if mode == "private" else ["learned", "fold:1"]
    assert list(rows) == expected and all(r["left_out"] for r in rows.values())
    for r in rows.values():
        ap = r["detectors"]["yolox_nano"]["relative_ap50"]
        assert ap is None or 0.0 <= ap <= 1.0
    assert rows["fold:1"]["detectors"]["yolox_nano"]["relative_ap50"] > 0.5  # the reference detects people
    assert res["targets"] and all(t["met"] in (True, False, None) for t in res["targets"])
    if mode == "compatible":
        assert fold["trained_on"]["exclude_cameras"] == ["people-detection"]
    else:
        assert fold["trained_on"] == "bgsub:mask" and Path(fold["checkpoint"]).name == "pair.json"
        _check_reuse(pets_every(10), intel_sparse, tmp_path, out, extra)


def _check_reuse(pets: Path, intel: Path, tmp: Path, first: Path, extra: list[str]) -> None:
    """--reuse takes the first run's fold over without training it again, and refuses other settings."""
    again, wrong = tmp / "again", tmp / "bad"
    again.mkdir(), wrong.mkdir()
    run, out = _run(pets, intel, again, *extra, "--reuse", str(first))
    assert run.returncode == 0, run.stderr[-3000:]
    before, after = json.loads(first.read_text()), json.loads(out.read_text())
    assert after["results"] == before["results"] and after["settings"]["reused"] == [SOURCE]
    assert after["folds"][SOURCE]["reused_from"]["commit"] == before["provenance"]["commit"]
    assert not (again / "runs").exists()  # nothing was trained
    assert "trained and scored by" in out.with_suffix(".md").read_text()
    bad, _ = _run(pets, intel, wrong, *extra, "--reuse", str(first), "--face-every", "2")
    assert bad.returncode == 2 and f"--reuse {first}: made with face_every=3" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_unknown_source_is_one_line(pets_every: Callable[[int], Path], intel_sparse: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run([sys.executable, str(SCRIPT), "--sources", "intel/nowhere", "--pets", str(pets_every(10)),
                          "--intel", str(intel_sparse), "--out", str(tmp_path / "x.json")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--sources intel/nowhere: unknown" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
