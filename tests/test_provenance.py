"""Every result file records its commit (and dirtiness), command, date, machine and package versions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

from silhouette.provenance import git_state, provenance

REPO = Path(__file__).resolve().parents[1]


def test_provenance_names_this_checkout_and_machine() -> None:
    p = provenance(["silhouette", "evaluate", "--data", "x y"])
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert p["commit"] == head and isinstance(p["dirty"], bool)
    assert p["command"] == "silhouette evaluate --data 'x y'"
    assert p["date"].endswith("+00:00") and p["machine"]["cores"] >= 1 and p["machine"]["cpu"]
    assert {"python", "numpy", "onnxruntime"} <= set(p["versions"])


def test_dirty_flag_follows_tracked_changes(tmp_path: Path) -> None:
    def git(*a: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "untracked.txt").write_text("runs and caches do not count")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    git("add", "results/r.json")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "r")
    (tmp_path / "results" / "r.json").write_text('{"rerun": 1}')
    assert git_state(tmp_path)["dirty"] is False, "a rerun rewriting its own result file is not a dirty tree"
    (tmp_path / "f.txt").write_text("b")
    assert git_state(tmp_path)["dirty"] is True
    assert git_state(tmp_path / "missing") == {"commit": None, "dirty": None}


def test_evaluate_and_training_record_provenance(pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    from silhouette.cli import main
    from silhouette.training.config import load_config
    from silhouette.training.trainer import train

    assert main(["evaluate", "--clean", "--data", str(pets_every(40)), "--detectors", "fastestdet", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    prov = json.loads((tmp_path / "evaluation.json").read_text())["provenance"]
    assert prov["commit"] and "evaluate --clean" in prov["command"]
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"data.root={pets_every(40)}", "detector.spec=fastestdet",
                                                       "data.crop=[64, 96]"])
    train(cfg, tmp_path / "run", progress=False)
    assert set(json.loads((tmp_path / "run" / "provenance.json").read_text())) >= {"commit", "dirty", "command", "date", "machine", "versions"}


def test_every_committed_result_records_where_it_came_from() -> None:
    """results/ holds no JSON without commit, dirty flag, command, date and machine (top level or a provenance block)."""
    keys = {"commit", "dirty", "command", "date", "machine"}
    files = sorted((REPO / "results").rglob("*.json"))
    assert len(files) > 50, "results/ should hold the project's committed results"
    lacking = {}
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        have = set(data) | set(data.get("provenance") or {})
        if not keys <= have:
            lacking[str(path.relative_to(REPO))] = sorted(keys - have)
    assert not lacking, f"results without provenance (tools/reconstruct_provenance.py for old ones): {lacking}"


def test_results_hold_only_data_formats() -> None:
    """Logs and weights made on the way stay out of git: results/ is JSON, CSV, Markdown and PNG."""
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "results"], capture_output=True, text=True).stdout.split()
    assert tracked and not [f for f in tracked if Path(f).suffix not in {".json", ".csv", ".md", ".png"}]


def test_reconstruct_tool_finds_nothing_left_to_do() -> None:
    """The legacy-provenance tool agrees: every committed result already carries its block."""
    import sys

    proc = subprocess.run([sys.executable, "tools/reconstruct_provenance.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
