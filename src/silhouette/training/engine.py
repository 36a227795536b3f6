"""The adversarial game: one obfuscator step and one deobfuscator step per batch; the detector is frozen (compatible
mode) or takes its own step on the obfuscated frames (private mode)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError
from silhouette.evaluation.baselines import fold
from silhouette.privacy.reid import CROP_SIZE, roi_crops


class TrainingDiverged(SilhouetteError):
    """A loss became NaN/inf or exploded; the run stops and the last good checkpoint is kept."""


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block `module` gets no parameter gradients and its BN running statistics are restored after."""
    flags = [p.requires_grad for p in module.parameters()]
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
        with torch.no_grad():
            for k, v in module.named_buffers():
                v.copy_(buffers[k])


def _maybe_frozen(module: nn.Module | None) -> contextlib.AbstractContextManager:
    """`frozen(module)`, or nothing when there is no such module."""
    return frozen(module) if module is not None else contextlib.nullcontext()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def warmup_target(x: torch.Tensor, name: str) -> torch.Tensor:
    """The fixed mapping a warm start fits: 'identity' or 'fold' (the fold baseline's one fold, 2·min(x, 1−x))."""
    if name == "identity":
        return x
    if name == "fold":
        return fold(x)
    raise SilhouetteError(f"unknown warm-start target {name!r}; choose identity or fold")


def check_loss(name: str, value: float, max_loss: float) -> None:
    """Raise TrainingDiverged on NaN/inf or |value| > max_loss."""
    if not math.isfinite(value):
        raise TrainingDiverged(f"{name} became {value}; lower the learning rates or λ (train.lr_obf, train.lam)")
    if abs(value) > max_loss:
        raise TrainingDiverged(
            f"{name} = {value:.4g} exploded past train.max_loss={max_loss:g}; lower the learning rates or λ"
        )


@dataclass
class StepStats:
    """Losses of one batch (floats, for logging)."""

    loss_obf: float = float("nan")
    loss_det: float = float("nan")
    mse_obf: float = float("nan")  # deobfuscator MSE seen by the obfuscator step
    loss_deobf: float = float("nan")
    reid_confusion: float = float("nan")  # identity confusion the obfuscator step saw (0 = the classifier is blind)
    loss_reid: float = float("nan")  # the co-trained re-ID classifier's cross-entropy
    face_score: float = float("nan")  # the face adversary's score of the obfuscated frames (0 = no face-like window)
    loss_det_cloud: float = float("nan")  # private mode: the co-trained detector's own loss on the detached output


# per image: ground-truth person boxes [K,4] (xyxy, in the image's pixels) and contiguous identity labels [K]
People = list[tuple[torch.Tensor, torch.Tensor]]


def person_crops(images: torch.Tensor, people: People, size: tuple[int, int] = CROP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIAlign crops [N,3,*size] of every listed person (as the re-ID attack cuts them) and their identity labels."""
    boxes = [b.to(images.device, images.dtype) for b, _ in people]
    ids = torch.cat([i for _, i in people]) if people else torch.zeros(0, dtype=torch.long)
    if not len(ids):
        return images.new_zeros((0, 3, *size)), ids
    return roi_crops(images, boxes, size), ids.to(images.device)


def identity_confusion(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(uniform ‖ softmax(logits)) over crops: 0 when the classifier cannot tell anyone apart."""
    return (-F.log_softmax(logits.float(), dim=1).mean(dim=1) - math.log(logits.shape[1])).mean()


class AdversarialEngine:
    """Holds the three networks and two optimisers; `train_batch` plays one round of the game."""

    def __init__(
        self,
        obfuscator: nn.Module,
        deobfuscator: nn.Module,
        detector: Detector,
        opt_obf: torch.optim.Optimizer,
        opt_deobf: torch.optim.Optimizer,
        det_weight: float = 1.0,
        grad_clip: float = 0.0,
        blank_weight: float = 0.0,
        max_loss: float = 1e4,
        device: torch.device | str = "cpu",
        amp: bool = False,
        reid: nn.Module | None = None,
        opt_reid: torch.optim.Optimizer | None = None,
        reid_weight: float = 0.0,
        face: nn.Module | None = None,
        face_weight: float = 0.0,
        opt_det: torch.optim.Optimizer | None = None,
    ) -> None:
        self.obf, self.deobf, self.detector = obfuscator, deobfuscator, detector
        self.opt_obf, self.opt_deobf = opt_obf, opt_deobf
        self.det_weight, self.grad_clip, self.max_loss = det_weight, grad_clip, max_loss
        self.blank_weight = blank_weight
        self.reid, self.opt_reid, self.reid_weight = reid, opt_reid, reid_weight
        self.face, self.face_weight = face, face_weight
        # private mode: an optimiser over the detector's own weights; None keeps the detector frozen (compatible mode)
        self.opt_det = opt_det
        self.det_net = detector.torch_model() if opt_det is not None else None
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"

    def _autocast(self) -> contextlib.AbstractContextManager:
        # bf16 needs no GradScaler, which keeps two optimisers simple
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params.parameters(), self.grad_clip)
        opt.step()

    def obfuscator_step(self, x: torch.Tensor, targets: list[Detections], lam: float,
                        people: People | None = None) -> tuple[StepStats, torch.Tensor]:
        """Minimise det_weight·L_det(obf(X), Y) − λ·MSE(deobf(obf(X)), X) + β·|obf(X) − ½| + γ·confusion; only obf moves."""
        self.obf.train()
        stats = StepStats()
        with self._autocast():
            o = self.obf(x)
        o = o.float()
        deobf = unwrap(self.deobf)  # the raw module: no DDP gradient sync for a network that is not updated
        # the backward pass stays inside `frozen`: BN backward reads the running-stat buffers it restores
        with frozen(deobf), _maybe_frozen(self.reid), _maybe_frozen(self.det_net):
            with self._autocast():
                rec = deobf(o)
            mse = F.mse_loss(rec.float(), x)
            det = self.detector.loss(o, targets)["loss"].float()
            loss = self.det_weight * det - lam * mse
            if self.blank_weight > 0:
                # the silhouette prior: every pixel the detector does not need is pulled to flat grey, so the
                # output carries no scene detail for a post-hoc attacker to invert (λ·MSE alone only fools
                # the co-trained deobfuscator, and an invertible colour remap satisfies it)
                loss = loss + self.blank_weight * (o - 0.5).abs().mean()
            if self.reid is not None and self.reid_weight > 0 and people:
                crops, _ = person_crops(o, people)
                if len(crops) >= 2:  # the classifier's BatchNorm needs two crops
                    # λ·MSE only hides appearance from a reconstruction; this hides identity from a classifier
                    # that keeps learning it, which is what an adaptive re-ID attacker does after deployment
                    conf = identity_confusion(self.reid(crops))
                    loss = loss + self.reid_weight * conf
                    stats.reid_confusion = float(conf.detach())
            if self.face is not None and self.face_weight > 0:
                # faces are the identity cue a detector never needs: score them on the frame that leaves the camera
                face = self.face(o)
                loss = loss + self.face_weight * face
                stats.face_score = float(face.detach())
            stats.loss_obf, stats.loss_det, stats.mse_obf = float(loss.detach()), float(det.detach()), float(mse.detach())
            check_loss("obfuscator loss", stats.loss_obf, self.max_loss)
            self._step(self.opt_obf, loss, self.obf)
        return stats, o.detach()

    def _target_pass(self, x: torch.Tensor) -> torch.Tensor:
        """obf(x) without gradients, in eval mode: a target-only pass must not move the obfuscator's BN statistics."""
        raw = unwrap(self.obf)
        was_training = raw.training
        raw.eval()
        with torch.no_grad(), self._autocast():
            out = raw(x).float()
        raw.train(was_training)
        return out

    def deobfuscator_step(self, x: torch.Tensor, obfuscated: torch.Tensor | None = None) -> float:
        """Minimise MSE(deobf(obf(X).detach()), X); returns the loss."""
        if obfuscated is None:
            obfuscated = self._target_pass(x)
        self.deobf.train()
        with self._autocast():
            rec = self.deobf(obfuscated.detach())
        loss = F.mse_loss(rec.float(), x)
        value = float(loss.detach())
        check_loss("deobfuscator loss", value, self.max_loss)
        self._step(self.opt_deobf, loss, self.deobf)
        return value

    def detector_step(self, obfuscated: torch.Tensor, targets: list[Detections]) -> float:
        """Private mode: one step of the cloud detector's own loss on the detached obfuscated frames."""
        if self.opt_det is None or self.det_net is None:
            return float("nan")
        # the network stays in eval mode: any norm layer keeps its pretrained statistics, as in compatible mode
        loss = self.detector.loss(obfuscated.detach(), targets)["loss"].float()
        value = float(loss.detach())
        check_loss("detector loss", value, self.max_loss)
        self._step(self.opt_det, loss, self.det_net)
        return value

    def reid_step(self, obfuscated: torch.Tensor, people: People) -> float:
        """One cross-entropy step of the co-trained re-ID classifier on person crops of the detached output."""
        crops, ids = person_crops(obfuscated.detach(), people)
        if self.reid is None or self.opt_reid is None or len(crops) < 2:
            return float("nan")
        self.reid.train()
        loss = F.cross_entropy(self.reid(crops), ids)
        value = float(loss.detach())
        check_loss("re-ID classifier loss", value, self.max_loss)
        self._step(self.opt_reid, loss, self.reid)
        return value

    def warmup_step(self, x: torch.Tensor, target: str = "identity") -> tuple[float, torch.Tensor]:
        """Warm-start step: fit the obfuscator to a fixed mapping of its input (MSE); returns loss and output."""
        self.obf.train()
        with self._autocast():
            o = self.obf(x)
        loss = F.mse_loss(o.float(), warmup_target(x, target))
        value = float(loss.detach())
        check_loss("warm-start loss", value, self.max_loss)
        self._step(self.opt_obf, loss, self.obf)
        return value, o.detach().float()

    def train_batch(
        self,
        x: torch.Tensor,
        targets: list[Detections],
        lam: float,
        update_obf: bool = True,
        update_deobf: bool = True,
        deobf_steps: int = 1,
        people: People | None = None,
    ) -> StepStats:
        """One round: the obfuscator step (adversaries frozen), then the deobfuscator step(s), the re-ID step and, in
        private mode, the detector step on the detached output."""
        x = x.to(self.device, non_blocking=True)
        stats = StepStats()
        obfuscated = None
        if update_obf:
            stats, obfuscated = self.obfuscator_step(x, targets, lam, people)
        if update_deobf:
            losses = []
            for i in range(deobf_steps):
                # the first step reuses this batch's obfuscation; later ones re-run the (updated) obfuscator
                losses.append(self.deobfuscator_step(x, obfuscated if i == 0 else None))
            stats.loss_deobf = sum(losses) / len(losses)
        if (self.reid is not None and people) or self.opt_det is not None:
            out = obfuscated if obfuscated is not None else self._target_pass(x)
            if self.reid is not None and people:
                stats.loss_reid = self.reid_step(out, people)
            stats.loss_det_cloud = self.detector_step(out, targets)
        return stats
