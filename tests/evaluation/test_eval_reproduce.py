"""`silhouette reproduce --quick` and `silhouette evaluate` end to end, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import yaml

from silhouette.cli import main

TITLES = (
    "Table 1 — Generalisation",
    "Table 2 — Cross-detector",
    "Table 3 — Obfuscation baselines",
    "Table 4 — Computational cost",
    "Figure 2 — Accuracy vs obfuscator cost",
    "Figures 3–4 — Example frames",
)


def quick_config(tmp: Path, pets: Path, ckpt: Path, narrow: Path, pets_trained: Path) -> Path:
    cfg = {
        "name": "quick-test",
        "datasets": {"pets": {"root": str(pets)}},
        "test_sets": {"pets_test": {"dataset": "pets", "split": "test", "label": "PETS test"},
                      "pets_val": {"dataset": "pets", "split": "val"}},
        "checkpoint": str(ckpt),
        "quick": {"max_frames": 3, "tune_evals": 4, "examples": 2},
        "tables": {
            "generalisation": {"train": {"PETS": str(pets_trained), "Intel": str(tmp / "not-trained-yet.pt")},
                               "test": ["pets_test", "pets_val"]},
            "cross_detector": {"checkpoints": {"fastestdet": str(ckpt)}, "test": "pets_test",
                               "detectors": ["fastestdet", "yolo_fastest_body"]},
            "baselines": {"test": "pets_test", "methods": ["blur", "pixelate"]},
            "cost": {"detectors": ["fastestdet"], "variants": ["obf_w025"]},
            "width_sweep": {"checkpoints": {"1.0": str(ckpt), "0.25": str(narrow)}, "test": "pets_test"},
            "examples": {"tests": ["pets_test", "pets_val"]},
        },
    }
    path = tmp / "reproduce.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_reproduce_quick_writes_every_promised_file(tmp_path: Path, pets_eval: Path, fresh_checkpoint: Path,
                                                     checkpoint_factory: Callable[..., Path]) -> None:
    narrow = checkpoint_factory(tmp_path / "w025.pt", obfuscator="obf_w025", deobfuscator=False, seed=1)
    pets_trained = checkpoint_factory(tmp_path / "pets.pt", deobfuscator=False, data_root=pets_eval)
    cfg = quick_config(tmp_path, pets_eval, fresh_checkpoint, narrow, pets_trained)
    out = tmp_path / "reports" / "quick"
    out.mkdir(parents=True)
    (out / "REPORT.md").write_text("an earlier report")
    (out / "stale.txt").write_text("from an earlier run")
    assert main(["reproduce", "--out", str(out), "--config", str(cfg), "--quick", "--no-progress"]) == 0
    report = (out / "REPORT.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    prov = metrics["provenance"]
    assert len(prov["commit"]) == 40 and "reproduce" in prov["command"] and prov["machine"]["cpu"] and prov["date"]
    assert not (out / "stale.txt").exists()  # the folder is replaced as a whole
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    for title in TITLES:
        assert title in report
    assert "silhouette reproduce --out" in report and "--quick" in report
    assert "| torch |" in report and "| onnxruntime |" in report
    assert set(metrics["sections"]) == {"generalisation", "cross_detector", "baselines", "cost", "width_sweep", "examples"}
    promised = [f for s in metrics["sections"].values() for f in s["figures"]]
    assert sorted(promised) == sorted(["table3_baselines.png", "figure2_width_sweep.png",
                                       "figure3_examples_pets_test.png", "figure4_examples_pets_val.png"])
    for f in promised:
        data = (out / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, f
        assert f"]({f})" in report
    # every section ran; the missing Intel checkpoint is reported, not invented
    assert all(s["not_run"] is None for s in metrics["sections"].values()), metrics["sections"]
    gen = metrics["sections"]["generalisation"]
    assert [r["test"] for r in gen["data"]["results"]] == ["pets_test", "pets_val"]
    assert any("Intel: not run: checkpoint" in n for n in gen["notes"])
    assert gen["rows"][0][1] == "PETS test (training dataset)" and gen["rows"][1][1] == "pets_val (training dataset)"
    for row, res in zip(gen["rows"], gen["data"]["results"]):
        assert row[gen["columns"].index("Pseudo boxes")] == str(res["pseudo_boxes"]) and res["pseudo_boxes"] >= 0
        mae = res["count"]["obf_vs_clean"]["mae"]
        assert mae >= 0 and row[gen["columns"].index("Count MAE obf vs clean")] == f"{mae:.2f}"
        assert "→" in row[gen["columns"].index("Count MAE vs GT clean → obf")]  # PETS has GT
    # 4 frames give fewer pseudo-label boxes than FEW_BOXES: the AP is flagged, with the count found again
    assert any("too few for a stable AP" in n and "found again" in n for n in gen["notes"])
    cross = metrics["sections"]["cross_detector"]["data"]["rows"][0]
    assert cross["trained_on"] == "fastestdet" and cross["unseen"] == ["yolo_fastest_body"]
    assert "*" in metrics["sections"]["cross_detector"]["rows"][0][2]
    cost = metrics["sections"]["cost"]["data"]["rows"]
    assert [r["model"] for r in cost] == ["Obfuscator", "obfuscator variant obf_w025", "fastestdet"]
    assert cost[0]["macs"] > cost[1]["macs"] > 0
    sweep = metrics["sections"]["width_sweep"]["data"]["points"]
    assert {p["label"] for p in sweep} == {"1.0", "0.25"}
    base = metrics["sections"]["baselines"]["data"]["methods"]
    assert set(base) == {"ours", "blur", "pixelate"} and base["ours"]["similarity"]["ssim"] < 1
    ex = metrics["sections"]["examples"]["data"]["figures"]
    assert all(f["reconstruction"] for f in ex)  # the checkpoint holds a deobfuscator


def test_reproduce_marks_missing_inputs_not_run(tmp_path: Path, pets_eval: Path) -> None:
    cfg = {
        "datasets": {"pets": {"root": str(pets_eval)}, "elsewhere": {"root": str(tmp_path / "unprepared")}},
        "test_sets": {"pets_test": {"dataset": "pets"}, "other": {"dataset": "elsewhere"}},
        "checkpoint": str(tmp_path / "absent.pt"),
        "tables": {"baselines": {"test": "pets_test"}, "examples": {"tests": ["other"]},
                   "width_sweep": {"checkpoints": {}, "test": "pets_test"}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "r"
    assert main(["reproduce", "--out", str(out), "--config", str(path), "--quick", "--no-progress",
                 "--only", "baselines,examples,width_sweep,generalisation"]) == 0
    secs = json.loads((out / "metrics.json").read_text())["sections"]
    assert list(secs) == ["baselines", "examples", "width_sweep", "generalisation"]
    assert "absent.pt not found" in secs["baselines"]["not_run"]
    assert "not prepared" in secs["examples"]["not_run"]
    assert "no checkpoints configured" in secs["width_sweep"]["not_run"]
    assert "not configured" in secs["generalisation"]["not_run"]
    report = (out / "REPORT.md").read_text()
    assert report.count("not run:") >= 8  # in the contents list and in each section
    assert not list(out.glob("*.png"))


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, pets_eval: Path, fresh_checkpoint: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("tables: {tabel1: {}}\n")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["reproduce", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "nope.yaml")], "file not found"),
        (["reproduce", "--out", str(tmp_path / "r"), "--config", str(bad_yaml)], "unknown table 'tabel1'"),
        (["reproduce", "--out", str(tmp_path / "r"), "--only", "table9"], "unknown section"),
        (["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--data", str(pets_eval)], "file not found"),
        (["evaluate", "--checkpoint", str(garbage), "--data", str(pets_eval)], "cannot be read"),
        (["evaluate", "--checkpoint", str(fresh_checkpoint), "--data", str(tmp_path / "nodata")], "folder not found"),
        (["evaluate", "--checkpoint", str(fresh_checkpoint), "--data", str(pets_eval), "--split", "tset"], "split 'tset'"),
        (["evaluate", "--baseline", "sepia:3", "--data", str(pets_eval)], "unknown baseline"),
        (["evaluate", "--baseline", "blur", "--data", str(pets_eval)], "METHOD:NUMBER"),
        (["evaluate", "--clean", "--data", str(pets_eval), "--detectors", "yolo9000"], "unknown detector"),
    ]
    not_a_report = tmp_path / "src"
    not_a_report.mkdir()
    (not_a_report / "code.py").write_text("x = 1\n")
    cases.append((["reproduce", "--out", str(not_a_report), "--only", "cost"], "not a silhouette report"))
    for argv, match in cases:
        _one_line_error(capsys, argv, match)
    assert not (tmp_path / "r").exists()
    assert (not_a_report / "code.py").read_text() == "x = 1\n"


def test_evaluate_cli_prints_table_and_writes_json(tmp_path: Path, pets_eval: Path, fresh_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(fresh_checkpoint), "--data", str(pets_eval), "--split", "val",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "evaluation.json").read_text())
    assert list(res["detectors"]) == ["fastestdet"]  # the checkpoint's training detector by default
    assert res["frames"] == 4 and "relAP50" in out and "fastestdet" in out
    assert main(["evaluate", "--clean", "--data", str(pets_eval), "--split", "val", "--detectors", "fastestdet",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    res = json.loads((tmp_path / "evaluation.json").read_text())
    assert res["detectors"]["fastestdet"]["relative"]["ap50"] == pytest.approx(1.0)
    assert res["similarity"]["psnr"] == "inf"


def test_shipped_cpu_config_is_valid_and_names_real_cameras(shared: Path) -> None:
    from silhouette.data.sources import list_videos, safe_name
    from silhouette.evaluation.reproduce import SECTIONS, load_config
    from silhouette.paths import REPO_ROOT

    cfg = load_config(REPO_ROOT / "configs" / "reproduce_cpu.yaml")
    assert set(cfg["tables"]) == set(SECTIONS)
    cams = {safe_name(p.stem) for p in list_videos(shared / "data" / "intel")}
    for name, ts in cfg["test_sets"].items():
        for cam in ts.get("cameras") or []:
            assert cam in cams, f"test_sets.{name}: camera {cam!r} is not an Intel clip"
    # every test set a table names exists, so only missing checkpoints can stop a section
    tables = cfg["tables"]
    refs = list(tables["generalisation"]["test"]) + list(tables["examples"]["tests"])
    refs += [tables[k]["test"] for k in ("cross_detector", "baselines", "width_sweep")]
    assert set(refs) <= set(cfg["test_sets"])
