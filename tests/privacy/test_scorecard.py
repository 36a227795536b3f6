"""The scorecard writes its markdown, JSON and plot atomically, with utility beside each attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silhouette.errors import SilhouetteError
from silhouette.privacy.scorecard import flatten, load_utility, merge_scorecards, write_scorecard


def _row(method: str, ap50: float | None, ssim: float, rank1: float) -> dict:
    reid_r = {"rank1": rank1, "map": rank1 / 2, "chance_rank1": 0.125, "chance_map": 0.2}
    return {
        "method": method,
        "utility": None if ap50 is None else {"ap50": ap50, "count_mae": 0.5},
        "reconstruction": {"test": {"psnr": 20.0, "ssim": ssim, "obfuscated_ssim": ssim / 2}},
        "faces": {"haar": {"obfuscated": {"fraction": 0.25}, "reconstructed": {"fraction": 0.5}},
                  "mtcnn": {"obfuscated": {"fraction": 0.75}, "reconstructed": {"fraction": float("nan")}}},
        "reid": {"clean_trained": {"clean_query": {"rank1": 0.9}, "obfuscated_query": reid_r},
                 "adaptive": {"obfuscated": reid_r}},
    }


def test_flatten_picks_the_strongest_face_detector() -> None:
    flat = flatten(_row("blur:2", 0.8, 0.9, 0.6))
    assert flat["family"] == "blur" and flat["face_obf"] == 0.75 and flat["face_rec"] == 0.5
    assert flat["reid_adaptive"] == 0.6 and flat["reid_chance"] == 0.125 and flat["reid_rec"] is None


def test_scorecard_writes_three_files(tmp_path: Path) -> None:
    import cv2

    rows = [_row("ours", 0.9, 0.3, 0.2), _row("clean", 1.0, 1.0, 0.9), _row("blur:2", 0.85, 0.8, 0.7),
            _row("blur:4", 0.7, 0.6, 0.5), _row("noise:0.1", None, 0.5, 0.4)]
    paths = write_scorecard(tmp_path / "card", rows, meta={"data": "x"}, notes=["quick run"])
    data = json.loads(paths["json"].read_text())
    assert [r["method"] for r in data["rows"]] == ["ours", "clean", "blur:2", "blur:4", "noise:0.1"]
    md = paths["markdown"].read_text()
    assert "| ours |" in md and "person AP50" in md and "re-ID R1 chance" in md and "quick run" in md
    assert "| noise:0.1 | – |" in md  # no utility given for that row
    img = cv2.imread(str(paths["plot"]))
    assert img is not None and img.shape[0] > 100
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["scorecard.json", "scorecard.md", "tradeoff.png"]


def test_rows_with_gt_ap50_get_a_frontier_plot(tmp_path: Path) -> None:
    import cv2

    rows = [_row("private", 0.7, 0.1, 0.3), _row("fold:1", 0.97, 0.6, 0.8)]
    rows[0]["utility"]["gt_ap50"], rows[1]["utility"]["gt_ap50"] = 0.55, 0.85
    paths = write_scorecard(tmp_path, rows)
    assert paths["frontier"].name == "frontier.png" and cv2.imread(str(paths["frontier"])).shape[0] > 100
    assert cv2.imread(str(paths["frontier"])).tobytes() != cv2.imread(str(paths["plot"])).tobytes()
    for r in rows:  # only re-ID and faces were run: two panels
        r.pop("reconstruction")
    wide = cv2.imread(str(paths["frontier"])).shape[1]
    assert cv2.imread(str(write_scorecard(tmp_path / "two", rows)["frontier"])).shape[1] < wide
    rows[0]["utility"].pop("gt_ap50"), rows[1]["utility"].pop("gt_ap50")
    assert "frontier" not in write_scorecard(tmp_path / "no_gt", rows)


def test_an_attacker_below_the_zero_information_floor_is_flagged(tmp_path: Path) -> None:
    learned, failed = _row("blur:2", 0.9, 0.8, 0.5), _row("ours:levels2", 0.9, 0.1, 0.5)
    failed["reconstruction"]["test"]["psnr"] = 9.5  # the mean train frame scores 15 dB: the attacker learned nothing
    paths = write_scorecard(tmp_path, [learned, failed], meta={"scene_prior": {"psnr": 15.0, "ssim": 0.6}})
    notes = json.loads(paths["json"].read_text())["notes"]
    assert len(notes) == 1 and notes[0].startswith("ours:levels2: the reconstruction attacker stayed below")
    assert notes[0].endswith("from scratch (--recon-scratch)")
    assert "(9.50 vs 15.00 dB PSNR)" in paths["markdown"].read_text()


def test_empty_scorecard_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SilhouetteError, match="no methods"):
        write_scorecard(tmp_path, [])


def test_load_utility_formats(tmp_path: Path) -> None:
    p = tmp_path / "u.json"
    p.write_text(json.dumps({"rows": [{"method": "ours", "ap50": 0.9, "count_mae": 0.3}]}))
    assert load_utility(p) == {"ours": {"ap50": 0.9, "count_mae": 0.3}}
    p.write_text(json.dumps({"blur:2": {"ap50": 0.8}}))
    assert load_utility(p)["blur:2"]["ap50"] == 0.8
    p.write_text("[1, 2]")
    with pytest.raises(SilhouetteError, match="no per-method utility"):
        load_utility(p)


def test_merge_keeps_attacks_a_later_run_did_not_do_and_combines_face_detectors(tmp_path: Path) -> None:
    """A faces-only Haar run merged after a full run adds its detector and keeps the full run's other results."""
    full = _row("blur:2", 0.8, 0.9, 0.6)
    full["faces"] = {"key": {"detectors": ["mtcnn"]}, "mtcnn": {"obfuscated": {"fraction": 0.25}}}
    haar_only = {"method": "blur:2", "utility": None, "reconstruction": None, "reid": None,
                 "faces": {"key": {"detectors": ["haar"]}, "haar": {"obfuscated": {"fraction": 0.5}}}}
    for name, row in (("gpu", full), ("cpu", haar_only)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scorecard.json").write_text(json.dumps({"meta": {"device": name}, "results": [row]}))
    paths = merge_scorecards([tmp_path / "gpu", tmp_path / "cpu"], tmp_path / "merged")
    data = json.loads(paths["json"].read_text())
    (row,) = data["results"]
    assert row["faces"]["key"]["detectors"] == ["mtcnn", "haar"] and set(row["faces"]) >= {"mtcnn", "haar"}
    assert row["reconstruction"] == full["reconstruction"] and row["reid"] == full["reid"]
    (flat,) = data["rows"]
    assert flat["face_obf"] == 0.5 and flat["ap50"] == 0.8 and flat["reid_adaptive"] == 0.6


def test_merge_renames_an_old_runs_row_so_it_stays_apart(tmp_path: Path) -> None:
    """An older obfuscator's `ours` keeps its own row when a newer `ours` run is merged after it."""
    from silhouette.privacy.scorecard import parse_rename

    old, new = {**_row("ours", 0.91, 0.8, 0.58), "setting": "default checkpoint"}, _row("ours", 0.93, 0.5, 0.3)
    for name, row in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scorecard.json").write_text(json.dumps({"meta": {}, "results": [row]}))
    rename = parse_rename(f"ours@{tmp_path / 'old'}=ours:paper")
    paths = merge_scorecards([tmp_path / "old", tmp_path / "new"], tmp_path / "merged", renames=[rename])
    rows = {r["method"]: r for r in json.loads(paths["json"].read_text())["rows"]}
    assert set(rows) == {"ours:paper", "ours"}
    assert rows["ours:paper"]["ap50"] == 0.91 and rows["ours"]["ap50"] == 0.93
    # the old run's "default checkpoint" is named as that run's, not today's
    assert "| ours:paper (default checkpoint of old) |" in paths["markdown"].read_text()
    with pytest.raises(SilhouetteError, match="METHOD@DIR=NEW"):
        parse_rename("ours=ours:paper")
    with pytest.raises(SilhouetteError, match="not one of the --from runs"):
        merge_scorecards([tmp_path / "new"], tmp_path / "m2", renames=[rename])
    with pytest.raises(SilhouetteError, match="has no row 'clean'"):
        merge_scorecards([tmp_path / "old"], tmp_path / "m3", renames=[parse_rename(f"clean@{tmp_path / 'old'}=x")])


def test_merge_drops_face_results_on_another_attackers_reconstructions(tmp_path: Path) -> None:
    """A later run with a new attacker keeps the old Haar column on obfuscated frames, not on old reconstructions."""
    old_recipe, new_recipe = {"residual": True, "epochs": 20}, {"residual": False, "epochs": 20}
    cpu = _row("ours", 0.95, 0.9, 0.7)
    cpu["faces"] = {"key": {"detectors": ["haar", "mtcnn"], "reconstructed": old_recipe},
                    "haar": {"obfuscated": {"fraction": 0.4}, "reconstructed": {"fraction": 0.9}},
                    "mtcnn": {"obfuscated": {"fraction": 0.43}, "reconstructed": {"fraction": 0.39}}}
    gpu = _row("ours", None, 0.9, 0.7)
    gpu["faces"] = {"key": {"detectors": ["mtcnn"], "reconstructed": new_recipe},
                    "mtcnn": {"obfuscated": {"fraction": 0.43}, "reconstructed": {"fraction": 0.0}}}
    haar_obf_only = {"method": "ours", "faces": {"key": {"detectors": ["haar"], "reconstructed": False},
                                                 "haar": {"obfuscated": {"fraction": 0.4}}}}
    for name, row in (("cpu", cpu), ("gpu", gpu), ("haar", haar_obf_only)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scorecard.json").write_text(json.dumps({"meta": {}, "results": [row]}))
    data = json.loads(merge_scorecards([tmp_path / "cpu", tmp_path / "gpu"], tmp_path / "m")["json"].read_text())
    (row,), (flat,) = data["results"], data["rows"]
    assert "reconstructed" not in row["faces"]["haar"] and row["faces"]["haar"]["obfuscated"]["fraction"] == 0.4
    assert row["faces"]["key"]["reconstructed"] == new_recipe and flat["face_rec"] == 0.0 and flat["face_obf"] == 0.43
    assert flat["ap50"] == 0.95  # the later run had no utility: the earlier one's stays
    # a faces-only run without an attacker changes nothing about whose reconstructions the row holds
    data = json.loads(merge_scorecards([tmp_path / "cpu", tmp_path / "haar"], tmp_path / "m2")["json"].read_text())
    (row,), (flat,) = data["results"], data["rows"]
    assert row["faces"]["key"]["reconstructed"] == old_recipe and flat["face_rec"] == 0.9
