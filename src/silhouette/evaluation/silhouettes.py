"""Background-subtraction silhouettes: the learning-free baseline a private obfuscator must beat.

A static camera knows its empty scene (the per-pixel median of earlier frames); a pixel belongs to a person where
some channel differs from it by more than `tau`. Two outputs: `mask` (white people on black, nothing else) and
`scene` (the public background with people as flat grey shapes). Unlike the classic baselines these need the
camera's background, so they are built from a prepared dataset's frames, not from a spec alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from silhouette.errors import SilhouetteError

from silhouette.silhouettes import DEFAULT_TAU, PERSON_GREY, STYLES, foreground_masks, parse_spec

BACKGROUND_STRIDE = 8  # every 8th frame: consecutive 10 fps frames add nothing to a median


def median_background(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel median [3,H,W] of frames [N,3,H,W]: the empty scene of a static camera."""
    return images.median(0).values


def silhouette_masks(images: torch.Tensor, background: torch.Tensor, tau: float, block: int = 1) -> torch.Tensor:
    """Foreground masks [N,1,H,W] in {0,1}: max channel difference to the background above `tau`, opened and closed,
    in `block`-pixel cells."""
    bg = background.detach().cpu().numpy()
    masks = foreground_masks(images.detach().cpu().numpy(), bg[None] if bg.ndim == 3 else bg, tau, block)
    return torch.from_numpy(masks).to(images.device, images.dtype)


class BackgroundSilhouette(nn.Module):
    """Silhouettes against fixed backgrounds, as a parameter-free module (spec 'bgsub:mask' or 'bgsub:scene', with
    ':BLOCK' in BLOCK-pixel cells).

    `background` is one [3,H,W] scene or one per camera [K,3,H,W]; each frame is compared with the background it
    is closest to (its own camera's: another scene differs everywhere), so footage of several cameras scores at once.
    """

    frame_level = True  # needs whole frames at the background's size: training crops after it, not before

    def __init__(self, background: torch.Tensor, style: str = "mask", tau: float = DEFAULT_TAU, block: int = 1) -> None:
        super().__init__()
        if style not in STYLES:
            raise SilhouetteError(f"bgsub:{style}: expected bgsub:mask or bgsub:scene")
        bg = background.float()
        self.register_buffer("backgrounds", bg[None] if bg.dim() == 3 else bg)
        self.style, self.tau, self.block = style, float(tau), int(block)
        self.spec = f"bgsub:{style}" + (f":{self.block}" if self.block > 1 else "")

    @property
    def background(self) -> torch.Tensor:
        """The first (or only) background [3,H,W]."""
        return self.backgrounds[0]

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """The background [B,3,H,W] each frame of a batch is closest to."""
        if len(self.backgrounds) == 1:
            return self.backgrounds[:1].expand(len(x), -1, -1, -1)
        dist = (x[:, None] - self.backgrounds[None]).abs().mean(dim=(2, 3, 4))
        return self.backgrounds[dist.argmin(1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The silhouettes of a [B,3,H,W] batch at the background's size."""
        if tuple(x.shape[-2:]) != tuple(self.backgrounds.shape[-2:]):
            raise SilhouetteError(f"{self.spec}: frames are {x.shape[-1]}x{x.shape[-2]} but the background is "
                                  f"{self.backgrounds.shape[-1]}x{self.backgrounds.shape[-2]}; use frames of its camera")
        bg = self.nearest(x)
        m = silhouette_masks(x, bg, self.tau, self.block)  # each frame against its own background
        if self.style == "mask":
            return m.expand(-1, 3, -1, -1).contiguous()
        return bg * (1 - m) + PERSON_GREY * m


def is_bgsub(spec: str) -> bool:
    """Whether a baseline spec names background-subtraction silhouettes."""
    return spec.partition(":")[0].strip() == "bgsub"


def from_dataset(spec: str, root: str | Path | Sequence[str | Path], tau: float = DEFAULT_TAU,
                 cameras: list[str] | None = None, exclude: Sequence[str] = ()) -> BackgroundSilhouette:
    """'bgsub:STYLE[:BLOCK]' with one background per camera of one or more prepared datasets (same frame size): the
    median of that camera's train frames (every frame it has, for a camera outside the train split); `exclude` leaves
    cameras out."""
    from silhouette.data.torch_dataset import FrameDataset

    try:
        style, block = parse_spec(spec)
    except ValueError as exc:
        raise SilhouetteError(f"--baseline {exc}") from None
    backgrounds = []
    for r in [root] if isinstance(root, (str, Path)) else list(root):
        ds = FrameDataset(r, cameras=cameras)
        by_camera: dict[str, list[int]] = {}
        for i, rec in enumerate(ds.records):
            if rec["camera"] not in exclude:
                by_camera.setdefault(rec["camera"], []).append(i)
        for _, idx in sorted(by_camera.items()):
            train = [i for i in idx if ds.records[i]["split"] == "train"] or idx
            backgrounds.append(median_background(torch.stack([ds[i]["image"] for i in train[::BACKGROUND_STRIDE]])))
    if len({tuple(b.shape) for b in backgrounds}) > 1:
        raise SilhouetteError(f"{spec}: the footage has frames of different sizes; prepare every source at one --size")
    return BackgroundSilhouette(torch.stack(backgrounds), style, tau, block)


def make_transform(spec: str, root: str | Path | Sequence[str | Path], cameras: list[str] | None = None,
                   exclude: Sequence[str] = ()) -> nn.Module:
    """The frame transform of a baseline spec: a classic baseline, or silhouettes against `root`'s backgrounds."""
    if is_bgsub(spec):
        return from_dataset(spec, root, cameras=cameras, exclude=exclude)
    from silhouette.evaluation.baselines import BaselineModule

    return BaselineModule(spec)
