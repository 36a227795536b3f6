"""benchmarks/service.py --smoke: a real server measured end to end, and a results JSON that says where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_service_benchmark_smoke_writes_provenance_and_efficiency(shared: Path, tmp_path: Path) -> None:
    out = tmp_path / "service.json"
    env = {**os.environ, "SILHOUETTE_SHARED": str(shared)}
    run = subprocess.run([sys.executable, "benchmarks/service.py", "--smoke", "--out", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert len(data["commit"]) == 40 and isinstance(data["dirty"], bool)
    assert "benchmarks/service.py --smoke" in data["command"] and data["date"].startswith("20")
    assert data["machine"]["cpu"] and data["machine"]["cores"] >= 1
    assert {"python", "onnxruntime", "fastapi", "uvicorn"} <= set(data["versions"])
    assert data["targets"] == {"efficiency_min": 0.8, "p95_ms_max_at_4_clients": 250.0}
    rows = data["results"]
    assert [(r["backend"], r["clients"]) for r in rows] == [("local", 1), ("local", 2)]
    for r in rows:
        assert r["errors"] == 0 and r["requests"] > 0 and r["requests_per_s"] > 0
        assert 0 < r["p50_ms"] <= r["p95_ms"]
        # the server's own CPU per frame beside the bare detector's, measured in the same run
        assert r["serving_cpu_ms_per_frame"] > 0 and r["raw_detector_cpu_ms_per_frame"] > 0
        assert r["efficiency"] == pytest.approx(r["raw_detector_cpu_ms_per_frame"] / r["serving_cpu_ms_per_frame"], rel=0.01)
    assert data["verdicts"] and "| backend |" in data["table_markdown"]
