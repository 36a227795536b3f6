"""Utility and similarity metrics: person AP, count error, SSIM/MSE/PSNR/NMI."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from silhouette.detectors.base import PERSON, Detections


def _as_metric_dict(d: Detections, with_scores: bool) -> dict[str, torch.Tensor]:
    persons = d.persons() if with_scores else Detections(d.boxes, torch.ones(len(d)), d.labels).persons()
    out = {"boxes": persons.boxes.detach().float().cpu().reshape(-1, 4), "labels": torch.zeros(len(persons), dtype=torch.int64)}
    if with_scores:
        out["scores"] = persons.scores.detach().float().cpu()
    return out


def person_ap(preds: Sequence[Detections], targets: Sequence[Detections]) -> dict[str, float]:
    """COCO person AP50 and AP50:95 of `preds` against `targets` (pseudo-labels or ground truth)."""
    import logging
    import warnings

    from torchmetrics.detection import MeanAveragePrecision

    # faster_coco_eval logs a whole COCO summary at INFO for every call: noise for a per-epoch metric
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    # each caller (or DDP rank) scores its own frames: no cross-process sync, which would hang a lone rank
    # a crowded frame can exceed COCO's 100-detection cap; keep the standard protocol, skip the warning
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval", max_detection_thresholds=[1, 10, 100], sync_on_compute=False)
    metric.warn_on_many_detections = False
    metric.update([_as_metric_dict(p, True) for p in preds], [_as_metric_dict(t, False) for t in targets])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = metric.compute()
    # torchmetrics reports -1 when there is no ground truth at all: "undefined", so NaN rather than a fake 0
    return {name: float("nan") if float(res[key]) < 0 else float(res[key]) for name, key in (("ap50", "map_50"), ("ap", "map"))}


def count_error(preds: Sequence[Detections], targets: Sequence[Detections], min_score: float = 0.0) -> dict[str, float]:
    """Mean absolute error (and mean signed error) of per-frame person counts."""
    p = np.array([len(d.persons(min_score)) for d in preds], dtype=float)
    t = np.array([len(d.persons()) for d in targets], dtype=float)
    if len(p) == 0:
        return {"mae": float("nan"), "bias": float("nan")}
    return {"mae": float(np.abs(p - t).mean()), "bias": float((p - t).mean())}


def count_threshold(preds: Sequence[Detections], targets: Sequence[Detections], lo: float = 0.05, hi: float = 0.95) -> float:
    """The score threshold (0.01 steps) whose person counts are closest to the targets' (least count MAE; lower wins ties).

    A co-trained detector's scores are not calibrated like the original's, so its pair records the threshold it counts at.
    """
    best_t, best = lo, float("inf")
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        mae = count_error(preds, targets, min_score=float(t))["mae"]
        if mae < best - 1e-12:
            best_t, best = float(t), mae
    return best_t


def boxes_found(preds: Sequence[Detections], targets: Sequence[Detections], min_score: float = 0.0, iou: float = 0.5) -> int:
    """How many target person boxes a prediction (score >= min_score) covers at IoU >= `iou`, matched one to one."""
    from torchvision.ops import box_iou

    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    found = 0
    for p, t in zip(preds, targets):
        p, t = p.persons(min_score), t.persons()
        if len(p) == 0 or len(t) == 0:
            continue
        ious = box_iou(p.boxes[p.scores.argsort(descending=True)].float(), t.boxes.float())
        taken = torch.zeros(len(t), dtype=torch.bool)
        for row in ious:  # greedy by score, as COCO matching
            row = row.masked_fill(taken, -1.0)
            j = int(row.argmax())
            if row[j] >= iou:
                taken[j] = True
        found += int(taken.sum())
    return found


def _to_hwc(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
        if x.ndim == 3 and x.shape[0] == 3:
            x = x.transpose(1, 2, 0)
    return np.asarray(x, dtype=np.float64)


def similarity(original: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray) -> dict[str, float]:
    """SSIM (Gaussian σ=1.5, as Wang et al.), MSE, PSNR and NMI between two [0,1] RGB images."""
    from skimage.metrics import (
        mean_squared_error,
        normalized_mutual_information,
        peak_signal_noise_ratio,
        structural_similarity,
    )

    a, b = _to_hwc(original), _to_hwc(other)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    ssim = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    mse = mean_squared_error(a, b)
    psnr = float("inf") if mse == 0 else peak_signal_noise_ratio(a, b, data_range=1.0)
    nmi = normalized_mutual_information(a, b, bins=100)
    return {"ssim": float(ssim), "mse": float(mse), "psnr": float(psnr), "nmi": float(nmi)}


def mean_similarity(originals: Sequence[torch.Tensor], others: Sequence[torch.Tensor]) -> dict[str, float]:
    """Average of `similarity` over pairs of frames."""
    rows = [similarity(a, b) for a, b in zip(originals, others, strict=True)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


__all__ = ["PERSON", "person_ap", "count_error", "similarity", "mean_similarity"]
