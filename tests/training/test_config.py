"""Config loading: every shipped preset validates; bad keys and values are one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from silhouette.errors import SilhouetteError
from silhouette.training.config import config_from_dict, load_config, save_config

REPO = Path(__file__).resolve().parents[2]


ASSETS = REPO / "src" / "silhouette" / "assets"
# every config that ships: the presets, and the config beside each shipped checkpoint (a new file is picked up here)
SHIPPED = sorted((REPO / "configs").glob("*.yaml")) + sorted(ASSETS.glob("*.yaml"))


def _resolves(cfg) -> None:  # noqa: ANN001 - Config
    """Every name a training config gives is registered, its models build and its paths exist."""
    from silhouette.data.datasets import DATASETS
    from silhouette.detectors.registry import detector_names
    from silhouette.models import build_deobfuscator, build_obfuscator

    assert cfg.data.dataset in DATASETS, f"data.dataset {cfg.data.dataset!r} is not registered"
    for spec in filter(None, (cfg.detector.spec, cfg.detector.eval_spec)):
        for member in spec.split("+"):
            assert member.partition("*")[0].strip() in detector_names(), f"detector {member!r} is not registered"
    build_obfuscator(cfg.model.obfuscator, **cfg.model.obfuscator_kwargs)
    build_deobfuscator(cfg.model.deobfuscator, **cfg.model.deobfuscator_kwargs)
    if cfg.model.init_from:
        assert (REPO / cfg.model.init_from).is_file(), f"model.init_from {cfg.model.init_from} does not exist"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates(path: Path, tmp_path: Path) -> None:
    """Each file loads through the loader its command uses, names real things, and survives a save/load round trip."""
    if path.stem.startswith("reproduce"):  # `silhouette reproduce` reads these; the rest are `silhouette train` configs
        from silhouette.evaluation.reproduce import SECTIONS
        from silhouette.evaluation.reproduce import load_config as load_reproduce

        assert set(load_reproduce(path)["tables"]) == set(SECTIONS)
        return
    cfg = load_config(path)
    if path.parent == REPO / "configs":
        assert cfg.name == path.stem
    _resolves(cfg)
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg


def test_the_minimum_set_of_shipped_configs_is_there() -> None:
    """The glob above must not pass by finding nothing: the presets the docs name are all shipped."""
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "private.yaml", "paper.yaml", "cpu.yaml", "gpu.yaml", "tiny.yaml"} <= names
    assert {"obfuscator_default.yaml", "obfuscator_edge.yaml", "obfuscator_private.yaml"} <= names


@pytest.mark.parametrize("name", ["obfuscator_default", "obfuscator_edge", "obfuscator_private"])
def test_shipped_checkpoint_is_built_by_the_config_beside_it(name: str) -> None:
    """The .yaml beside a shipped .pt builds the very network it holds: same parameter names and shapes."""
    from silhouette.models import build_obfuscator
    from silhouette.models.checkpoint import read_checkpoint

    m = load_config(ASSETS / f"{name}.yaml").model
    built = build_obfuscator(m.obfuscator, **m.obfuscator_kwargs).state_dict()
    shipped = read_checkpoint(ASSETS / f"{name}.pt")["obfuscator"]["state_dict"]
    assert {k: tuple(v.shape) for k, v in built.items()} == {k: tuple(v.shape) for k, v in shipped.items()}


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


@pytest.mark.parametrize("key, value, field", [
    ("data.scale_jitter", "1.5", "data.scale_jitter"), ("data.blur", "-0.1", "data.blur"),
    ("data.noise", "0.7", "data.noise"), ("data.jpeg", "2", "data.jpeg"),
    ("data.max_per_camera", "-1", "data.max_per_camera"), ("data.extra_roots", "[':train']", "data.extra_roots"),
])
def test_camera_diversity_options_reject_bad_values_in_one_line(key: str, value: str, field: str) -> None:
    with pytest.raises(SilhouetteError) as err:
        load_config(REPO / "configs" / "general.yaml", [f"{key}={value}"])
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, field", [
    (["detector.targets=gt"], "data.extra_roots"),  # Intel frames have no human boxes
    (["data.extra_roots=[]", "detector.targets=gt"], "data.scale_jitter"),  # zoomed frames lose their human boxes
])
def test_options_that_need_human_boxes_clash_with_a_clear_error(overrides: list[str], field: str) -> None:
    with pytest.raises(SilhouetteError, match=field):
        load_config(REPO / "configs" / "general.yaml", overrides)
