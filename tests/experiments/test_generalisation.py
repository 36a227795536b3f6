"""experiments/generalisation.py --smoke: every shared source scored, numbers in range, fold:1 rows reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "generalisation.py"
pytestmark = pytest.mark.slow  # two --smoke runs: 7 sources x 3 obfuscators each, minutes on 2 shared cores


@pytest.fixture(scope="module")
def intel_sparse(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """The shared Intel footage prepared keeping every 10th frame: every camera, few frames."""
    from silhouette.data import prepare_dataset

    return prepare_dataset("intel", tmp_path_factory.mktemp("intel10") / "intel", every=10, progress=False)


def _run(pets: Path, intel: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--no-progress", "--threads", "1", "--pets", str(pets),
           "--intel", str(intel), "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def smoke(pets_every: Callable[[int], Path], intel_sparse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One --smoke run on sparse PETS and Intel frames: its JSON, Markdown, stdout and inputs."""
    out = tmp_path_factory.mktemp("gen") / "generalisation.json"
    pets = pets_every(10)
    run = _run(pets, intel_sparse, out)
    assert run.returncode == 0, run.stderr[-3000:]
    return {"json": json.loads(out.read_text()), "md": out.with_suffix(".md").read_text(), "stdout": run.stdout,
            "pets": pets, "intel": intel_sparse}


def _unit(x: Any) -> bool:
    """A fraction in [0, 1], or None where it is undefined (nobody to find)."""
    return x is None or (0.0 <= x <= 1.0)


def test_every_source_obfuscator_and_detector_is_scored(smoke: dict[str, Any]) -> None:
    """The table covers the PETS test split and each Intel camera, for default, edge and fold:1, with YOLOX-Nano."""
    res = smoke["json"]
    cams = {f["camera"] for f in json.loads((smoke["intel"] / "manifest.json").read_text())["frames"]}
    assert [s["id"] for s in res["sources"]] == ["pets2009/test", *(f"intel/{c}" for c in sorted(cams))]
    assert list(res["obfuscators"]) == ["default", "edge", "fold:1"] and list(res["detectors"]) == ["yolox_nano"]
    assert res["settings"]["smoke"] and res["settings"]["max_frames"] == 8
    assert "--smoke" in res["provenance"]["command"] and res["provenance"]["commit"]
    for sid, row in res["results"].items():
        assert list(row) == ["default", "edge", "fold:1"]
        for obf, r in row.items():
            assert 1 <= r["frames"] <= 8, (sid, obf)
            assert list(r["detectors"]) == ["yolox_nano"]
    assert "Per detector: mean and worst left-out source" in smoke["md"] and "| fold:1 | yolox_nano |" in smoke["stdout"]


def test_left_out_follows_the_training_data(smoke: dict[str, Any]) -> None:
    """The shipped checkpoints trained on PETS: its rows are seen for them, left out for fold:1; Intel always left out."""
    res = smoke["json"]
    for name in ("default", "edge"):
        assert res["obfuscators"][name]["trained_on"]["dataset"] == "pets2009"
        assert res["summary"][name]["left_out_sources"] == [s for s in res["results"] if s.startswith("intel/")]
    assert res["obfuscators"]["fold:1"]["trained_on"] is None and res["obfuscators"]["fold:1"]["macs_320x200"] == 0
    assert not res["results"]["pets2009/test"]["default"]["left_out"]
    assert res["results"]["pets2009/test"]["fold:1"]["left_out"]
    assert "pets2009/test (seen in training)" in smoke["md"]


def test_values_are_in_range(smoke: dict[str, Any]) -> None:
    """AP and found fractions in [0, 1], MAE >= |bias|, boxes found <= clean boxes, PETS rows carry GT AP."""
    res = smoke["json"]
    for sid, row in res["results"].items():
        for obf, r in row.items():
            d = r["detectors"]["yolox_nano"]
            assert _unit(d["relative_ap50"]) and _unit(d["relative_ap"]) and _unit(d["found_fraction"]), (sid, obf, d)
            assert 0 <= d["boxes_found"] <= d["pseudo_boxes"]
            assert d["count_mae"] >= abs(d["count_bias"]) - 1e-9
            assert ("gt_ap50" in d) == sid.startswith("pets2009")
            assert -1.0 <= r["similarity"]["ssim"] <= 1.0
    for obf, s in res["summary"].items():
        a = s["all"]["yolox_nano"]
        assert a["sources"] == len(res["sources"]) and _unit(a["mean_relative_ap50"])
        assert a["worst_relative_ap50"] <= a["mean_relative_ap50"] + 1e-9
    faces = res["faces"]
    assert [f["clip"] for f in faces["footage"]] == ["face-demographics-walking.gif", "head-pose-face-detection-female-and-male.gif"]
    for obf, row in faces["rows"].items():
        assert row, f"{obf}: no face detector ran ({faces['notes']})"
        for fd, f in row.items():
            assert 0 <= f["found_again"] <= f["reference_faces"] and _unit(f["fraction"]), (obf, fd, f)
    assert res["targets"] and all(t["met"] in (True, False, None) for t in res["targets"])
    assert any(t["target"].startswith("edge relAP50 >= 85%") for t in res["targets"])


def test_fold_rows_are_deterministic(smoke: dict[str, Any], tmp_path: Path) -> None:
    """fold:1 has no weights and no randomness: a second run gives exactly the same rows and face counts."""
    out = tmp_path / "again.json"
    run = _run(smoke["pets"], smoke["intel"], out, "--obfuscators", "fold:1")
    assert run.returncode == 0, run.stderr[-3000:]
    again, first = json.loads(out.read_text()), smoke["json"]
    assert list(again["obfuscators"]) == ["fold:1"]
    for sid in first["results"]:
        assert again["results"][sid]["fold:1"] == first["results"][sid]["fold:1"], sid
    assert again["faces"]["rows"]["fold:1"] == first["faces"]["rows"]["fold:1"]
    assert all(not t["target"].startswith("default") for t in again["targets"])  # no default row, no default target


def test_unknown_obfuscator_is_one_line(tmp_path: Path) -> None:
    """A mistyped --obfuscators name is refused before anything loads, naming the choices."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--obfuscators", "defualt", "--out", str(tmp_path / "x.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "choose from default, edge, fold:1" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "x.json").exists()
