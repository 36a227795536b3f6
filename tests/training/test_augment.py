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


def test_camera_jitter_off_keeps_pixels_and_on_is_seeded_bounded_and_same_size() -> None:
    from silhouette.training.augment import CameraJitter

    x = _frame()
    assert not CameraJitter() and torch.equal(crop_and_flip(x, [], False, torch.Generator(), camera=CameraJitter()), x)
    cam = CameraJitter(scale=0.5, blur=1.0, noise=0.05, jpeg=1.0)
    a = crop_and_flip(x.repeat(6, 1, 1, 1), [], False, torch.Generator().manual_seed(4), camera=cam)
    b = crop_and_flip(x.repeat(6, 1, 1, 1), [], False, torch.Generator().manual_seed(4), camera=cam)
    assert torch.equal(a, b) and a.shape == (6, 3, 200, 320)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert all(not torch.equal(a[i], x[0]) for i in range(6))  # every image changed
    assert len({round(float(a[i].mean()), 4) for i in range(6)}) > 1  # and each differently


def test_rescale_zooms_out_with_grey_padding_and_in_without() -> None:
    from silhouette.training.augment import rescale

    x = _frame()[0]
    borders, centres = [], []
    for seed in range(12):
        y = rescale(x, 0.9, torch.Generator().manual_seed(seed))
        assert y.shape == x.shape
        borders.append(float(((y - 0.5).abs() < 1e-6).float().mean()))  # share of exactly-grey padding pixels
        centres.append(float((y - x).abs().mean()))
    assert max(borders) > 0.1 and min(borders) == 0.0  # some draws zoom out (padded), some zoom in (none)
    assert min(centres) > 0.0  # no draw returns the frame untouched


def test_sensor_jitter_blurs_adds_noise_and_compresses() -> None:
    from silhouette.training.augment import CameraJitter, sensor_jitter

    x = _frame()[0]
    sharp = float((x[:, :, 1:] - x[:, :, :-1]).abs().mean())
    blurred = sensor_jitter(x, CameraJitter(blur=1.0), torch.Generator().manual_seed(0))
    assert float((blurred[:, :, 1:] - blurred[:, :, :-1]).abs().mean()) < 0.8 * sharp
    noisy = sensor_jitter(x, CameraJitter(noise=0.2), torch.Generator().manual_seed(1))
    assert 0.0 < float((noisy - x).abs().mean()) < 0.2
    jpeg = sensor_jitter(x, CameraJitter(jpeg=1.0), torch.Generator().manual_seed(2))
    assert 0.0 < float((jpeg - x).abs().mean()) < 0.05  # a JPEG round trip: close, not equal
