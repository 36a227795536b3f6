"""Several frozen detectors as one: the obfuscator is trained against a weighted sum of their losses.

`predict` returns the FIRST member's detections (an ensemble is a training target, not a new detector: fusing
boxes across models would need its own calibration), so put the detector you evaluate with first in the spec.
"""

from __future__ import annotations

import torch

from silhouette.detectors.base import Candidates, Detections, Detector, DetectorInfo
from silhouette.errors import SilhouetteError


class EnsembleDetector(Detector):
    """Weighted sum of member losses; first member's predictions; candidates concatenated along N."""

    def __init__(self, members: list[Detector], weights: list[float]) -> None:
        if not members:
            raise SilhouetteError("an ensemble needs at least one detector")
        if len(weights) != len(members):
            raise SilhouetteError(f"ensemble of {len(members)} detectors got {len(weights)} weights")
        if any(w < 0 for w in weights):
            raise SilhouetteError(f"ensemble weights must be >= 0, got {weights}")
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.name = "+".join(m.name for m in self.members)
        self.conf_threshold = self.members[0].conf_threshold
        self.nms_iou = self.members[0].nms_iou
        # Unique key prefixes even when one detector appears twice ('a+a*0.5').
        self.keys: list[str] = []
        for i, m in enumerate(self.members):
            self.keys.append(m.name if [x.name for x in self.members].count(m.name) == 1 else f"{m.name}#{i}")

    def predict(self, images: torch.Tensor) -> list[Detections]:
        """The first member's detections (see the module docstring)."""
        return self.members[0].predict(images)

    def candidates(self, images: torch.Tensor) -> Candidates:
        """Every member's candidates, concatenated along N (all boxes are in frame pixels)."""
        parts = [m.candidates(images) for m in self.members]
        boxes = torch.cat([p.boxes for p in parts], dim=1)
        scores = torch.cat([p.person_scores for p in parts], dim=1)
        extras: dict[str, torch.Tensor] = {}
        if any("valid" in p.extras for p in parts):
            extras["valid"] = torch.cat(
                [p.extras.get("valid", torch.ones(p.person_scores.shape, dtype=torch.bool, device=scores.device))
                 .to(scores.device) for p in parts],
                dim=1,
            )
        return Candidates(boxes, scores, extras)

    def loss(self, images: torch.Tensor, targets: list[Detections]) -> dict[str, torch.Tensor]:
        """Each member's loss terms as 'member/term', plus 'loss' = sum of weight * member 'loss'."""
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for key, member, weight in zip(self.keys, self.members, self.weights):
            terms = member.loss(images, targets)
            out.update({f"{key}/{k}": v for k, v in terms.items()})
            total = terms["loss"] * weight if total is None else total + terms["loss"] * weight
        assert total is not None
        out["loss"] = total
        return out

    def info(self) -> DetectorInfo:
        """A combined listing row: members' fields joined with '+'."""
        rows = [m.info() for m in self.members]
        return DetectorInfo(
            name=self.name,
            family="ensemble",
            source=" + ".join(f"{r.name}*{w:g}: {r.source}" for r, w in zip(rows, self.weights)),
            license=" + ".join(r.license for r in rows),
            input_size=" + ".join(r.input_size for r in rows),
            weights=" + ".join(r.weights for r in rows),
            weights_present=all(r.weights_present for r in rows),
        )
