"""Training-time augmentation: random crops, flips, photometric and camera jitter, and the boxes that move with them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class CameraJitter:
    """What makes one camera's footage unlike another's: zoom and aspect, lens blur, sensor noise, JPEG.

    `scale` s: zoom by a factor in [1/(1+s), 1+s] and stretch the aspect by up to ±s/2 (the frame keeps its size:
    zoomed out, it is padded grey); `blur`: probability of a Gaussian blur (sigma 0.5-1.5); `noise`: largest
    std of additive sensor noise; `jpeg`: probability of a JPEG round trip at quality 30-90. All off at 0.
    """

    scale: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.scale or self.blur or self.noise or self.jpeg)


def crop_and_flip(
    x: torch.Tensor, crop: Sequence[int], hflip: bool, gen: torch.Generator, photometric: float = 0.0,
    geometry: list[tuple[int, int, bool]] | None = None, camera: CameraJitter | None = None,
) -> torch.Tensor:
    """Random crops [H,W], flips, photometric and camera jitter drawn from `gen`; the same draws for the same seed.

    `geometry`, when given, receives (top, left, flipped) per image, to move boxes along (see `move_boxes`); a
    zoom (`camera.scale`) moves boxes in a way it does not record, so it is for targets found on the augmented image.
    """
    b, _, h, w = x.shape
    outs = []
    for i in range(b):
        img = x[i]
        if camera is not None and camera.scale > 0:
            img = rescale(img, camera.scale, gen)
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
        if camera:
            img = sensor_jitter(img, camera, gen)
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


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    """One draw in [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand(1, generator=gen))


def rescale(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """A [3,H,W] image zoomed by up to (1+s)x in or out with its aspect stretched, cut or grey-padded back to H x W.

    People at another distance and footage resized from another aspect ratio: PETS shows small people at 4:3, the
    Intel cameras large ones at 16:9 squeezed to 16:10.
    """
    _, h, w = img.shape
    zoom = math.exp(_uniform(gen, -math.log1p(strength), math.log1p(strength)))
    aspect = math.exp(_uniform(gen, -strength / 2, strength / 2))
    nh, nw = max(1, round(h * zoom * math.sqrt(aspect))), max(1, round(w * zoom / math.sqrt(aspect)))
    out = torch.nn.functional.interpolate(img[None], size=(nh, nw), mode="bilinear", antialias=True,
                                          align_corners=False)[0].clamp(0, 1)
    canvas = torch.full((img.shape[0], max(h, nh), max(w, nw)), 0.5, dtype=img.dtype)
    top, left = int(_uniform(gen, 0, canvas.shape[1] - nh + 1)), int(_uniform(gen, 0, canvas.shape[2] - nw + 1))
    canvas[:, top : top + nh, left : left + nw] = out
    top, left = int(_uniform(gen, 0, canvas.shape[1] - h + 1)), int(_uniform(gen, 0, canvas.shape[2] - w + 1))
    return canvas[:, top : top + h, left : left + w]


def sensor_jitter(img: torch.Tensor, camera: CameraJitter, gen: torch.Generator) -> torch.Tensor:
    """Lens blur, sensor noise and a JPEG round trip of a [3,H,W] image in [0,1], each with its configured odds."""
    from torchvision.transforms.functional import gaussian_blur

    from silhouette.imaging import bgr_to_tensor, decode_frame, encode_frame, tensor_to_bgr

    if camera.blur > 0 and float(torch.rand(1, generator=gen)) < camera.blur:
        sigma = _uniform(gen, 0.5, 1.5)
        img = gaussian_blur(img, kernel_size=2 * math.ceil(2 * sigma) + 1, sigma=sigma)
    if camera.noise > 0:
        std = _uniform(gen, 0.0, camera.noise)
        img = (img + std * torch.randn(img.shape, generator=gen, dtype=img.dtype)).clamp(0, 1)
    if camera.jpeg > 0 and float(torch.rand(1, generator=gen)) < camera.jpeg:
        quality = int(_uniform(gen, 30, 91))
        img = bgr_to_tensor(decode_frame(encode_frame(tensor_to_bgr(img), "jpg", quality))).to(img.dtype)
    return img
