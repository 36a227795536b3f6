"""Background-subtraction silhouettes: the learning-free baseline a private obfuscator must beat.

A static camera knows its empty scene (the per-pixel median of earlier frames); a pixel belongs to a person where
some channel differs from it by more than `tau`. Two outputs: `mask` (white people on black, nothing else) and
`scene` (the public background with people as flat grey shapes). Unlike the classic baselines these need the
camera's background, so they are built from a prepared dataset's frames, not from a spec alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from silhouette.errors import SilhouetteError

STYLES = ("mask", "scene")
PERSON_GREY = 0.25  # the flat fill of `scene`: about the mean intensity of the people in PETS
DEFAULT_TAU = 0.06  # foreground threshold on the max channel difference (covers ~70 % of PETS person-box pixels)
BACKGROUND_STRIDE = 8  # every 8th frame: consecutive 10 fps frames add nothing to a median


def median_background(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel median [3,H,W] of frames [N,3,H,W]: the empty scene of a static camera."""
    return images.median(0).values


def silhouette_masks(images: torch.Tensor, background: torch.Tensor, tau: float) -> torch.Tensor:
    """Foreground masks [N,1,H,W] in {0,1}: max channel difference to the background above `tau`, opened and closed."""
    import cv2

    diff = (images - background).abs().amax(1).cpu().numpy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    out = []
    for d in diff:
        m = (d > tau).astype(np.uint8)
        # opening drops isolated noisy pixels, closing fills pinholes inside a body
        out.append(cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel))
    return torch.from_numpy(np.stack(out)).to(images.device, images.dtype)[:, None]


class BackgroundSilhouette(nn.Module):
    """Silhouettes against a fixed background, as a parameter-free module (spec 'bgsub:mask' or 'bgsub:scene')."""

    frame_level = True  # needs whole frames at the background's size: training crops after it, not before

    def __init__(self, background: torch.Tensor, style: str = "mask", tau: float = DEFAULT_TAU) -> None:
        super().__init__()
        if style not in STYLES:
            raise SilhouetteError(f"bgsub:{style}: expected bgsub:mask or bgsub:scene")
        self.register_buffer("background", background.float())
        self.style, self.tau, self.spec = style, float(tau), f"bgsub:{style}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The silhouettes of a [B,3,H,W] batch at the background's size."""
        if tuple(x.shape[-2:]) != tuple(self.background.shape[-2:]):
            raise SilhouetteError(f"{self.spec}: frames are {x.shape[-1]}x{x.shape[-2]} but the background is "
                                  f"{self.background.shape[-1]}x{self.background.shape[-2]}; use frames of its camera")
        m = silhouette_masks(x, self.background, self.tau)
        if self.style == "mask":
            return m.expand(-1, 3, -1, -1).contiguous()
        return self.background * (1 - m) + PERSON_GREY * m


def is_bgsub(spec: str) -> bool:
    """Whether a baseline spec names background-subtraction silhouettes."""
    return spec.partition(":")[0].strip() == "bgsub"


def from_dataset(spec: str, root: str | Path, tau: float = DEFAULT_TAU) -> BackgroundSilhouette:
    """'bgsub:STYLE' with the background of a prepared dataset: its train split, or every frame if it has none."""
    from silhouette.data.manifest import load_manifest
    from silhouette.data.torch_dataset import FrameDataset

    style = spec.partition(":")[2].strip()
    if style not in STYLES:
        raise SilhouetteError(f"--baseline {spec}: expected bgsub:mask or bgsub:scene")
    splits = {r["split"] for r in load_manifest(root)["frames"]}
    ds = FrameDataset(root, split="train" if "train" in splits else None)
    cams = {r["camera"] for r in ds.records}
    if len(cams) != 1:
        raise SilhouetteError(f"{spec}: {root} holds {len(cams)} cameras; a background model needs one static camera")
    images = torch.stack([ds[i]["image"] for i in range(0, len(ds), BACKGROUND_STRIDE)])
    return BackgroundSilhouette(median_background(images), style, tau)


def make_transform(spec: str, root: str | Path) -> nn.Module:
    """The frame transform of a baseline spec: a classic baseline, or silhouettes against `root`'s background."""
    if is_bgsub(spec):
        return from_dataset(spec, root)
    from silhouette.evaluation.baselines import BaselineModule

    return BaselineModule(spec)
