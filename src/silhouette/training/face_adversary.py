"""A frozen, differentiable face detector (MTCNN's first stage) whose face scores the obfuscator learns to push down."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from silhouette.errors import SilhouetteError

# the pyramid MTCNN itself searches with 12 px windows: faces of about 12, 24, 48 and 96 px
DEFAULT_SCALES = (1.0, 0.5, 0.25, 0.125)


class FaceAdversary(nn.Module):
    """MTCNN P-Net over an image pyramid; `forward` is the mean of each frame's strongest face probabilities."""

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, top_fraction: float = 0.01) -> None:
        super().__init__()
        try:
            from facenet_pytorch.models.mtcnn import PNet
        except ImportError as exc:
            raise SilhouetteError(f"train.face_weight needs facenet-pytorch for MTCNN's P-Net ({exc}); "
                                  "install it with `pip install 'silhouette[privacy]'`") from exc
        if not 0 < top_fraction <= 1 or not scales or any(s <= 0 or s > 1 for s in scales):
            raise SilhouetteError(f"face adversary: scales in (0, 1] and top_fraction in (0, 1], got {scales}, {top_fraction}")
        self.pnet = PNet(pretrained=True).eval()
        for p in self.pnet.parameters():
            p.requires_grad_(False)
        self.scales, self.top_fraction = tuple(scales), top_fraction

    def train(self, mode: bool = True) -> "FaceAdversary":
        """Always eval: the adversary is frozen, it only scores."""
        return super().train(False)

    def face_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per pyramid level, the face probability of every 12x12 window, [B, h, w]; gradients reach `images`."""
        maps = []
        for s in self.scales:
            x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode="area")
            if min(x.shape[-2:]) < 12:
                continue  # smaller than one P-Net window
            _, prob = self.pnet((x * 255.0 - 127.5) * 0.0078125)  # MTCNN's own input normalisation, RGB
            maps.append(prob[:, 1])
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mean over levels and frames of the top `top_fraction` face probabilities: 0 when nothing looks like a face."""
        losses = []
        for m in self.face_maps(images.float()):
            flat = m.flatten(1)
            k = max(1, int(flat.shape[1] * self.top_fraction))
            losses.append(flat.topk(k, dim=1).values.mean())
        if not losses:
            return images.new_zeros(())
        return torch.stack(losses).mean()
