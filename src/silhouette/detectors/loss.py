"""The detector-agnostic pseudo-label loss: any detector's pre-NMS candidates against person pseudo-labels.

Assignment rule (per frame, computed without gradients on the candidate boxes). Let IoU(c, t) be the box IoU of
candidate c with pseudo-label person box t. A candidate is *positive*, matched to the target of highest IoU, if
IoU >= 0.5 with some target. In addition every target claims its `topk` (default 5) candidates of highest IoU among
those whose box centre lies inside the target box and whose IoU is > 0; these are positive too, matched to that
target (where two targets claim the same candidate, the higher IoU wins). This second clause guarantees small or
poorly localised persons still get positives, which matters when the detector sees an obfuscated frame and no
candidate reaches IoU 0.5 yet. Every other candidate is *negative* if its best IoU is < 0.4 and *ignored* otherwise
(0.4 <= IoU < 0.5: ambiguous, neither pushed up nor down). Padding candidates (`extras["valid"]` false) are
ignored. Frames without targets make every valid candidate negative.

Losses: person scores are already probabilities, so classification is binary cross-entropy on the clamped
probability with focal weighting, alpha_t (1 - p_t)^gamma (alpha 0.25, gamma 2, as in RetinaNet), summed over
positive and negative candidates; box regression is 1 - GIoU between each positive candidate and its matched
target. Both are divided by the number of positives in the batch (at least 1). `loss = loss_cls + box_weight *
loss_box`.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, generalized_box_iou_loss

from silhouette.detectors.base import Candidates, Detections
from silhouette.errors import SilhouetteError

IGNORE, NEGATIVE = -2, -1  # values of the assignment besides a target index >= 0


def assign(
    boxes: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    topk: int = 5,
) -> torch.Tensor:
    """Per candidate: matched target index (positive), NEGATIVE or IGNORE, by the rule in the module docstring."""
    n = boxes.shape[0]
    boxes = boxes.detach()
    # Decoders may emit x2 < x1 early in training; order the corners so IoU stays meaningful.
    boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    result = torch.full((n,), NEGATIVE, dtype=torch.int64, device=boxes.device)
    usable = torch.ones(n, dtype=torch.bool, device=boxes.device) if valid is None else valid.to(boxes.device)
    if targets.shape[0] > 0 and n > 0:
        iou = box_iou(boxes, targets.to(boxes))  # [N, M]
        best_iou, best_t = iou.max(dim=1)
        result[best_iou >= neg_iou] = IGNORE
        pos = best_iou >= pos_iou
        result[pos] = best_t[pos]
        # Top-k by IoU among candidates centred inside each target.
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (
            (centres[:, None, 0] >= targets[None, :, 0])
            & (centres[:, None, 0] <= targets[None, :, 2])
            & (centres[:, None, 1] >= targets[None, :, 1])
            & (centres[:, None, 1] <= targets[None, :, 3])
        )
        claim = torch.where(inside & (iou > 0) & usable[:, None], iou, torch.zeros_like(iou))
        k = min(topk, n)
        if k > 0:
            top_iou, top_idx = claim.topk(k, dim=0)  # [k, M]
            chosen = torch.zeros_like(claim)
            chosen.scatter_(0, top_idx, top_iou)  # keeps only each target's top-k claims
            claimed_iou, claimed_t = chosen.max(dim=1)
            new = (claimed_iou > 0) & ~pos
            result[new] = claimed_t[new]
    result[~usable] = IGNORE
    return result


def _person_boxes(det: Detections, device: torch.device) -> torch.Tensor:
    boxes = det.persons().boxes.detach().to(device, torch.float32).reshape(-1, 4)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def pseudo_label_loss(
    candidates: Candidates,
    targets: list[Detections],
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    topk: int = 5,
    alpha: float = 0.25,
    gamma: float = 2.0,
    box_weight: float = 1.0,
    eps: float = 1e-6,
) -> dict[str, torch.Tensor]:
    """Focal BCE on person probabilities plus 1 - GIoU on matched boxes: {"loss_cls", "loss_box", "loss"}."""
    boxes, scores = candidates.boxes, candidates.person_scores
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2]:
        raise SilhouetteError(
            f"candidates must be boxes [B, N, 4] and person_scores [B, N], got {tuple(boxes.shape)} and "
            f"{tuple(scores.shape)}"
        )
    if len(targets) != boxes.shape[0]:
        raise SilhouetteError(f"{boxes.shape[0]} frames of candidates but {len(targets)} target lists")
    valid = candidates.extras.get("valid")
    cls_terms, box_terms = [], []
    num_pos = 0
    for i, det in enumerate(targets):
        tgt = _person_boxes(det, boxes.device)
        match = assign(boxes[i], tgt, None if valid is None else valid[i], pos_iou, neg_iou, topk)
        pos, neg = match >= 0, match == NEGATIVE
        num_pos += int(pos.sum())
        used = pos | neg
        p = scores[i][used].clamp(eps, 1 - eps)
        t = pos[used].to(p.dtype)
        p_t = t * p + (1 - t) * (1 - p)
        alpha_t = t * alpha + (1 - t) * (1 - alpha)
        cls_terms.append((-alpha_t * (1 - p_t).pow(gamma) * p_t.log()).sum())
        if bool(pos.any()):
            box_terms.append(generalized_box_iou_loss(boxes[i][pos], tgt[match[pos]], reduction="sum"))
    norm = max(1, num_pos)
    # The zero terms keep both losses attached to the graph when a batch has no positives.
    loss_cls = torch.stack(cls_terms).sum() / norm + scores.sum() * 0
    loss_box = (torch.stack(box_terms).sum() if box_terms else boxes.sum() * 0) / norm
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss": loss_cls + box_weight * loss_box}
