"""One decoder per zoo head type (README §4): raw ONNX outputs -> xyxy boxes in model-input pixels + person scores.

Every decoder is plain torch, so the same code serves onnxruntime outputs (predict) and onnx2torch outputs
(differentiable candidates).
"""

from __future__ import annotations

from typing import Sequence

import torch

Decoded = tuple[torch.Tensor, torch.Tensor]  # boxes [B, N, 4] xyxy input pixels, person scores [B, N]

# Darknet anchors (pixels of the 320 input) per output, in cfg order (first [yolo] layer = stride 32).
YOLO_FASTEST_XL_ANCHORS = (((115, 73), (119, 199), (242, 238)), ((12, 18), (37, 49), (52, 132)))
YOLO_FASTEST_BODY_ANCHORS = (((64, 187), (123, 211), (227, 264)), ((7, 17), (20, 50), (45, 99)))


def _grid(nh: int, nw: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major cell coordinates (gx, gy), each [nh*nw]."""
    gy, gx = torch.meshgrid(
        torch.arange(nh, device=like.device, dtype=like.dtype),
        torch.arange(nw, device=like.device, dtype=like.dtype),
        indexing="ij",
    )
    return gx.reshape(-1), gy.reshape(-1)


def _cxcywh_to_xyxy(cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def decode_yolox(outputs: Sequence[torch.Tensor], size: int, strides: Sequence[int] = (8, 16, 32)) -> Decoded:
    """YOLOX `output [B, N, 85]`: raw dx, dy, log w, log h; obj and class probs already sigmoided."""
    (out,) = outputs
    gxs, gys, ss = [], [], []
    for s in strides:
        gx, gy = _grid(size // s, size // s, out)
        gxs.append(gx)
        gys.append(gy)
        ss.append(torch.full_like(gx, float(s)))
    gx, gy, st = torch.cat(gxs), torch.cat(gys), torch.cat(ss)
    cx = (out[..., 0] + gx) * st
    cy = (out[..., 1] + gy) * st
    w = torch.exp(out[..., 2]) * st
    h = torch.exp(out[..., 3]) * st
    return _cxcywh_to_xyxy(cx, cy, w, h), out[..., 4] * out[..., 5]


def decode_nanodet(
    outputs: Sequence[torch.Tensor], size: int, strides: Sequence[int] = (8, 16, 32), reg_max: int = 7
) -> Decoded:
    """NanoDet v0.x GFL head: 3 sigmoided class maps then 3 DFL logit maps (l, t, r, b x reg_max+1 bins)."""
    n = len(strides)
    cls, dfl = outputs[:n], outputs[n:]
    bins = torch.arange(reg_max + 1, device=dfl[0].device, dtype=dfl[0].dtype)
    boxes, scores = [], []
    for s, c, d in zip(strides, cls, dfl):
        gx, gy = _grid(size // s, size // s, d)
        cx, cy = gx * s + (s - 1) / 2, gy * s + (s - 1) / 2
        prob = torch.softmax(d.reshape(*d.shape[:2], 4, reg_max + 1), dim=-1)
        dist = (prob * bins).sum(-1) * s  # [B, n*n, 4]: l, t, r, b
        xyxy = torch.stack((cx - dist[..., 0], cy - dist[..., 1], cx + dist[..., 2], cy + dist[..., 3]), dim=-1)
        boxes.append(xyxy.clamp(0.0, float(size)))
        scores.append(c[..., 0])
    return torch.cat(boxes, dim=1), torch.cat(scores, dim=1)


def decode_yolov5(outputs: Sequence[torch.Tensor], size: int) -> Decoded:
    """YOLOv5 `output [B, N, 85]`: decode already in-graph (cx, cy, w, h input px; obj, class probs)."""
    (out,) = outputs
    return _cxcywh_to_xyxy(out[..., 0], out[..., 1], out[..., 2], out[..., 3]), out[..., 4] * out[..., 5]


def decode_darknet_yolo(
    outputs: Sequence[torch.Tensor], size: int, anchors: Sequence[Sequence[tuple[int, int]]], num_classes: int
) -> Decoded:
    """Darknet [yolo] layers (scale_x_y = 1): raw conv maps [B, 3*(5+C), g, g]; class 0 = person (or body)."""
    boxes, scores = [], []
    for out, layer_anchors in zip(outputs, anchors):
        b, _, gh, gw = out.shape
        t = out.reshape(b, 3, 5 + num_classes, gh, gw).permute(0, 1, 3, 4, 2).reshape(b, 3, gh * gw, 5 + num_classes)
        gx, gy = _grid(gh, gw, out)
        anc = out.new_tensor(layer_anchors).view(1, 3, 1, 2)
        cx = (gx + torch.sigmoid(t[..., 0])) / gw * size
        cy = (gy + torch.sigmoid(t[..., 1])) / gh * size
        w = torch.exp(t[..., 2]) * anc[..., 0]
        h = torch.exp(t[..., 3]) * anc[..., 1]
        boxes.append(_cxcywh_to_xyxy(cx, cy, w, h).reshape(b, -1, 4))
        scores.append((torch.sigmoid(t[..., 4]) * torch.sigmoid(t[..., 5])).reshape(b, -1))
    return torch.cat(boxes, dim=1), torch.cat(scores, dim=1)


def decode_fastestdet(outputs: Sequence[torch.Tensor], size: int, eps: float = 0.0) -> Decoded:
    """FastestDet `output [B, 85, g, g]`: obj (sigmoided), tanh offsets, sigmoid w/h of image, softmaxed classes.

    `eps` keeps the gradient of `p**0.6` / `p**0.4` finite where a probability underflows to 0; use 0 to match
    the reference numbers exactly.
    """
    (out,) = outputs
    b, _, gh, gw = out.shape
    o = out.reshape(b, out.shape[1], gh * gw)
    gx, gy = _grid(gh, gw, out)
    cx = (torch.tanh(o[:, 1]) + gx) / gw * size
    cy = (torch.tanh(o[:, 2]) + gy) / gh * size
    w = torch.sigmoid(o[:, 3]) * size
    h = torch.sigmoid(o[:, 4]) * size
    score = (o[:, 0] + eps) ** 0.6 * (o[:, 5] + eps) ** 0.4
    return _cxcywh_to_xyxy(cx, cy, w, h), score
