"""Fine-tuned baselines: a classic obfuscation gets private mode's detector and budget, saved as a checkable pair."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from silhouette.cli import main

from .conftest import REPO


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _args(data: Path, out: Path, baseline: str = "greypix:4", *extra: str) -> list[str]:
    return ["finetune", "--config", str(REPO / "configs" / "tiny.yaml"), "--baseline", baseline, "--out", str(out),
            "--no-progress", "--set", f"data.root={data}", "--set", "detector.spec=yolox_nano", "--set", "detector.targets=gt",
            "--set", "data.crop=[96, 128]", "--set", "data.frame_stride=1", *extra]


@pytest.fixture(scope="module")
def finetuned(pets_every: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "greypix4"
    code, _, err = _run(*_args(pets_every(40), out))
    assert code == 0, err
    return out


def test_finetune_writes_a_pair_with_trained_weights(finetuned: Path, shared: Path) -> None:
    from silhouette.detectors.adapt import file_sha256

    pair = json.loads((finetuned / "pair.json").read_text())
    assert pair["baseline"] == "greypix:4" and pair["detector"] == "yolox_nano"
    assert pair["sha256"] == file_sha256(finetuned / "detector.onnx") != file_sha256(shared / "weights" / "yolox_nano.onnx")
    assert len(pair["history"]) == 1 and 0.0 <= pair["history"][0]["val_ap50"] <= 1.0


def test_finetune_resumes_and_keeps_training(finetuned: Path, pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    import shutil

    from silhouette.models.checkpoint import safe_torch_load

    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    first = safe_torch_load(run / "last.pt")["state_dict"]
    code, _, err = _run(*_args(pets_every(40), run, "greypix:4", "--set", "train.epochs=2", "--resume"))
    assert code == 0, err
    state = safe_torch_load(run / "last.pt")
    assert state["epoch"] == 2 and len(json.loads((run / "pair.json").read_text())["history"]) == 2
    assert any(not torch.equal(first[k], state["state_dict"][k]) for k in first)
    code, _, err = _run(*_args(pets_every(40), run, "pixelate:4", "--set", "train.epochs=3", "--resume"))
    assert code == 2 and "keep the run's options" in err


def test_evaluate_a_finetuned_pair(finetuned: Path, pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    code, out, err = _run("evaluate", "--pair", str(finetuned / "pair.json"), "--data", str(pets_every(40)),
                          "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    res = json.loads((tmp_path / "evaluation.json").read_text())
    assert res["obfuscation"] == "fine-tuned baseline greypix:4"
    assert list(res["detectors"]) == ["yolox_nano (fine-tuned)"]


@pytest.mark.parametrize(("argv_tail", "message"), [
    (["--baseline", "sepia:3"], "unknown baseline 'sepia'"),
    (["--baseline", "pixelate"], "expected METHOD:NUMBER"),
    (["--baseline", "pixelate:500"], "must be within"),
    (["--baseline", "bgsub:outline"], "expected bgsub:mask or bgsub:scene"),
])
def test_bad_baselines_are_one_line(argv_tail: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = _run("finetune", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "r"), *argv_tail)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_attack_points_a_finetuned_pair_to_its_baseline(finetuned: Path, pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    code, _, err = _run("attack", "--pair", str(finetuned / "pair.json"), "--data", str(pets_every(40)), "--out", str(tmp_path))
    assert code == 2 and "attack it as --methods greypix:4" in err


def test_silhouettes_finetune_evaluate_and_point_the_attack_to_their_experiment(
        pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    """bgsub:mask: fine-tuned on whole-frame silhouettes, scored against the footage's own background."""
    data, run = pets_every(40), tmp_path / "bgsub"
    code, _, err = _run(*_args(data, run, "bgsub:mask"))
    assert code == 0, err
    assert json.loads((run / "pair.json").read_text())["baseline"] == "bgsub:mask"
    code, _, err = _run("evaluate", "--pair", str(run / "pair.json"), "--data", str(data), "--no-progress",
                        "--out", str(tmp_path / "ev"))
    assert code == 0, err
    res = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert res["obfuscation"] == "fine-tuned baseline bgsub:mask" and 0.0 <= res["similarity"]["ssim"] < 0.2
    code, _, err = _run("attack", "--pair", str(run / "pair.json"), "--data", str(data), "--out", str(tmp_path / "a"))
    assert code == 2 and "experiments/silhouette_floor.py" in err
