"""Training-time photometric jitter: seeded, bounded, and wide enough to cover other cameras' light."""

from __future__ import annotations

import torch

from silhouette.edge.export import pets_frames
from silhouette.imaging import bgr_batch
from silhouette.training.augment import crop_and_flip, photometric_jitter


def _frame() -> torch.Tensor:
    return torch.from_numpy(bgr_batch(pets_frames(0, 1, 1)))  # a real 320x200 PETS frame, [1,3,H,W] in [0,1]


def test_jitter_is_seeded_bounded_and_varied() -> None:
    x = _frame()[0]
    a = photometric_jitter(x, 0.4, torch.Generator().manual_seed(3))
    b = photometric_jitter(x, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    gen = torch.Generator().manual_seed(0)
    outs = [photometric_jitter(x, 0.4, gen) for _ in range(40)]
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in outs)
    means = torch.tensor([float(o.mean()) for o in outs])
    # PETS is a dim outdoor scene; the draws must reach clearly brighter and darker versions of it
    assert float(means.max()) > float(x.mean()) + 0.08 and float(means.min()) < float(x.mean()) - 0.05


def test_crop_and_flip_without_jitter_keeps_pixels() -> None:
    x = _frame()
    same = crop_and_flip(x, [], False, torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(same, x)
    jittered = crop_and_flip(x, [96, 160], True, torch.Generator().manual_seed(0), 0.3)
    assert jittered.shape == (1, 3, 96, 160) and not torch.equal(jittered, x[..., :96, :160])
