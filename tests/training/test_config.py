"""Config loading: every shipped preset validates; bad keys and values are one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from silhouette.errors import SilhouetteError
from silhouette.training.config import config_from_dict, load_config, save_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["paper", "cpu", "gpu", "tiny"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.name == name


def test_paper_preset_is_the_papers_recipe() -> None:
    t = load_config(REPO / "configs" / "paper.yaml").train
    assert (t.lr_obf, t.lr_deobf, t.weight_decay, t.epochs) == (1e-2, 1e-3, 1e-4, 30)
    assert (t.lr_step_epochs, t.lr_decay_obf, t.lr_decay_deobf, t.lam) == (10, 0.01, 0.1, 1.0)
    assert load_config(REPO / "configs" / "paper.yaml").detector.spec == "fasterrcnn_resnet50_fpn"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lr_obf": "abc"}}, "train.lr_obf: expected a number, got 'abc'"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer"),
        ({"train": {"amp": "yes"}}, "train.amp: expected true/false"),
        ({"train": {"lr_ob": 0.1}}, "train.lr_ob: unknown key (did you mean train.lr_obf?)"),
        ({"trian": {}}, "trian: unknown key"),
        ({"data": {"crop": [1, 2, 3]}}, "data.crop"),
        ({"data": {"crop": "big"}}, "data.crop: expected a list"),
        ({"train": {"alternate": "sometimes"}}, "train.alternate"),
        ({"train": {"warmup_target": "blur"}}, "train.warmup_target"),
        ({"train": {"blank_weight": -1}}, "train.blank_weight: must be >= 0"),
        ({"data": {"photometric": 1.5}}, "data.photometric: expected a strength in [0, 1)"),
        ({"train": 3}, "train: expected a mapping"),
        ({"train": {"lr_obf": float("inf")}}, "train.lr_obf: expected a finite number"),
        ({"train": {"lr_deobf": "nan"}}, "train.lr_deobf: expected a finite number"),
        ({"train": {"lr_obf": 0}}, "train.lr_obf / train.lr_deobf: must be > 0"),
        ({"train": {"warmup_lr": -1e-3}}, "train.warmup_lr: must be > 0"),
        ({"train": {"lr_decay_obf": -0.1}}, "train.lr_decay_obf / train.lr_decay_deobf: must be >= 0"),
        ({"train": {"lr_decay_deobf": -1}}, "train.lr_decay_obf / train.lr_decay_deobf: must be >= 0"),
        ({"train": {"grad_clip": -1.0}}, "train.grad_clip: must be >= 0"),
        ({"train": {"threads": -2}}, "train.threads: must be >= 0"),
        ({"train": {"log_every": 0}}, "train.log_every: must be >= 1"),
        ({"eval": {"batch_size": 0}}, "eval.batch_size: must be >= 1"),
    ],
)
def test_bad_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(SilhouetteError) as err:
        config_from_dict(data)
    assert message in str(err.value)


def test_overrides_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["train.epochs=3", "train.lr_obf=1e-4", "data.crop=[32, 48]"])
    assert (cfg.train.epochs, cfg.train.lr_obf, cfg.data.crop) == (3, 1e-4, [32, 48])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(SilhouetteError, match="expected key=value"):
        load_config(REPO / "configs" / "tiny.yaml", ["train.epochs"])
    with pytest.raises(SilhouetteError, match="tiny.yaml: train.epochs: expected an integer"):
        load_config(REPO / "configs" / "tiny.yaml", ["train.epochs=abc"])


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SilhouetteError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SilhouetteError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_cli_reports_config_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from silhouette.cli import main

    rc = main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--set", "train.lr_obf=abc"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.lr_obf: expected a number, got 'abc'" in err and "Traceback" not in err


def test_yaml_infinity_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YAML's `.inf` parses as a float; the CLI names the key instead of training towards a divergence."""
    from silhouette.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr_obf: .inf\n", encoding="utf-8")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr_obf: expected a finite number" in err[0]
    assert not (tmp_path / "run").exists()
