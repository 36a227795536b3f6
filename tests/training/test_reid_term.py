"""The identity-confusion term (train.reid_weight): boxes follow the crops, the co-trained classifier learns, the
obfuscator step moves only the obfuscator, and a whole run checkpoints and resumes the classifier."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from silhouette.data.torch_dataset import FrameDataset
from silhouette.errors import SilhouetteError
from silhouette.models import build_deobfuscator, build_obfuscator, read_checkpoint
from silhouette.privacy.reid import ReIDNet
from silhouette.training import train
from silhouette.training.engine import AdversarialEngine, identity_confusion, person_crops
from silhouette.training.augment import crop_and_flip, move_boxes

from .conftest import TEST_DETECTOR


@pytest.fixture(scope="module")
def people_frames(pets_train: Path) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Four real PETS train frames (320x200) that hold ground-truth persons, with boxes and contiguous labels."""
    ds = FrameDataset(pets_train, split="train")
    items = [it for it in (ds[i] for i in range(len(ds))) if len(it["gt_ids"]) >= 2][:4]
    assert len(items) == 4, "the sparse PETS split should hold frames with several people"
    ids = torch.cat([it["gt_ids"] for it in items]).unique().tolist()
    people = [(it["gt_boxes"].float(), torch.tensor([ids.index(int(v)) for v in it["gt_ids"]])) for it in items]
    return torch.stack([it["image"] for it in items]), people


def test_boxes_follow_the_crop_and_the_flip(people_frames) -> None:  # noqa: ANN001
    x, _ = people_frames
    box = torch.tensor([[100.0, 40.0, 140.0, 120.0], [0.0, 0.0, 20.0, 200.0]])  # a whole box, and one at the left edge
    geometry: list[tuple[int, int, bool]] = []
    for seed in range(20):  # until a draw both keeps the first box inside and flips
        geometry.clear()
        out = crop_and_flip(x[:1], [160, 200], True, torch.Generator().manual_seed(seed), 0.0, geometry)
        top, left, flipped = geometry[0]
        if flipped and 10 < left <= 100:
            break
    else:
        pytest.fail("no crop of 20 draws kept the box and flipped")
    moved, keep = move_boxes(box, top, left, flipped, out.shape[-2:])
    assert keep.tolist() == [True, False]  # the edge box is (mostly) cut away
    x1, y1, x2, y2 = moved[0].int().tolist()
    assert (x2 - x1, y2 - y1) == (40, 80)
    assert torch.equal(out[0, :, y1:y2, x1:x2], x[0, :, 40:120, 100:140].flip(-1))  # the person's pixels, mirrored


def test_co_trained_classifier_learns_identities_and_confusion_is_zero_at_uniform(people_frames) -> None:  # noqa: ANN001
    x, people = people_frames
    crops, ids = person_crops(x, people)
    assert crops.shape[1:] == (3, 64, 32) and len(crops) == len(ids) >= 8
    assert identity_confusion(torch.zeros(5, 7)).abs() < 1e-6
    assert identity_confusion(torch.tensor([[9.0, 0.0, 0.0]])) > 1.0
    torch.manual_seed(0)
    obf, deobf = build_obfuscator("obf_w025"), build_deobfuscator("deobf_small", width=0.25)
    reid = ReIDNet(int(ids.max()) + 1)
    from silhouette.detectors import create_detector

    engine = AdversarialEngine(obf, deobf, create_detector(TEST_DETECTOR), torch.optim.AdamW(obf.parameters()),
                               torch.optim.AdamW(deobf.parameters()), reid=reid,
                               opt_reid=torch.optim.AdamW(reid.parameters(), lr=1e-3), reid_weight=1.0)
    losses = [engine.reid_step(x, people) for _ in range(15)]  # clean frames: the classifier must fit them
    assert losses[-1] < 0.5 * losses[0], losses


def test_obfuscator_step_moves_only_the_obfuscator(people_frames) -> None:  # noqa: ANN001
    from silhouette.detectors import create_detector

    x, people = people_frames
    x = x[..., :192, :288].contiguous()
    det = create_detector(TEST_DETECTOR)
    targets = [d.persons(0.3) for d in det.predict(x)]
    torch.manual_seed(0)
    obf, deobf = build_obfuscator("obf_w025"), build_deobfuscator("deobf_small", width=0.25)
    reid = ReIDNet(int(torch.cat([i for _, i in people]).max()) + 1)
    engine = AdversarialEngine(obf, deobf, det, torch.optim.AdamW(obf.parameters(), lr=1e-2),
                               torch.optim.AdamW(deobf.parameters()), reid=reid,
                               opt_reid=torch.optim.AdamW(reid.parameters()), reid_weight=1.0)
    before_obf = {k: v.clone() for k, v in obf.state_dict().items()}
    before_reid = {k: v.clone() for k, v in reid.state_dict().items()}
    stats, _ = engine.obfuscator_step(x, targets, lam=1.0, people=people)
    assert stats.reid_confusion > 0 and torch.isfinite(torch.tensor(stats.loss_obf))
    assert all(torch.equal(before_reid[k], v) for k, v in reid.state_dict().items())  # weights and BN buffers
    assert any(not torch.equal(before_obf[k], v) for k, v in obf.state_dict().items())


def test_run_with_the_identity_term_logs_checkpoints_and_resumes(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    sets = ("train.reid_weight=1.0", "data.max_train_frames=8", "train.lr_step_epochs=1")
    out = tmp_path / "run"
    train(tiny_config(*sets, "train.epochs=1"), out, progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[-1]["loss_reid"] not in ("", "nan") and rows[-1]["reid_confusion"] not in ("", "nan")
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert "reid" in state and "opt_reid" in state
    train(tiny_config(*sets, "train.epochs=2"), out, resume=True, progress=False)
    assert [r["epoch"] for r in csv.DictReader(open(out / "metrics.csv"))] == ["1", "2"]
    with pytest.raises(SilhouetteError, match="trained without train.reid_weight"):
        plain = tmp_path / "plain"
        train(tiny_config("train.epochs=1"), plain, progress=False)
        train(tiny_config("train.epochs=2", "train.reid_weight=1.0"), plain, resume=True, progress=False)


def test_identity_term_without_identities_fails_with_a_clear_message(tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    from silhouette.data import prepare_dataset

    intel = prepare_dataset("intel", tmp_path / "intel", every=60, progress=False)
    cfg = tiny_config("train.reid_weight=1.0", "data.dataset=intel", f"data.root={intel}")
    with pytest.raises(SilhouetteError, match="needs ground-truth person identities"):
        train(cfg, tmp_path / "run", progress=False)
