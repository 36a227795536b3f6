"""Background-subtraction silhouettes: people stand out from the median background, in both output styles."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.evaluation import silhouettes as S


@pytest.fixture(scope="module")
def pets(pets_every: Callable[[int], Path]) -> Path:
    return pets_every(10)


def _test_frames(root: Path) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from silhouette.data.torch_dataset import FrameDataset

    ds = FrameDataset(root, split="test")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([it["image"] for it in items]), [it["gt_boxes"].reshape(-1, 4) for it in items]


def test_masks_mark_people_not_the_scene(pets: Path) -> None:
    """On real PETS test frames the foreground lies in the human boxes, far more densely than anywhere else."""
    sil = S.from_dataset("bgsub:mask", pets)
    x, boxes = _test_frames(pets)
    m = sil(x)
    assert m.shape == x.shape and set(torch.unique(m).tolist()) <= {0.0, 1.0}
    inside = torch.zeros_like(m[:, 0])
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1 in b.round().int().tolist():
            inside[i, y0:y1, x0:x1] = 1
    fg = m[:, 0]
    assert float((fg * inside).sum() / inside.sum()) > 0.4  # most person pixels differ from the background
    assert float((fg * (1 - inside)).sum() / (1 - inside).sum()) < 0.03  # almost nothing else does


def test_scene_keeps_the_background_and_fills_people_grey(pets: Path) -> None:
    x, _ = _test_frames(pets)
    mask, scene = S.from_dataset("bgsub:mask", pets), S.from_dataset("bgsub:scene", pets)
    m, out = mask(x)[:, :1], scene(x)
    assert torch.allclose(out * (1 - m), scene.background * (1 - m))
    assert torch.allclose(out * m, torch.full_like(out, S.PERSON_GREY) * m)


def test_bad_specs_and_sizes_are_clear_errors(pets: Path) -> None:
    with pytest.raises(SilhouetteError, match="bgsub:mask or bgsub:scene"):
        S.make_transform("bgsub:outline", pets)
    sil = S.from_dataset("bgsub:mask", pets)
    with pytest.raises(SilhouetteError, match="frames are 160x100 but the background is 320x200"):
        sil(torch.rand(1, 3, 100, 160))


def test_each_camera_gets_its_own_background(tmp_path: Path) -> None:
    """Several cameras at once: every frame is compared with its own camera's scene, so little of it is foreground."""
    from silhouette.data import prepare_dataset
    from silhouette.data.torch_dataset import FrameDataset

    intel = prepare_dataset("intel", tmp_path / "intel", every=20, progress=False)
    sil = S.from_dataset("bgsub:mask", intel)
    ds = FrameDataset(intel)
    cams = sorted({r["camera"] for r in ds.records})
    assert len(sil.backgrounds) == len(cams) > 1
    for k, cam in enumerate(cams):
        x = torch.stack([ds[i]["image"] for i, r in enumerate(ds.records) if r["camera"] == cam][:3])
        assert torch.equal(sil.nearest(x), sil.backgrounds[k : k + 1].expand(len(x), -1, -1, -1))
    one = S.from_dataset("bgsub:mask", intel, cameras=[cams[0]])
    assert len(one.backgrounds) == 1


@pytest.mark.parametrize("block", [2, 4, 8])
def test_blocked_masks_come_in_cells_and_keep_the_people(pets: Path, block: int) -> None:
    """'bgsub:mask:B' sends B x B cells: constant inside each cell, about where the full-resolution mask has people."""
    frames, _ = _test_frames(pets)
    fine = S.from_dataset("bgsub:mask", pets)(frames)[:, 0]
    coarse_sil = S.from_dataset(f"bgsub:mask:{block}", pets)
    assert coarse_sil.spec == f"bgsub:mask:{block}"
    coarse = coarse_sil(frames)[:, 0]
    h, w = coarse.shape[-2:]
    cells = coarse[:, : h // block * block, : w // block * block].unfold(1, block, block).unfold(2, block, block)
    assert (cells.amax(dim=(-1, -2)) == cells.amin(dim=(-1, -2))).all()  # one value per cell
    assert 0 < coarse.sum() and abs(coarse.sum() - fine.sum()) / fine.sum() < 0.5
    assert (coarse * fine).sum() / fine.sum() > 0.5  # the cells sit on the people


@pytest.mark.parametrize(("spec", "why"), [("bgsub:mask:0", "from 1 to 32"), ("bgsub:mask:x", "from 1 to 32"),
                                           ("bgsub:scene:99", "from 1 to 32"), ("bgsub:out:4", "bgsub:mask or")])
def test_bad_cell_sizes_are_clear_errors(pets: Path, spec: str, why: str) -> None:
    with pytest.raises(SilhouetteError, match=why):
        S.make_transform(spec, pets)
