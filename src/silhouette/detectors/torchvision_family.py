"""The paper's detector family: torchvision's COCO detectors, frozen, behind the `Detector` interface.

torchvision models take a list of [3, H, W] float RGB images in [0, 1] and normalise/resize internally with
differentiable ops, so gradients reach our input images through every path used here. Labels come out in
torchvision's COCO-91 space (0 = background, with "N/A" gaps); `COCO91_TO_80` maps them to our COCO-80 labels.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from silhouette.detectors.base import Candidates, Detections, Detector, DetectorInfo
from silhouette.detectors.registry import DETECTORS
from silhouette.errors import SilhouetteError
from silhouette.imaging import check_image

FAMILY = "torchvision"
TV_PERSON = 1  # "person" in torchvision's COCO-91 category list
LICENSE = "BSD-3-Clause code; weights: see torchvision docs"

# Registry name -> architecture kind (decides how candidates are read out of the model).
MODELS: dict[str, str] = {
    "fasterrcnn_resnet50_fpn": "rcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "rcnn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "rcnn",
    "maskrcnn_resnet50_fpn": "rcnn",
    "retinanet_resnet50_fpn": "retinanet",
    "ssdlite320_mobilenet_v3_large": "ssd",
}

_WEIGHT_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".tar"}


def _coco91_to_80() -> torch.Tensor:
    """Lookup table COCO-91 label -> COCO-80 index (-1 for background and the "N/A" gaps)."""
    from torchvision.models._meta import _COCO_CATEGORIES

    lut = torch.full((len(_COCO_CATEGORIES),), -1, dtype=torch.int64)
    idx = 0
    for label, cat in enumerate(_COCO_CATEGORIES):
        if cat in ("__background__", "N/A"):
            continue
        lut[label] = idx
        idx += 1
    assert idx == 80 and lut[TV_PERSON] == 0
    return lut


COCO91_TO_80 = _coco91_to_80()


def _weights_enum(name: str) -> Any:
    """torchvision's weights enum class of model `name`."""
    return torchvision.models.get_model_weights(name)


def _looks_like_path(weights: str | Path) -> bool:
    if isinstance(weights, Path):
        return True
    return os.sep in weights or "/" in weights or Path(weights).suffix.lower() in _WEIGHT_SUFFIXES or Path(weights).exists()


def resolve_weights(name: str, weights: str | Path | None) -> Path | Any | None:
    """None, a local state_dict Path, or a torchvision weights enum member for `weights`."""
    if weights is None:
        return None
    if _looks_like_path(weights):
        return Path(weights).expanduser()
    enum_cls = _weights_enum(name)
    member = str(weights)
    if member.startswith(enum_cls.__name__ + "."):
        member = member[len(enum_cls.__name__) + 1 :]
    if member == "DEFAULT":
        return enum_cls.DEFAULT
    if member in enum_cls.__members__:
        return enum_cls[member]
    choices = ", ".join(["DEFAULT", *enum_cls.__members__])
    raise SilhouetteError(
        f"{name}: weights {str(weights)!r} is neither a file nor a torchvision weights name ({choices}); "
        "a local file must be a .pth state_dict"
    )


def _cached_weights_file(enum_member: Any) -> Path:
    """Where torch.hub keeps the downloaded file of a weights enum member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum_member.url).name


def _read_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict file (plain, or a {'model': ...} / {'state_dict': ...} checkpoint)."""
    if not path.is_file():
        raise SilhouetteError(f"{name}: weights file {path} not found; weights=PATH must name a local .pth state_dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for corrupt files
        raise SilhouetteError(f"{name}: weights file {path} is not a readable torch state_dict ({exc})") from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SilhouetteError(f"{name}: weights file {path} does not hold a state_dict (name -> tensor)")
    return obj


def _load_local(name: str, model: nn.Module, path: Path) -> None:
    """Load a local state_dict into `model`, explaining key mismatches."""
    state = _read_state_dict(name, path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise SilhouetteError(f"{name}: weights file {path} does not fit this architecture ({exc})") from exc
    # Pretrained files come from FrozenBatchNorm2d models, which have no num_batches_tracked buffer.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise SilhouetteError(
            f"{name}: weights file {path} does not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )


def build_model(name: str, weights: str | Path | None = "DEFAULT", **overrides: Any) -> nn.Module:
    """The torchvision model `name` with its weights: weights API, local state_dict path, or None (random)."""
    resolved = resolve_weights(name, weights)
    if resolved is None or isinstance(resolved, Path):
        # weights_backbone=None too: nothing may download for a random or local-file model.
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **overrides)
        if isinstance(resolved, Path):
            _load_local(name, model, resolved)
        return model
    try:
        return torchvision.models.get_model(name, weights=resolved, **overrides)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; hash mismatches are RuntimeErrors
        raise SilhouetteError(
            f"{name}: downloading torchvision weights {resolved} from {resolved.url} failed ({exc}); "
            f"place the file at {_cached_weights_file(resolved)}, where every command looks for it"
        ) from exc


def _input_size(model: nn.Module) -> str:
    t = model.transform
    if t.fixed_size is not None:
        return f"{t.fixed_size[1]}x{t.fixed_size[0]} (fixed)"
    return f"short {t.min_size[0]}, long <= {t.max_size}"


_INPUT_SIZES = {  # torchvision's builder defaults (internal resize), so `describe` needs no model
    "fasterrcnn_resnet50_fpn": "short 800, long <= 1333",
    "fasterrcnn_mobilenet_v3_large_fpn": "short 800, long <= 1333",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "short 320, long <= 640",
    "maskrcnn_resnet50_fpn": "short 800, long <= 1333",
    "retinanet_resnet50_fpn": "short 800, long <= 1333",
    "ssdlite320_mobilenet_v3_large": "320x320 (fixed)",
}


def describe(name: str, weights: str | Path | None = "DEFAULT") -> DetectorInfo:
    """The registry listing row of `name` without building (or downloading) the model."""
    resolved = resolve_weights(name, weights)
    if resolved is None:
        where, present = "none (random init)", False
    elif isinstance(resolved, Path):
        where, present = str(resolved), resolved.is_file()
    else:
        # The weights API's cache file: present means the model builds offline.
        cached = _cached_weights_file(resolved)
        where, present = str(cached), cached.is_file()
    return DetectorInfo(
        name=name,
        family=FAMILY,
        source=f"torchvision {torchvision.__version__} weights API",
        license=LICENSE,
        input_size=_INPUT_SIZES[name],
        weights=where,
        weights_present=present,
    )


def _pad_stack(rows: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length [N_i, ...] tensors into [B, N, ...] plus a validity mask [B, N]."""
    n = max((r.shape[0] for r in rows), default=0)
    out, valid = [], []
    for r in rows:
        pad = n - r.shape[0]
        out.append(torch.cat([r, r.new_full((pad, *r.shape[1:]), fill)]) if pad else r)
        mask = torch.zeros(n, dtype=torch.bool, device=r.device)
        mask[: r.shape[0]] = True
        valid.append(mask)
    return torch.stack(out), torch.stack(valid)


class TorchvisionDetector(Detector):
    """A frozen torchvision COCO detector; `loss` is the model's own training loss against pseudo-labels."""

    def __init__(
        self,
        name: str,
        weights: str | Path | None = "DEFAULT",
        conf_threshold: float = 0.5,
        nms_iou: float | None = None,
        device: str | torch.device = "cpu",
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> None:
        if name not in MODELS:
            raise SilhouetteError(f"unknown torchvision detector {name!r}; choose from: {', '.join(MODELS)}")
        self.name = name
        self.kind = MODELS[name]
        self.weights = weights
        self.device = torch.device(device)
        overrides = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
        if overrides and self.kind == "ssd":
            raise SilhouetteError(f"{name}: min_size/max_size cannot be changed, the model's input is fixed at 320x320")
        self.model = build_model(name, weights, **overrides).to(self.device).eval()
        self.model.requires_grad_(False)
        self.conf_threshold = float(conf_threshold)
        # None keeps the model's own NMS IoU (0.5 for R-CNN/RetinaNet, 0.55 for SSDlite).
        self.nms_iou = float(nms_iou) if nms_iou is not None else float(self._nms_owner().nms_thresh)

    def _nms_owner(self) -> nn.Module:
        return self.model.roi_heads if self.kind == "rcnn" else self.model

    def _prepare(self, images: torch.Tensor) -> list[torch.Tensor]:
        check_image(images)
        return list(images.to(self.device).unbind(0))

    # ---- predict ---------------------------------------------------------------------------------------------

    def predict(self, images: torch.Tensor) -> list[Detections]:
        """Post-NMS detections (eval mode, no grad), labels mapped COCO-91 -> COCO-80."""
        owner = self._nms_owner()
        # Thresholds are re-applied per call so callers may change conf_threshold/nms_iou after construction.
        owner.score_thresh = self.conf_threshold
        owner.nms_thresh = self.nms_iou
        self.model.eval()
        with torch.no_grad():
            outs = self.model(self._prepare(images))
        lut = COCO91_TO_80.to(self.device)
        dets = []
        for out in outs:
            labels = lut[out["labels"]]
            keep = (labels >= 0) & (out["scores"] >= self.conf_threshold)
            dets.append(
                Detections(
                    out["boxes"][keep].float().to(images.device),
                    out["scores"][keep].float().to(images.device),
                    labels[keep].to(images.device),
                )
            )
        return dets

    # ---- native loss -----------------------------------------------------------------------------------------

    def _train_frozen(self) -> None:
        """Train mode (so the model returns losses) with norm layers and dropout kept in eval mode."""
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.Dropout)):
                m.eval()

    def _tv_target(self, det: Detections, height: int, width: int) -> dict[str, torch.Tensor]:
        """Person pseudo-labels as a torchvision training target (label 1; box-filled masks for Mask R-CNN)."""
        persons = det.persons()
        boxes = persons.boxes.detach().to(self.device, torch.float32).reshape(-1, 4).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        # torchvision rejects degenerate boxes; sub-pixel boxes carry no signal anyway.
        boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)]
        target = {"boxes": boxes, "labels": torch.full((len(boxes),), TV_PERSON, dtype=torch.int64, device=self.device)}
        if self.name.startswith("maskrcnn"):
            masks = torch.zeros((len(boxes), height, width), dtype=torch.uint8, device=self.device)
            for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
                masks[i, int(y1) : max(int(y1) + 1, int(round(y2))), int(x1) : max(int(x1) + 1, int(round(x2)))] = 1
            target["masks"] = masks
        return target

    def loss(self, images: torch.Tensor, targets: list[Detections]) -> dict[str, torch.Tensor]:
        """The model's own training losses against person pseudo-labels; parameters and BN stats stay frozen."""
        inputs = self._prepare(images)
        if len(targets) != len(inputs):
            raise SilhouetteError(f"{self.name}: {len(inputs)} images but {len(targets)} target lists")
        height, width = images.shape[-2:]
        tv_targets = [self._tv_target(t, int(height), int(width)) for t in targets]
        self._train_frozen()
        try:
            losses = self.model(inputs, tv_targets)
        finally:
            self.model.eval()
        out = dict(losses)
        out["loss"] = torch.stack(list(losses.values())).sum()
        return out

    # ---- differentiable candidates ---------------------------------------------------------------------------

    def candidates(self, images: torch.Tensor) -> Candidates:
        """Pre-NMS person candidates (boxes in input pixels, person probabilities), differentiable."""
        inputs = self._prepare(images)
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in inputs]
        self.model.eval()
        image_list, _ = self.model.transform(inputs)
        read_out: Callable[..., tuple[list[torch.Tensor], list[torch.Tensor]]] = {
            "rcnn": self._rcnn_candidates,
            "retinanet": self._dense_candidates,
            "ssd": self._dense_candidates,
        }[self.kind]
        boxes, scores = read_out(image_list)
        boxes = [
            resize_boxes(box_ops.clip_boxes_to_image(b, size), size, orig)
            for b, size, orig in zip(boxes, image_list.image_sizes, original)
        ]
        box_t, valid = _pad_stack(boxes)
        score_t, _ = _pad_stack(scores)
        return Candidates(box_t.to(images.device), score_t.to(images.device), {"valid": valid.to(images.device)})

    def _rcnn_candidates(self, image_list: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Box-head outputs for the RPN proposals (before score threshold and NMS), person class."""
        m = self.model
        features = m.backbone(image_list.tensors)
        proposals, _ = m.rpn(image_list, features)
        rh = m.roi_heads
        box_features = rh.box_head(rh.box_roi_pool(features, proposals, image_list.image_sizes))
        class_logits, box_regression = rh.box_predictor(box_features)
        boxes = rh.box_coder.decode(box_regression, proposals)[:, TV_PERSON]
        scores = class_logits.softmax(-1)[:, TV_PERSON]
        counts = [len(p) for p in proposals]
        return list(boxes.split(counts)), list(scores.split(counts))

    def _dense_candidates(self, image_list: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every anchor's decoded box and person probability (RetinaNet: sigmoid, SSD: softmax)."""
        m = self.model
        features = m.backbone(image_list.tensors)
        features = list(features.values()) if isinstance(features, dict) else [features]
        head = m.head(features)
        anchors = m.anchor_generator(image_list, features)
        logits = head["cls_logits"]
        probs = logits[..., TV_PERSON].sigmoid() if self.kind == "retinanet" else logits.softmax(-1)[..., TV_PERSON]
        boxes = [m.box_coder.decode_single(reg, anc) for reg, anc in zip(head["bbox_regression"], anchors)]
        return boxes, list(probs.unbind(0))

    def info(self) -> DetectorInfo:
        """Registry listing row."""
        row = describe(self.name, self.weights)
        row.input_size = _input_size(self.model)
        return row


def _register(name: str) -> None:
    # the factory takes TorchvisionDetector's own arguments, minus the name
    factory = functools.partial(TorchvisionDetector, name)
    factory.__doc__ = (
        f"torchvision {name} (weights: 'DEFAULT', a weights enum name, a .pth path, or None; "
        "min_size/max_size override the internal resize of R-CNN/RetinaNet models)."
    )
    factory.describe = lambda weights="DEFAULT": describe(name, weights)  # type: ignore[attr-defined]
    DETECTORS.register(name)(factory)


for _name in MODELS:
    _register(_name)
