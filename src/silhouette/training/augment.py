"""Training-time augmentation: random crops, flips and photometric jitter, and the boxes that move with them."""

from __future__ import annotations

from typing import Sequence

import torch


def crop_and_flip(
    x: torch.Tensor, crop: Sequence[int], hflip: bool, gen: torch.Generator, photometric: float = 0.0,
    geometry: list[tuple[int, int, bool]] | None = None,
) -> torch.Tensor:
    """Random crops [H,W], flips and photometric jitter drawn from `gen`; the same draws in every run with the same seed.

    `geometry`, when given, receives (top, left, flipped) per image, to move boxes along (see `move_boxes`).
    """
    b, _, h, w = x.shape
    outs = []
    for i in range(b):
        img = x[i]
        top = left = 0
        if crop:
            ch, cw = min(crop[0], h), min(crop[1], w)
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            img = img[:, top : top + ch, left : left + cw]
        flipped = hflip and bool(torch.rand(1, generator=gen) < 0.5)
        if flipped:
            img = img.flip(-1)
        if geometry is not None:
            geometry.append((top, left, flipped))
        if photometric > 0:
            img = photometric_jitter(img, photometric, gen)
        outs.append(img)
    return torch.stack(outs)


def move_boxes(boxes: torch.Tensor, top: int, left: int, flipped: bool, size: Sequence[int],
               min_visible: float = 0.5, min_height: float = 16.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [K,4] (xyxy) after a crop at (top, left) of `size` [H,W] and an optional flip, clipped to the crop.

    Also returns a keep mask: at least `min_visible` of the box inside the crop and `min_height` pixels tall (the
    re-ID attack's minimum), so a sliver at the crop edge is not taken for a person.
    """
    h, w = size
    b = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    clipped = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], dim=1)
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    seen = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (seen >= min_visible * area) & (area > 0) & ((clipped[:, 3] - clipped[:, 1]) >= min_height)
    if flipped:
        clipped = torch.stack([w - clipped[:, 2], clipped[:, 1], w - clipped[:, 0], clipped[:, 3]], dim=1)
    return clipped, keep


def photometric_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random gamma, contrast, brightness and per-channel gain of a [3,H,W] image in [0,1], clamped to [0,1].

    One camera's footage covers a narrow band of light and colour; without this the obfuscator learns a mapping
    that only works inside that band (a PETS-trained one then loses most people in bright indoor scenes).
    """
    u = (torch.rand(6, generator=gen) * 2 - 1) * strength  # six draws in [-s, s]
    gamma, contrast, gain = float(torch.exp(u[0])), 1.0 + float(u[1]), 1.0 + float(u[2])
    channel = (1.0 + u[3:] / 2).view(3, 1, 1).to(img)
    out = img.clamp(0, 1) ** gamma
    mean = out.mean()
    return (((out - mean) * contrast + mean) * gain * channel).clamp(0, 1)
