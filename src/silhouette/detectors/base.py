"""The Detector interface shared by every family (ONNX zoo, torchvision)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch

PERSON = 0  # COCO class index of "person" in the 80-class list (no background class)


@dataclass
class Detections:
    """Post-NMS detections of one frame: xyxy boxes in frame pixels, scores, COCO-80 labels."""

    boxes: torch.Tensor  # [N, 4] float32
    scores: torch.Tensor  # [N] float32
    labels: torch.Tensor  # [N] int64, COCO-80 index (person = 0)

    @classmethod
    def empty(cls) -> "Detections":
        """No detections."""
        return cls(torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.int64))

    @classmethod
    def of_people(cls, boxes: torch.Tensor) -> "Detections":
        """Human-annotated person boxes [K,4] as detections (score 1, label person)."""
        return cls(boxes, torch.ones(len(boxes)), torch.full((len(boxes),), PERSON, dtype=torch.int64))

    def persons(self, min_score: float = 0.0) -> "Detections":
        """Only person detections at or above `min_score`."""
        keep = (self.labels == PERSON) & (self.scores >= min_score)
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Candidates:
    """Differentiable pre-NMS candidates: boxes [B, N, 4] xyxy in frame pixels, person scores [B, N] in [0, 1]."""

    boxes: torch.Tensor
    person_scores: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DetectorInfo:
    """What `silhouette detectors` lists about a model."""

    name: str
    family: str
    source: str
    license: str
    input_size: str
    weights: str  # path or weights-API name
    weights_present: bool


class Detector(abc.ABC):
    """A frozen, pretrained detector. Images are float RGB [0, 1], shape [B, 3, H, W]."""

    name: str = "detector"
    conf_threshold: float = 0.3
    nms_iou: float = 0.45

    @abc.abstractmethod
    def predict(self, images: torch.Tensor) -> list[Detections]:
        """Post-NMS detections per image, boxes in the pixels of each input frame."""

    @abc.abstractmethod
    def candidates(self, images: torch.Tensor) -> Candidates:
        """Pre-NMS candidates with gradients flowing back to `images`."""

    def loss(self, images: torch.Tensor, targets: list[Detections]) -> dict[str, torch.Tensor]:
        """Detection loss against pseudo-label targets (the generic candidate loss unless overridden)."""
        from silhouette.detectors.loss import pseudo_label_loss

        return pseudo_label_loss(self.candidates(images), targets)

    def info(self) -> DetectorInfo:
        """Registry listing row."""
        raise NotImplementedError
