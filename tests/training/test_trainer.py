"""Whole training runs on the tiny config: outputs, exact resume, divergence stop, 2-process DDP."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.models import load_deobfuscator, load_obfuscator, read_checkpoint
from silhouette.training import TrainingDiverged, train


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = read_checkpoint(path)
    return {**{f"obf.{k}": v for k, v in ckpt["obfuscator"]["state_dict"].items()},
            **{f"deobf.{k}": v for k, v in ckpt["deobfuscator"]["state_dict"].items()}}


def test_tiny_run_writes_everything(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    metrics = train(tiny_config("train.warmup_steps=2", "train.warmup_target=fold"), out, progress=False)
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.csv"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]  # warm start, then one adversarial epoch
    for key in ("val_ap50", "val_ssim", "loss_det", "loss_deobf"):
        assert rows[-1][key] not in ("", "nan"), key
    assert 0.0 <= metrics["val_ap50"] <= 1.0 and -1.0 <= metrics["val_ssim"] <= 1.0
    obf = load_obfuscator(out / "last.pt")
    assert not obf.training
    assert load_deobfuscator(out / "last.pt") is not None
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["name"] == "tiny" and "opt_obf" in ckpt["training_state"]
    with pytest.raises(SilhouetteError, match="--resume"):
        train(tiny_config(), out, progress=False)  # refuses to overwrite a run


def test_init_from_replaces_the_warm_start_and_can_add_output_levels(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    first = tmp_path / "first"
    train(tiny_config(), first, progress=False)
    out = tmp_path / "quantised"
    # a vanishing rate: the loaded weights stay put, so the new run's obfuscator is the first one with rounding
    train(tiny_config(f"model.init_from={first / 'last.pt'}", "model.obfuscator_kwargs={output_levels: 2}",
                      "train.warmup_steps=5", "train.lr_obf=1e-12"), out, progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1"]  # no warm start
    before, after = load_obfuscator(first / "last.pt"), load_obfuscator(out / "last.pt")
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
        assert torch.allclose(p0, p1, atol=1e-6), name
    assert after.output_levels == 2
    assert set(torch.unique(after(torch.rand(1, 3, 64, 96))).tolist()) <= {0.0, 1.0}
    with pytest.raises(SilhouetteError, match="init_from .*does not fit model.obfuscator"):
        train(tiny_config(f"model.init_from={first / 'last.pt'}", "model.obfuscator=obf_w050"), tmp_path / "bad",
              progress=False)


def test_best_score_with_min_ap50_prefers_the_most_trained_passing_epoch() -> None:
    from silhouette.training.validation import best_score

    plain = [best_score(ap, ssim, 0.45) for ap, ssim in ((0.95, 0.3), (0.80, 0.3), (0.99, 0.6))]
    assert plain[0] > plain[1] > plain[2]  # highest AP50 among SSIM-passing epochs; failing SSIM ranks below
    scores = {epoch: best_score(ap, ssim, 0.45, epoch, min_ap50=0.9)
              for epoch, ap, ssim in ((1, 0.97, 0.3), (2, 0.91, 0.3), (3, 0.85, 0.3), (4, 0.95, 0.5))}
    assert max(scores, key=scores.get) == 2  # epoch 3 misses AP50, epoch 4 misses SSIM
    assert scores[2] > scores[1] > scores[3] > scores[4]


def test_min_ap50_keeps_the_last_epoch_that_meets_it(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    train(tiny_config("train.epochs=3", "eval.min_ap50=0", "eval.ssim_target=1"), out, progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert read_checkpoint(out / "best.pt")["epoch"] == int(rows[-1]["epoch"]) == 3  # every epoch passes: the last


def test_resume_reproduces_the_uninterrupted_run_exactly(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config("train.epochs=2", "train.lr_step_epochs=1"), full, progress=False)
    train(tiny_config("train.epochs=1", "train.lr_step_epochs=1"), part, progress=False)
    assert read_checkpoint(part / "last.pt")["epoch"] == 1
    train(tiny_config("train.epochs=2", "train.lr_step_epochs=1"), part, resume=True, progress=False)
    a, b = _weights(full / "last.pt"), _weights(part / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    ra, rb = read_checkpoint(full / "last.pt"), read_checkpoint(part / "last.pt")
    assert ra["training_state"]["sched_obf"] == rb["training_state"]["sched_obf"]
    assert len(list(csv.DictReader(open(part / "metrics.csv")))) == 2
    with pytest.raises(SilhouetteError, match="not found"):
        train(tiny_config(), tmp_path / "never", resume=True, progress=False)


def test_exploding_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    train(tiny_config(), out, progress=False)
    good = _weights(out / "last.pt")
    with pytest.raises(TrainingDiverged, match=r"exploded past train.max_loss.*last good checkpoint"):
        train(tiny_config("train.epochs=2", "train.max_loss=1e-9"), out, resume=True, progress=False)
    assert "exploded" in (out / "STOPPED.txt").read_text()
    kept = _weights(out / "last.pt")
    assert read_checkpoint(out / "last.pt")["epoch"] == 1
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_divergence_before_any_checkpoint_says_none_was_written(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    """A run that explodes in its first epoch names no last.pt, because none exists."""
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="no checkpoint was written") as err:
        train(tiny_config("train.max_loss=1e-9"), out, progress=False)
    assert "last.pt" not in str(err.value)
    assert not (out / "last.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    """One torchrun-like rank: env set as torchrun would, then the normal trainer."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from silhouette.training.config import config_from_dict
    from silhouette.training.trainer import Trainer

    trainer = Trainer(config_from_dict(cfg_dict), out, progress=False)
    trainer.run()
    torch.save({k: v.detach().clone() for k, v in trainer.obf_raw.state_dict().items()}
               | {f"deobf.{k}": v.detach().clone() for k, v in trainer.deobf_raw.state_dict().items()},
               Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_two_processes_end_with_identical_weights(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    import torch.multiprocessing as mp

    cfg = tiny_config("data.max_train_frames=8", "train.batch_size=2")
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_dict(), str(out)), nprocs=2, join=True)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # ranks trained on different shards yet agree (weights and BN statistics), and rank 0 saved that model
    ckpt = read_checkpoint(out / "last.pt")
    assert all(torch.equal(v, r0[k]) for k, v in ckpt["obfuscator"]["state_dict"].items())
    torch.manual_seed(cfg.seed)
    from silhouette.models import build_obfuscator

    init = build_obfuscator(cfg.model.obfuscator, **cfg.model.obfuscator_kwargs).state_dict()
    assert not torch.equal(init["stem.0.0.weight"], r0["stem.0.0.weight"])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[-1]["train_images"] == "8"


def test_explicit_cuda_device_gets_the_local_rank_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.set_device refuses an index-less device: 'cuda' must become cuda:<local rank> (found on an H100)."""
    from silhouette.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")


def test_extra_sources_join_training_balanced_and_without_the_left_out_camera(
        tiny_config, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:  # noqa: ANN001
    """data.extra_roots / exclude_cameras / max_per_camera: the frames a leave-one-source-out fold trains on."""
    from silhouette.data import prepare_dataset
    from silhouette.training.trainer import Trainer

    intel = prepare_dataset("intel", tmp_path_factory.mktemp("intel20") / "intel", every=20, progress=False)
    cfg = tiny_config("data.max_train_frames=0", "data.max_per_camera=3", f"data.extra_roots=['{intel}:all']",
                      "data.exclude_cameras=['people-detection']", "data.scale_jitter=0.3", "data.jpeg=0.5")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    cams = [f.split("/")[1] for f in trainer.train_frames.files]
    intel_cams = {f["camera"] for f in json.loads((intel / "manifest.json").read_text())["frames"]}
    assert set(cams) == {"view001"} | (intel_cams - {"people-detection"})
    assert max(cams.count(c) for c in set(cams)) == 3  # the cap holds per camera, the long clip included
    assert len(trainer.train_frames.labels) == len(cams)  # each source labelled from its own cache
    assert (tmp_path / "run" / "last.pt").is_file()
