"""`silhouette attack` options for GPU runs: --device, several `ours:LABEL=PATH` checkpoints, the scene-prior floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from silhouette.cli import main
from silhouette.devices import resolve_device
from silhouette.errors import SilhouetteError
from silhouette.paths import ASSETS_DIR, DEFAULT_CHECKPOINT
from silhouette.privacy.reconstruction import person_mask, scene_prior_floor, score_frames
from silhouette.privacy.attack_suite import method_source, parse_method, same_source, utility_for

EDGE = ASSETS_DIR / "obfuscator_edge.pt"


def _u8(frames: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(frames).mul(255).round().to(torch.uint8)


def test_device_auto_and_cpu_resolve() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SilhouetteError, match="choose auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SilhouetteError, match="CUDA is not available"):
        resolve_device("cuda")
    (tmp_path / "manifest.json").write_text("{}")
    rc = main(["attack", "--data", str(tmp_path), "--methods", "clean", "--device", "cuda", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cuda" in err and err.count("\n") == 1 and "Traceback" not in err


def test_ours_label_path_parses_and_runs(pets_small: list[torch.Tensor]) -> None:
    m = parse_method(f"ours:edge={EDGE}", None, device="cpu")
    assert (m.name, m.family, m.setting) == ("ours:edge", "ours", str(EDGE))
    x = torch.stack(pets_small[:2])
    with torch.no_grad():
        y = m.transform(x)
    assert y.shape == x.shape and y.device.type == "cpu"
    plain = parse_method("ours", None, check_only=True)
    assert plain.name == "ours" and plain.setting is None
    # the cache key tells the two checkpoints apart even if a label is later pointed elsewhere
    assert method_source(f"ours:edge={EDGE}", None)["sha256"] != method_source("ours", None)["sha256"]
    assert method_source("ours", None)["checkpoint"] == str(DEFAULT_CHECKPOINT) and method_source("blur:2", None) is None


def test_cached_results_follow_the_checkpoint_content_not_its_path(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(EDGE, copy)
    cached = method_source(f"ours:edge={EDGE}", None)
    assert same_source(cached, method_source(f"ours:edge={copy}", None))  # moved or named relatively: still valid
    assert not same_source(cached, method_source("ours", None))  # another obfuscator: attack again
    assert same_source(None, method_source("blur:2", None)) and not same_source(None, cached)


@pytest.mark.parametrize("spec, message", [
    ("ours:lam10=runs/nope/best.pt", "runs/nope/best.pt not found"),
    ("ours:lam10", "ours:LABEL=PATH"),
    ("ours:=x.pt", "ours:LABEL=PATH"),
    ("ours:a b=x.pt", "ours:LABEL=PATH"),
])
def test_bad_ours_spec_is_one_line_error(spec: str, message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    rc = main(["attack", "--data", str(tmp_path), "--methods", f"clean,{spec}", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_not_a_checkpoint_and_duplicate_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["attack", "--data", str(tmp_path), "--methods", f"ours:j={junk}", "--device", "cpu"]) == 2
    assert str(junk) in capsys.readouterr().err
    assert main(["attack", "--data", str(tmp_path), "--methods", f"ours:e={EDGE},ours:e={DEFAULT_CHECKPOINT}",
                 "--device", "cpu"]) == 2
    assert "ours:e" in capsys.readouterr().err


def test_utility_json_keyed_by_ours_labels(tmp_path: Path) -> None:
    from silhouette.privacy.scorecard import load_utility

    p = tmp_path / "utility.json"
    p.write_text(json.dumps({"ours": {"ap50": 0.9, "count_mae": 0.2}, "ours:edge": {"ap50": 0.8, "count_mae": 0.4}}))
    util = load_utility(p)
    specs = ["ours", f"ours:edge={EDGE}", "clean"]
    edge = parse_method(specs[1], None, check_only=True)
    ours = parse_method("ours", None, check_only=True)
    assert utility_for(util, edge, specs[1], specs) == {"ap50": 0.8, "count_mae": 0.4}
    assert utility_for(util, ours, "ours", specs) == {"ap50": 0.9, "count_mae": 0.2}
    # a family-wide entry is not copied onto one of several ours checkpoints
    assert utility_for({"ours": {"ap50": 0.9}}, edge, specs[1], specs) is None


def _split(pets_items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    train = [it["image"] for it in pets_items[:12]]
    test_items = [it for it in pets_items[100:] if len(it["gt_boxes"])][:3]
    return _u8(train), _u8([it["image"] for it in test_items]), [it["gt_boxes"] for it in test_items]


def test_scene_prior_floor_matches_skimage(pets_items: list[dict]) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    train, test, boxes = _split(pets_items)
    floor = scene_prior_floor(train, test, boxes)
    mean = (train.double() / 255).mean(0).float().numpy().transpose(1, 2, 0).astype(np.float64)
    psnr, ssim, ppsnr, pssim = [], [], [], []
    for frame, b in zip(test, boxes):
        c = (frame.float() / 255).numpy().transpose(1, 2, 0).astype(np.float64)
        kw = dict(data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        psnr.append(peak_signal_noise_ratio(c, mean, data_range=1.0))
        ssim.append(structural_similarity(c, mean, **kw))
        mask = person_mask(b, *c.shape[:2])
        ppsnr.append(peak_signal_noise_ratio(c[mask], mean[mask], data_range=1.0))
        pssim.append(structural_similarity(c, mean, full=True, **kw)[1][mask].mean())
    assert floor["psnr"] == pytest.approx(np.mean(psnr), abs=1e-4)
    assert floor["ssim"] == pytest.approx(np.mean(ssim), abs=1e-5)
    assert floor["person_psnr"] == pytest.approx(np.mean(ppsnr), abs=1e-4)
    assert floor["person_ssim"] == pytest.approx(np.mean(pssim), abs=1e-5)
    assert floor["person_frames"] == 3 and floor["train_frames"] == 12
    # on a static camera the background is easy, people are not
    assert floor["person_psnr"] < floor["psnr"]


def test_person_region_scores_separate_people_from_background(pets_items: list[dict]) -> None:
    train, test, boxes = _split(pets_items)
    floor = scene_prior_floor(train, test, boxes)
    perfect = score_frames(test, test, boxes)
    assert perfect["person_psnr"] > floor["person_psnr"] and perfect["person_ssim"] == pytest.approx(1.0)
    mean = (train.double() / 255).mean(0).float()
    masks = [torch.from_numpy(person_mask(b, *test.shape[-2:])) for b in boxes]
    clean = test.float() / 255
    people_only = torch.stack([torch.where(m, c, mean) for m, c in zip(masks, clean)])
    background_only = torch.stack([torch.where(m, mean, c) for m, c in zip(masks, clean)])
    a, b = score_frames(test, people_only, boxes), score_frames(test, background_only, boxes)
    # the true people pasted into the mean frame are perfect on persons; the true background around the mean
    # frame's persons gains whole-frame PSNR but is exactly the floor on persons
    assert a["person_psnr"] == float("inf") and a["psnr"] > floor["psnr"]
    assert b["person_psnr"] == pytest.approx(floor["person_psnr"], abs=1e-4) and b["psnr"] > floor["psnr"]


@pytest.fixture(scope="module")
def tiny_pets_opts(tiny_pets_factory) -> Path:  # noqa: ANN001
    return tiny_pets_factory(8)


@pytest.mark.slow
def test_two_ours_checkpoints_one_scorecard(tiny_pets_opts: Path, tmp_path: Path) -> None:
    out = tmp_path / "attack"
    util = tmp_path / "utility.json"
    util.write_text(json.dumps({"ours": {"ap50": 0.9, "count_mae": 0.2}, "ours:edge": {"ap50": 0.8, "count_mae": 0.4},
                                "clean": {"ap50": 1.0, "count_mae": 0.0}}))
    argv = ["attack", "--data", str(tiny_pets_opts), "--methods", f"ours,ours:edge={EDGE},clean",
            "--attacks", "reconstruction", "--quick", "--epochs", "1", "--out", str(out), "--threads", "1",
            "--no-progress", "--device", "cpu", "--utility", str(util)]
    assert main(argv) == 0
    card = json.loads((out / "scorecard.json").read_text())
    rows = {r["method"]: r for r in card["rows"]}
    assert list(rows) == ["ours", "ours:edge", "clean"]
    assert rows["ours:edge"]["family"] == "ours" and rows["ours:edge"]["ap50"] == 0.8 and rows["ours"]["ap50"] == 0.9
    assert sorted(p.name for p in (out / "methods").iterdir()) == ["clean.json", "ours.json", "ours_edge.json"]
    assert (out / "attackers" / "reconstruction_ours_edge.pt").is_file()
    prior = card["meta"]["scene_prior"]
    assert card["meta"]["device"] == "cpu" and prior["person_psnr"] < prior["psnr"]
    for r in rows.values():
        assert r["rec_psnr_person"] is not None and r["rec_ssim_person"] is not None
    assert rows["clean"]["rec_psnr_person"] > prior["person_psnr"]
    md = (out / "scorecard.md").read_text()
    assert "Zero-information floor" in md and f"PSNR {prior['psnr']:.2f} dB" in md and "| ours:edge (" in md
    assert "recon PSNR persons" in md


def test_scorecard_merges_runs_later_wins_and_notes_recipe_differences(tiny_pets_opts: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Two attack runs (different attacker epochs) merge into one scorecard; a method in both takes the later row."""
    base = ["attack", "--data", str(tiny_pets_opts), "--attacks", "reconstruction", "--quick", "--threads", "1",
            "--no-progress", "--device", "cpu"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*base, "--methods", "clean,blur:2", "--epochs", "1", "--out", str(a)]) == 0
    assert main([*base, "--methods", "blur:2", "--epochs", "2", "--recon-scratch", "--out", str(b)]) == 0
    run_b = {r["method"]: r for r in json.loads((b / "scorecard.json").read_text())["rows"]}
    merged = tmp_path / "merged"
    assert main(["scorecard", "--from", str(a), "--from", str(b), "--out", str(merged)]) == 0
    card = json.loads((merged / "scorecard.json").read_text())
    rows = {r["method"]: r for r in card["rows"]}
    assert list(rows) == ["clean", "blur:2"]
    assert rows["blur:2"]["rec_psnr"] == run_b["blur:2"]["rec_psnr"]  # the later run's row
    md = (merged / "scorecard.md").read_text()
    assert "merged from 2 attack runs" in md and "blur:2: reconstruction attacker recipe differs: epochs 2 (others 1), residual False (others True)" in md
    assert (merged / "tradeoff.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["scorecard", "--from", str(tmp_path / "nowhere"), "--out", str(merged)]) == 2
    assert "no scorecard.json there" in capsys.readouterr().err
