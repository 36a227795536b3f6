"""Validation during training: the detector's person AP on obfuscated frames, similarity, and model selection."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.training.engine import unwrap
from silhouette.training.frames import FrameSet, predict_batched


def obfuscate_all(obf: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Run the obfuscator (eval mode) over float [N,3,H,W] frames; returns CPU float tensors."""
    obf = unwrap(obf)
    was = obf.training
    obf.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            outs.append(obf(images[i : i + batch_size].to(device)).float().cpu())
    obf.train(was)
    return torch.cat(outs)


def evaluate(
    obf: nn.Module,
    detector: Detector,
    frames: FrameSet,
    targets: list[Detections],
    device: torch.device,
    batch_size: int = 8,
    ssim_frames: int = 0,
    deobf: nn.Module | None = None,
) -> dict[str, float]:
    """Person AP of the detector on obfuscated frames vs clean-frame pseudo-labels, plus SSIM/MSE/PSNR/NMI."""
    from silhouette.evaluation.metrics import count_error, count_threshold, mean_similarity, person_ap

    clean = frames.batch(range(len(frames)))
    obfuscated = obfuscate_all(obf, clean, device, batch_size)
    preds = predict_batched(detector, obfuscated, batch_size)
    ap = person_ap(preds, targets)
    # the threshold this detector counts at best on these frames (a co-trained pair ships it, see Trainer._save)
    thr = count_threshold(preds, targets)
    n = len(frames) if ssim_frames <= 0 else min(ssim_frames, len(frames))
    pick = np.linspace(0, len(frames) - 1, n).round().astype(int).tolist() if n else []
    sim = mean_similarity([clean[i] for i in pick], [obfuscated[i] for i in pick])
    out = {"ap50": ap["ap50"], "ap": ap["ap"], "count_threshold": thr,
           "count_mae": count_error(preds, targets, min_score=thr)["mae"], **sim}
    if deobf is not None:
        rec = obfuscate_all(deobf, obfuscated, device, batch_size)
        out["recon_mse"] = float(torch.mean((rec - clean) ** 2))
    return out


def best_score(ap50: float, ssim: float, ssim_target: float, epoch: int = 0, min_ap50: float | None = None) -> float:
    """Model selection: AP50 when SSIM meets the target, else AP50 - SSIM - 1 (always below any passing epoch).

    With `min_ap50`, an epoch that meets it and the SSIM target scores 2 + epoch: above every other epoch, later ones
    higher.
    """
    if min_ap50 is not None and ap50 >= min_ap50 and ssim <= ssim_target:
        return 2.0 + epoch
    return ap50 if ssim <= ssim_target else ap50 - ssim - 1.0
