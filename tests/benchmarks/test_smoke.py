"""Every benchmark (and the cheap experiments) runs in a seconds-long --smoke mode and writes JSON with provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# benchmarks/service.py --smoke is run, and its numbers checked, by tests/serve/test_service_benchmark.py
BENCHMARKS = ["benchmarks/detectors.py", "benchmarks/edge.py", "benchmarks/obfuscate_video.py", "benchmarks/service_ray.py"]
COVERED_ELSEWHERE = {"benchmarks/service.py"}
# experiments cheap enough for a smoke run: a recipe comparison over committed results
EXPERIMENTS = [("experiments/attacker_recipes.py", [])]


def assert_provenance(data: dict, script: str) -> None:
    """The block every result carries: which code (commit, dirty), how (command), when and on what machine."""
    assert isinstance(data["commit"], str) and len(data["commit"]) == 40 and isinstance(data["dirty"], bool)
    assert script in data["command"] and data["date"].startswith("20")
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and "gpu" in machine
    assert data["versions"]["python"] and data["versions"]["numpy"]


def run(script: str, args: list[str], out: Path, shared: Path) -> dict:
    """Run one script as a user would, from the checkout; return the JSON it wrote."""
    env = {**os.environ, "SILHOUETTE_SHARED": str(shared)}
    proc = subprocess.run([sys.executable, script, *args, "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_every_benchmark_has_a_smoke_run() -> None:
    """A new speed benchmark must join the list below (and so have a --smoke mode)."""
    scripts = {f"benchmarks/{p.name}" for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(BENCHMARKS) | COVERED_ELSEWHERE


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_smoke_writes_json_with_provenance(script: str, shared: Path, tmp_path: Path) -> None:
    data = run(script, ["--smoke"], tmp_path / "out.json", shared)
    assert_provenance(data, script)
    assert "--smoke" in data["command"]
    assert "loadavg_before" in data["machine"]  # timings on a shared machine need the load beside them


def test_edge_benchmark_times_the_silhouette_camera(shared: Path, tmp_path: Path) -> None:
    """The shipped silhouette pair's camera side is timed beside the networks, with what a frame costs on the wire."""
    data = run("benchmarks/edge.py", ["--smoke"], tmp_path / "out.json", shared)
    row = next(r for r in data["obfuscators"] if r["variant"] == "silhouette (shipped pair)")
    assert row["macs"] == 0 and row["numpy"]["fps_per_core"] > 0 and "numpy" in row["ratio_vs_detectors"]
    assert 0 < row["wire_bytes_png"] < 8192  # a mask is a few KB of PNG, not a photo's 140


@pytest.mark.parametrize(("script", "args"), EXPERIMENTS)
def test_experiment_writes_json_with_provenance(script: str, args: list[str], shared: Path, tmp_path: Path) -> None:
    data = run(script, args, tmp_path / "out.json", shared)
    assert_provenance(data, script)
    assert data["rows"], "the recipe comparison found no rows in the committed attack runs"
