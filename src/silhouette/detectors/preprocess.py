"""Model-input preprocessing for the ONNX zoo: the exact OpenCV path (README §4) and a differentiable torch twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

# How the frame is fitted into the square model input.
#   letterbox_tl:     YOLOX, keep ratio, int() size, pasted at (0, 0), pad 114.
#   warp_center:      NanoDet, keep ratio via cv2.warpPerspective, centred, border 0.
#   letterbox_center: YOLOv5, keep ratio, round() size, centred with round(d - 0.1), pad 114.
#   stretch:          Yolo-Fastest / FastestDet, plain resize to SxS.
Fit = Literal["letterbox_tl", "warp_center", "letterbox_center", "stretch"]
# Value convention of the network input.
#   raw255: BGR/RGB 0..255; unit: x/255; nanodet: (x - mean) / std on 0..255 BGR.
Scaling = Literal["raw255", "unit", "nanodet"]

NANODET_MEAN = (103.53, 116.28, 123.675)  # B, G, R
NANODET_STD = (57.375, 57.12, 58.395)
PAD_VALUE = 114.0


@dataclass(frozen=True)
class PreprocSpec:
    """How one model wants its input: square size, channel order, fitting and value scaling."""

    size: int
    bgr: bool
    fit: Fit
    scaling: Scaling


@dataclass(frozen=True)
class Geometry:
    """Frame -> model input: `x_in = x * sx + ox`, `y_in = y * sy + oy`; content size (cw, ch) in input pixels."""

    sx: float
    sy: float
    ox: float
    oy: float
    cw: int
    ch: int

    def to_frame(self, boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Map [..., 4] xyxy boxes from model-input pixels back to frame pixels, clipped to the frame."""
        scale = boxes.new_tensor([self.sx, self.sy, self.sx, self.sy])
        off = boxes.new_tensor([self.ox, self.oy, self.ox, self.oy])
        out = (boxes - off) / scale
        lim = boxes.new_tensor([width, height, width, height])
        return torch.minimum(out.clamp_min(0.0), lim)


def geometry(spec: PreprocSpec, height: int, width: int) -> Geometry:
    """The frame -> input mapping each model's reference code uses (README §4)."""
    s = spec.size
    if spec.fit == "letterbox_tl":
        r = min(s / height, s / width)
        return Geometry(r, r, 0.0, 0.0, int(width * r), int(height * r))
    if spec.fit == "warp_center":
        r = s / height if width / height < 1 else s / width
        return Geometry(r, r, s / 2 - width / 2 * r, s / 2 - height / 2 * r, s, s)
    if spec.fit == "letterbox_center":
        r = min(s / height, s / width)
        nw, nh = int(round(width * r)), int(round(height * r))
        left, top = int(round((s - nw) / 2 - 0.1)), int(round((s - nh) / 2 - 0.1))
        return Geometry(r, r, float(left), float(top), nw, nh)
    if spec.fit == "stretch":
        return Geometry(s / width, s / height, 0.0, 0.0, s, s)
    raise ValueError(f"unknown fit {spec.fit!r}")


def _scale_values(img: np.ndarray, scaling: Scaling) -> np.ndarray:
    """uint8 HxWx3 (already in the model's channel order) -> float32 network values."""
    x = img.astype(np.float32)
    if scaling == "raw255":
        return x
    if scaling == "unit":
        return x / np.float32(255.0)
    mean = np.asarray(NANODET_MEAN, np.float32)
    std = np.asarray(NANODET_STD, np.float32)
    return (x - mean) / std  # nanodet stores B,G,R constants and the input is BGR here


def preprocess_cv2(bgr: np.ndarray, spec: PreprocSpec) -> tuple[np.ndarray, Geometry]:
    """HxWx3 uint8 BGR frame -> (3xSxS float32 network input, geometry), exactly as README §4."""
    import cv2

    h, w = bgr.shape[:2]
    g = geometry(spec, h, w)
    s = spec.size
    if spec.fit == "letterbox_tl":
        canvas = np.full((s, s, 3), int(PAD_VALUE), np.uint8)
        canvas[: g.ch, : g.cw] = cv2.resize(bgr, (g.cw, g.ch), interpolation=cv2.INTER_LINEAR)
    elif spec.fit == "warp_center":
        canvas = _warp_fixed_point(bgr, g, s)
    elif spec.fit == "letterbox_center":
        img = bgr if (g.cw, g.ch) == (w, h) else cv2.resize(bgr, (g.cw, g.ch), interpolation=cv2.INTER_LINEAR)
        top, left = int(g.oy), int(g.ox)
        canvas = cv2.copyMakeBorder(
            img, top, s - g.ch - top, left, s - g.cw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
    else:
        canvas = cv2.resize(bgr, (s, s), interpolation=cv2.INTER_LINEAR)
    if not spec.bgr:
        canvas = canvas[:, :, ::-1]
    return np.ascontiguousarray(_scale_values(canvas, spec.scaling).transpose(2, 0, 1)), g


def _warp_fixed_point(bgr: np.ndarray, g: Geometry, size: int) -> np.ndarray:
    """cv2.warpPerspective(bgr, M, (size, size)) as OpenCV 4.x computes it for uint8: source coordinates in double,
    rounded to 1/32 px, then cv2.remap's fixed-point bilinear with a zero border.

    OpenCV 5 rewrote warpPerspective (no 1/32 quantisation), which moves nanodet's golden numbers; going through
    remap with explicit fixed-point maps gives the 4.x result on every OpenCV version.
    """
    import cv2

    u = np.arange(size, dtype=np.float64)
    xs = np.rint((u - g.ox) / g.sx * 32).astype(np.int64)  # INTER_TAB_SIZE = 32
    ys = np.rint((u - g.oy) / g.sy * 32).astype(np.int64)
    xi, yi = np.meshgrid(xs, ys)
    map_int = np.stack((xi >> 5, yi >> 5), axis=-1).clip(-32768, 32767).astype(np.int16)
    map_frac = ((yi & 31) * 32 + (xi & 31)).astype(np.uint16)
    return cv2.remap(bgr, map_int, map_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def preprocess_torch(images: torch.Tensor, spec: PreprocSpec) -> tuple[torch.Tensor, Geometry]:
    """Differentiable twin of `preprocess_cv2` on float RGB [0, 1] [B, 3, H, W] (bilinear, no uint8 rounding)."""
    b, _, h, w = images.shape
    g = geometry(spec, h, w)
    s = spec.size
    x = images.flip(1) if spec.bgr else images
    # Work on 0..255 values so padding constants match the reference code.
    x = x * 255.0
    if spec.fit == "warp_center":
        x = _warp_affine(x, g, s)
    else:
        if (g.ch, g.cw) != (h, w):
            x = F.interpolate(x, size=(g.ch, g.cw), mode="bilinear", align_corners=False, antialias=False)
        if spec.fit != "stretch":
            left, top = int(g.ox), int(g.oy)
            x = F.pad(x, (left, s - g.cw - left, top, s - g.ch - top), value=PAD_VALUE)
    if spec.scaling == "unit":
        x = x / 255.0
    elif spec.scaling == "nanodet":
        mean = x.new_tensor(NANODET_MEAN if spec.bgr else NANODET_MEAN[::-1]).view(1, 3, 1, 1)
        std = x.new_tensor(NANODET_STD if spec.bgr else NANODET_STD[::-1]).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x, g


def _warp_affine(x: torch.Tensor, g: Geometry, size: int) -> torch.Tensor:
    """cv2.warpPerspective with a scale+translate matrix and zero border, as grid_sample (pixel centres at i+0.5)."""
    b, _, h, w = x.shape
    # Output normalised coord u_n maps to output pixel u = (u_n + 1) * size / 2 - 0.5, source pixel
    # xs = (u - ox) / sx, source normalised (2 * xs + 1) / w - 1: an affine map a * u_n + c per axis.
    ax = size / (g.sx * w)
    cx = (2 * (size / 2 - 0.5 - g.ox) / g.sx + 1) / w - 1
    ay = size / (g.sy * h)
    cy = (2 * (size / 2 - 0.5 - g.oy) / g.sy + 1) / h - 1
    theta = x.new_tensor([[ax, 0.0, cx], [0.0, ay, cy]]).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

