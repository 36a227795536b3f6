"""The training run: data, pseudo-labels, the epoch loop, validation, logging, checkpoints and resume."""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError
from silhouette.training.config import Config, save_config
from silhouette.training.distributed import barrier, dist_info, sync_buffers, broadcast_object, init_distributed, shutdown, wrap
from silhouette.training.engine import AdversarialEngine, People, TrainingDiverged, unwrap

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "epoch", "lr_obf", "lr_deobf", "lam", "loss_obf", "loss_det", "mse_obf", "loss_deobf", "reid_confusion", "loss_reid",
    "face_score", "loss_det_cloud",
    "val_ap50", "val_ap", "val_ssim", "val_mse", "val_psnr", "val_nmi", "val_recon_mse", "val_count_threshold", "val_count_mae",
    "train_images", "epoch_s", "images_per_s",
]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> the local CUDA device when present, else CPU; explicit names are checked."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SilhouetteError(f"train.device: {name!r} is not a device (use auto, cpu or cuda[:N])") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SilhouetteError(f"train.device: {name!r} requested but CUDA is not available; use auto or cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")  # torch.cuda.set_device needs an index
    return dev


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a module's weights."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain lists, so a checkpoint loads with weights_only=True."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class FrameSet:
    """Frames held in memory as uint8 [N,3,H,W] with their files, (full-frame) pseudo-labels and GT persons."""

    images: torch.Tensor
    files: list[str]
    labels: list[Detections] = field(default_factory=list)
    people: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # GT boxes [K,4], identity ids [K]

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, idx: Sequence[int]) -> torch.Tensor:
        """Float [0,1] images for these indices."""
        return self.images[list(idx)].float().div_(255.0)


def load_frames(root: Path, split: str, stride: int = 1, limit: int = 0) -> FrameSet:
    """Read one split of a prepared dataset, keeping every `stride`-th frame (at most `limit`, 0 = all)."""
    from silhouette.data.torch_dataset import FrameDataset

    ds = FrameDataset(root, split=split)
    idx = list(range(0, len(ds), stride))
    if limit:
        idx = idx[:limit]
    if not idx:
        raise SilhouetteError(f"{root}: split {split!r} has no frames after data.frame_stride={stride}")
    items = [ds[i] for i in idx]
    images = torch.stack([(it["image"] * 255.0).round().to(torch.uint8) for it in items])
    people = [(it["gt_boxes"].float().reshape(-1, 4), it["gt_ids"].long().reshape(-1)) for it in items]
    return FrameSet(images, [it["file"] for it in items], people=people)


def person_targets(dets: Sequence[Detections], threshold: float) -> list[Detections]:
    """Person boxes at or above the pseudo-label threshold."""
    return [d.persons(threshold) for d in dets]


def predict_batched(detector: Detector, images: torch.Tensor, batch_size: int = 8) -> list[Detections]:
    """Detector predictions over a float [N,3,H,W] tensor in chunks, moved to the CPU."""
    out: list[Detections] = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            for d in detector.predict(images[i : i + batch_size]):
                out.append(Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()))
    return out


def pseudo_labels(root: Path, frames: FrameSet, spec: str, threshold: float, split: str) -> list[Detections]:
    """Clean-frame person pseudo-labels: from the dataset's label cache, computed there on first use."""
    from silhouette.data.labels import ensure_pseudo_labels

    cache = ensure_pseudo_labels(root, spec, threshold, split=split, progress=False)
    missing = [f for f in frames.files if f not in cache]
    if missing:
        raise SilhouetteError(f"pseudo-label cache of {root} lacks {len(missing)} frame(s), e.g. {missing[0]}")
    return person_targets([cache[f] for f in frames.files], threshold)


def gt_targets(frames: FrameSet, root: Path, split: str) -> list[Detections]:
    """Human person boxes of each frame as detection targets (score 1, person); a clear error for footage without GT."""
    if not any(len(boxes) for boxes, _ in frames.people):
        raise SilhouetteError(f"detector.targets: gt needs human person boxes, and split {split!r} of {root} has none; "
                              "use detector.targets: pseudo")
    return [Detections.of_people(b.clone()) for b, _ in frames.people]


def gt_crop_targets(frames: FrameSet, idx: Sequence[int], geometry: Sequence[tuple[int, int, bool]],
                    size: Sequence[int]) -> list[Detections]:
    """Human boxes moved into each crop; a person mostly outside it is no target (nor a negative: it is dropped)."""
    out = []
    for k, i in enumerate(idx):
        moved, keep = move_boxes(frames.people[i][0], *geometry[k], size, min_height=4.0)
        out.append(Detections.of_people(moved[keep]))
    return out


def _eval_preds(detector: Detector, obfuscated: torch.Tensor, batch_size: int) -> list[Detections]:
    return predict_batched(detector, obfuscated, batch_size)


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
    from silhouette.evaluation.metrics import count_error, mean_similarity, person_ap

    clean = frames.batch(range(len(frames)))
    obfuscated = obfuscate_all(obf, clean, device, batch_size)
    preds = _eval_preds(detector, obfuscated, batch_size)
    ap = person_ap(preds, targets)
    from silhouette.evaluation.metrics import count_threshold

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


def _crop_and_flip(
    x: torch.Tensor, crop: Sequence[int], hflip: bool, gen: torch.Generator, photometric: float = 0.0,
    geometry: list[tuple[int, int, bool]] | None = None,
) -> torch.Tensor:
    """Random crops [H,W], flips and photometric jitter drawn from `gen`; the same draws in every run with the same seed.

    `geometry`, when given, receives (top, left, flipped) per image, to move boxes along (see `move_boxes`).
    """
    b, _, h, w = x.shape
    outs = []
    for i in range(b):
        img = x[i]
        top = left = 0
        if crop:
            ch, cw = min(crop[0], h), min(crop[1], w)
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            img = img[:, top : top + ch, left : left + cw]
        flipped = hflip and bool(torch.rand(1, generator=gen) < 0.5)
        if flipped:
            img = img.flip(-1)
        if geometry is not None:
            geometry.append((top, left, flipped))
        if photometric > 0:
            img = photometric_jitter(img, photometric, gen)
        outs.append(img)
    return torch.stack(outs)


def move_boxes(boxes: torch.Tensor, top: int, left: int, flipped: bool, size: Sequence[int],
               min_visible: float = 0.5, min_height: float = 16.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [K,4] (xyxy) after a crop at (top, left) of `size` [H,W] and an optional flip, clipped to the crop.

    Also returns a keep mask: at least `min_visible` of the box inside the crop and `min_height` pixels tall (the
    re-ID attack's minimum), so a sliver at the crop edge is not taken for a person.
    """
    h, w = size
    b = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    clipped = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], dim=1)
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    seen = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (seen >= min_visible * area) & (area > 0) & ((clipped[:, 3] - clipped[:, 1]) >= min_height)
    if flipped:
        clipped = torch.stack([w - clipped[:, 2], clipped[:, 1], w - clipped[:, 0], clipped[:, 3]], dim=1)
    return clipped, keep


def photometric_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random gamma, contrast, brightness and per-channel gain of a [3,H,W] image in [0,1], clamped to [0,1].

    One camera's footage covers a narrow band of light and colour; without this the obfuscator learns a mapping
    that only works inside that band (a PETS-trained one then loses most people in bright indoor scenes).
    """
    u = (torch.rand(6, generator=gen) * 2 - 1) * strength  # six draws in [-s, s]
    gamma, contrast, gain = float(torch.exp(u[0])), 1.0 + float(u[1]), 1.0 + float(u[2])
    channel = (1.0 + u[3:] / 2).view(3, 1, 1).to(img)
    out = img.clamp(0, 1) ** gamma
    mean = out.mean()
    return (((out - mean) * contrast + mean) * gain * channel).clamp(0, 1)


def _flip_targets(d: Detections, width: int) -> Detections:
    b = d.boxes.clone()
    b[:, [0, 2]] = width - d.boxes[:, [2, 0]]
    return Detections(b, d.scores, d.labels)


class Trainer:
    """One training run in `out_dir`: `run()` trains (or resumes) and returns the final metrics."""

    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.out, self.resume, self.progress = cfg, Path(out_dir), resume, progress

    # -- setup -------------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # one COCO summary per epoch is noise
        info0 = dist_info()
        self.device = resolve_device(cfg.train.device, info0.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        if cfg.mode == "private" and self.dist.world_size > 1:
            # the co-trained detector's gradients are not all-reduced: one process keeps the pair consistent
            raise SilhouetteError("mode: private trains on one process; run it without torchrun")
        seed_everything(cfg.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if self.dist.is_main and not self.resume and last.exists():
            raise SilhouetteError(f"{self.out} already holds a run ({last}); pass --resume to continue it or choose another --out")
        if self.resume and not last.exists():
            raise SilhouetteError(f"--resume: {last} not found; start the run without --resume")

        from silhouette.data import load_manifest  # noqa: F401  (fails early if the data package is broken)
        from silhouette.detectors import create_detector

        root = Path(cfg.data.root)
        if self.dist.is_main and not (root / "manifest.json").is_file():
            from silhouette.data import prepare_dataset

            prepare_dataset(cfg.data.dataset, root, progress=self.progress)
        barrier()
        self.root = root
        # the differentiable detector runs beside the networks (on the GPU when training there); the AP detector
        # below keeps its exact onnxruntime path on the CPU
        self.detector = create_detector(cfg.detector.spec, device=str(self.device))
        # the boxes of crops come from the unmodified detector, also when the training detector is being adapted
        self.label_detector = self.detector
        if cfg.mode == "private":
            from silhouette.detectors.adapt import trainable_detector

            self.detector = trainable_detector(cfg.detector.spec, device=str(self.device))
        # AP needs the whole precision-recall curve: predictions down to a low score, as in COCO evaluation
        self.eval_detector = create_detector(cfg.detector.eval_spec or cfg.detector.spec, conf_threshold=cfg.eval.conf_threshold)
        self.train_frames = load_frames(root, cfg.data.train_split, cfg.data.frame_stride, cfg.data.max_train_frames)
        self.val_frames = load_frames(root, cfg.data.val_split, cfg.data.val_stride, cfg.data.max_val_frames)
        thr = cfg.detector.score_threshold
        if self.dist.is_main:
            # rank 0 fills the cache; the others read it after the barrier
            self.train_frames.labels = pseudo_labels(root, self.train_frames, cfg.detector.spec, thr, cfg.data.train_split)
            self.val_targets = pseudo_labels(
                root, self.val_frames, cfg.detector.eval_spec or cfg.detector.spec, thr, cfg.data.val_split
            )
        barrier()
        if not self.dist.is_main:
            self.train_frames.labels = pseudo_labels(root, self.train_frames, cfg.detector.spec, thr, cfg.data.train_split)
            self.val_targets = pseudo_labels(
                root, self.val_frames, cfg.detector.eval_spec or cfg.detector.spec, thr, cfg.data.val_split
            )
        if cfg.detector.targets == "gt":
            self.train_frames.labels = gt_targets(self.train_frames, root, cfg.data.train_split)
            self.val_targets = gt_targets(self.val_frames, root, cfg.data.val_split)

        from silhouette.models import build_deobfuscator, build_obfuscator

        # seed right before the weights are drawn: building a label cache (or not) must not shift the init
        seed_everything(cfg.seed)
        m = cfg.model
        self.obf_spec = {"name": m.obfuscator, "kwargs": dict(m.obfuscator_kwargs)}
        self.deobf_spec = {"name": m.deobfuscator, "kwargs": dict(m.deobfuscator_kwargs)}
        obf = build_obfuscator(m.obfuscator, **m.obfuscator_kwargs).to(self.device)
        deobf = build_deobfuscator(m.deobfuscator, **m.deobfuscator_kwargs).to(self.device)
        t = cfg.train
        self.opt_obf = torch.optim.AdamW(obf.parameters(), lr=t.lr_obf, weight_decay=t.weight_decay)
        self.opt_deobf = torch.optim.AdamW(deobf.parameters(), lr=t.lr_deobf, weight_decay=t.weight_decay)
        self.sched_obf = torch.optim.lr_scheduler.StepLR(self.opt_obf, t.lr_step_epochs, t.lr_decay_obf)
        self.sched_deobf = torch.optim.lr_scheduler.StepLR(self.opt_deobf, t.lr_step_epochs, t.lr_decay_deobf)
        self.reid, self.opt_reid = self._build_reid()
        self.face = None
        if t.face_weight > 0:
            from silhouette.training.face_adversary import FaceAdversary

            self.face = FaceAdversary().to(self.device)
        self.opt_det = None
        if cfg.mode == "private":
            self.opt_det = torch.optim.AdamW(self.detector.torch_model().parameters(), lr=cfg.detector.lr,
                                             weight_decay=t.weight_decay)
        self.start_epoch, self.best_score, self.step = 0, -math.inf, 0
        self.warm_done = t.warmup_steps == 0
        if m.init_from:
            self._init_from(m.init_from, obf, deobf)
        if self.resume:
            self._load_state(last, obf, deobf)
        self.obf_raw, self.deobf_raw = obf, deobf
        self.obf = wrap(obf, self.dist, self.device)
        self.deobf = wrap(deobf, self.dist, self.device)
        self.engine = AdversarialEngine(
            self.obf, self.deobf, self.detector, self.opt_obf, self.opt_deobf,
            det_weight=t.det_weight, blank_weight=t.blank_weight, grad_clip=t.grad_clip, max_loss=t.max_loss, device=self.device, amp=t.amp,
            reid=self.reid, opt_reid=self.opt_reid, reid_weight=t.reid_weight,
            face=self.face, face_weight=t.face_weight, opt_det=self.opt_det,
        )
        if self.dist.is_main:
            save_config(cfg, self.out / "config.yaml")
            from silhouette.fileio import write_json
            from silhouette.provenance import provenance

            # which code, command and machine made this run (a resumed run records its latest start)
            write_json(self.out / "provenance.json", provenance())

    def _init_from(self, path: str, obf: nn.Module, deobf: nn.Module) -> None:
        """Load a trained checkpoint's obfuscator (and its deobfuscator, if it has one) in place of the warm start."""
        from silhouette.models.checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        if "obfuscator" not in ckpt:
            raise SilhouetteError(f"model.init_from {path}: the checkpoint holds no obfuscator")
        for key, model in (("obfuscator", obf), ("deobfuscator", deobf)):
            if key not in ckpt:
                continue  # an exported obfuscator-only checkpoint: the deobfuscator starts fresh
            try:
                model.load_state_dict(ckpt[key]["state_dict"])
            except RuntimeError as exc:
                raise SilhouetteError(f"model.init_from {path}: its {key} does not fit model.{key} "
                                      f"({ckpt[key].get('spec', {}).get('name')!r}); use the same architecture") from exc
        if self.cfg.mode == "private" and "detector" in ckpt:
            if ckpt["detector"].get("name") != self.cfg.detector.spec:
                raise SilhouetteError(f"model.init_from {path}: its detector is {ckpt['detector'].get('name')!r}, "
                                      f"not detector.spec {self.cfg.detector.spec!r}")
            self.detector.torch_model().load_state_dict(ckpt["detector"]["state_dict"])
        self.warm_done = True
        log.info("initialised from %s (no warm start)", path)

    def _build_reid(self) -> tuple[nn.Module | None, torch.optim.Optimizer | None]:
        """The co-trained re-ID classifier of train.reid_weight (the re-ID attack's network), or (None, None)."""
        t = self.cfg.train
        if t.reid_weight <= 0:
            return None, None
        ids = torch.cat([i for _, i in self.train_frames.people]) if self.train_frames.people else torch.zeros(0)
        if len(ids.unique()) < 2:
            raise SilhouetteError(f"train.reid_weight > 0 needs ground-truth person identities in {self.root} "
                                  f"(split {self.cfg.data.train_split!r}); use data.dataset pets2009 or set train.reid_weight 0")
        from silhouette.privacy.reid import ReIDNet

        # identity ids -> contiguous class labels; the classifier is a training-time adversary, never shipped
        self.id_labels = {int(v): k for k, v in enumerate(ids.unique().tolist())}
        # not DDP-wrapped: a rank with fewer than two crops skips its step, which would stall a gradient all-reduce;
        # each rank's classifier learns on its own shard (rank 0's is checkpointed)
        reid = ReIDNet(len(self.id_labels)).to(self.device)
        return reid, torch.optim.AdamW(reid.parameters(), lr=t.lr_reid, weight_decay=t.weight_decay)

    def _load_state(self, path: Path, obf: nn.Module, deobf: nn.Module) -> None:
        from silhouette.models.checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        state = ckpt.get("training_state")
        if not state or "deobfuscator" not in ckpt:
            raise SilhouetteError(f"--resume: {path} holds no training state (is it an exported checkpoint?)")
        def same(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
            return (saved.get("name"), saved.get("kwargs")) == (wanted["name"], wanted["kwargs"])

        if not same(ckpt["obfuscator"]["spec"], self.obf_spec) or not same(ckpt["deobfuscator"]["spec"], self.deobf_spec):
            raise SilhouetteError(f"--resume: {path} was trained with other models than this config names")
        obf.load_state_dict(ckpt["obfuscator"]["state_dict"])
        deobf.load_state_dict(ckpt["deobfuscator"]["state_dict"])
        self.opt_obf.load_state_dict(state["opt_obf"])
        self.opt_deobf.load_state_dict(state["opt_deobf"])
        self.sched_obf.load_state_dict(state["sched_obf"])
        self.sched_deobf.load_state_dict(state["sched_deobf"])
        if self.reid is not None:
            if "reid" not in state:
                raise SilhouetteError(f"--resume: {path} was trained without train.reid_weight; keep the run's config")
            self.reid.load_state_dict(state["reid"])
            self.opt_reid.load_state_dict(state["opt_reid"])
        if self.cfg.mode == "private":
            if "detector" not in ckpt or "opt_det" not in state:
                raise SilhouetteError(f"--resume: {path} is a compatible-mode run; keep its config (mode: compatible)")
            self.detector.torch_model().load_state_dict(ckpt["detector"]["state_dict"])
            self.opt_det.load_state_dict(state["opt_det"])
        self.start_epoch = int(ckpt["epoch"])
        self.step = int(ckpt.get("step", 0))
        self.best_score = float(state.get("best_score", -math.inf))
        self.warm_done = True
        set_rng_state(state["rng"])
        log.info("resumed %s at epoch %d", path, self.start_epoch)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _save(self, path: Path, epoch: int, metrics: dict[str, Any]) -> None:
        from silhouette.models.checkpoint import save_checkpoint

        extra, det_state = {}, {}
        if self.cfg.mode == "private":
            # the detector file first: a checkpoint never names a detector file that is not on disk yet
            det_file = path.with_suffix(".detector.onnx")
            sha = self.detector.export_onnx(det_file)
            pair = {"detector": self.cfg.detector.spec, "file": det_file.name, "sha256": sha}
            if "val_count_threshold" in metrics:  # its scores are its own: count at the threshold validation chose
                pair["conf_threshold"] = float(metrics["val_count_threshold"])
            extra = {"mode": "private", "pair": pair,
                     "detector": {"name": self.cfg.detector.spec, "state_dict": _state(self.detector.torch_model())}}
            det_state = {"opt_det": self.opt_det.state_dict()}
        save_checkpoint(
            path,
            extra=extra,
            obfuscator=self.obf_raw,
            obfuscator_spec=self.obf_spec,
            deobfuscator=self.deobf_raw,
            deobfuscator_spec=self.deobf_spec,
            config=self.cfg.to_dict(),
            epoch=epoch,
            step=self.step,
            metrics=metrics,
            training_state={
                "opt_obf": self.opt_obf.state_dict(),
                "opt_deobf": self.opt_deobf.state_dict(),
                "sched_obf": self.sched_obf.state_dict(),
                "sched_deobf": self.sched_deobf.state_dict(),
                "best_score": self.best_score,
                "rng": rng_state(),
                **({"reid": self.reid.state_dict(), "opt_reid": self.opt_reid.state_dict()} if self.reid is not None else {}),
                **det_state,
            },
        )

    def _lam(self, epoch: float) -> float:
        t = self.cfg.train
        if t.lam_warmup_epochs <= 0:
            return t.lam
        return t.lam * min(1.0, epoch / t.lam_warmup_epochs)

    def _batches(self, epoch: int, batch_size: int = 0) -> list[list[int]]:
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(len(self.train_frames)), num_replicas=self.dist.world_size, rank=self.dist.rank,
            shuffle=True, seed=self.cfg.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        bs = batch_size or self.cfg.train.batch_size
        return [order[i : i + bs] for i in range(0, len(order), bs)]

    def _batch(self, idx: list[int], gen: torch.Generator) -> tuple[torch.Tensor, list[Detections], People | None]:
        """Images (cropped/flipped as configured), their person targets and (for the re-ID term) GT persons."""
        d = self.cfg.data
        x = self.train_frames.batch(idx)
        if not d.crop and not d.hflip and not d.photometric:
            return x, [self.train_frames.labels[i] for i in idx], self._people(idx, None, x.shape[-2:])
        geometry: list[tuple[int, int, bool]] = []
        x = _crop_and_flip(x, d.crop, d.hflip, gen, d.photometric, geometry)
        people = self._people(idx, geometry, x.shape[-2:])
        if self.cfg.detector.targets == "gt":
            return x, gt_crop_targets(self.train_frames, idx, geometry, x.shape[-2:]), people
        # a crop or jitter changes what the detector sees: the unmodified detector's person boxes on the clean crop
        with torch.no_grad():
            targets = person_targets(self.label_detector.predict(x), self.cfg.detector.score_threshold)
        return x, [Detections(t.boxes.cpu(), t.scores.cpu(), t.labels.cpu()) for t in targets], people

    def _people(self, idx: list[int], geometry: list[tuple[int, int, bool]] | None, size: Sequence[int]) -> People | None:
        """GT person boxes moved into each (cropped) image with contiguous identity labels; None without a re-ID term."""
        if self.reid is None:
            return None
        out: People = []
        for k, i in enumerate(idx):
            boxes, ids = self.train_frames.people[i]
            top, left, flipped = geometry[k] if geometry else (0, 0, False)
            moved, keep = move_boxes(boxes, top, left, flipped, size)
            out.append((moved[keep], torch.tensor([self.id_labels[int(v)] for v in ids[keep]], dtype=torch.long)))
        return out

    def _gen(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch * 7919 + self.dist.rank)

    def _warm_start(self, writer: Any) -> None:
        """Fit the obfuscator to `train.warmup_target` (the deobfuscator trains on its output alongside)."""
        t, d = self.cfg.train, self.cfg.data
        opt = torch.optim.Adam(unwrap(self.obf).parameters(), lr=t.warmup_lr)
        total = t.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, (lambda i: 1.0 - i / total) if t.warmup_schedule == "linear" else (lambda i: 1.0)
        )
        engine = AdversarialEngine(self.obf, self.deobf, self.detector, opt, self.opt_deobf, max_loss=t.max_loss,
                                   device=self.device, amp=t.amp)
        crop = t.warmup_crop or d.crop
        bs = t.warmup_batch_size or t.batch_size
        gen = self._gen(-1)
        steps, rounds, start = 0, 0, time.time()
        bar = self._bar(total=t.warmup_steps, desc=f"warm-start ({t.warmup_target})")
        while steps < t.warmup_steps:
            for idx in self._batches(10_000 + rounds, bs):
                x = _crop_and_flip(self.train_frames.batch(idx), crop, d.hflip, gen, d.photometric).to(self.device)
                loss, out = engine.warmup_step(x, t.warmup_target)
                rec = engine.deobfuscator_step(x, out)
                sched.step()
                steps += 1
                bar.update(1)
                bar.set_postfix(fit=f"{loss:.4f}", deobf=f"{rec:.4f}")
                if writer is not None and steps % t.log_every == 0:
                    writer.add_scalar("warmup/fit_mse", loss, steps)
                    writer.add_scalar("warmup/deobf_mse", rec, steps)
                if steps >= t.warmup_steps:
                    break
            rounds += 1
        bar.close()
        self.warm_done = True
        # epoch 0 = the warm-started networks, so the log shows what the adversarial epochs add
        val = evaluate(self.obf, self._eval_detector(), self.val_frames, self.val_targets, self.device,
                       self.cfg.eval.batch_size, self.cfg.eval.ssim_frames, self.deobf)
        if self.dist.is_main:
            row: dict[str, Any] = {"epoch": 0, "lam": 0.0, "loss_obf": loss, "loss_deobf": rec,
                                   "train_images": steps * bs * self.dist.world_size,
                                   "epoch_s": round(time.time() - start, 2),
                                   "images_per_s": round(steps * bs * self.dist.world_size / max(time.time() - start, 1e-9), 3)}
            row.update({f"val_{k}": v for k, v in val.items()})
            self._write_row(row, writer, 0)
            self._save(self.out / "last.pt", 0, row)
            log.info("warm start: %s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        barrier()

    def _eval_detector(self) -> Detector:
        """The validation detector; in private mode the co-trained one, exported to ONNX and run as it will be served."""
        if self.cfg.mode != "private":
            return self.eval_detector
        from silhouette.detectors import create_detector

        path = self.out / "val.detector.onnx"
        self.detector.export_onnx(path)
        return create_detector(self.cfg.detector.spec, weights=str(path), conf_threshold=self.cfg.eval.conf_threshold)

    def _bar(self, **kw: Any) -> Any:
        from tqdm import tqdm

        return tqdm(disable=not (self.progress and self.dist.is_main), dynamic_ncols=True, **kw)

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train from scratch or resume; returns the last epoch's metrics."""
        try:
            self._setup()
            return self._run()
        finally:
            shutdown()

    def _run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"))
        metrics: dict[str, Any] = {}
        try:
            if not self.warm_done:
                self._warm_start(writer)
            for epoch in range(self.start_epoch, t.epochs):
                metrics = self._epoch(epoch, writer)
            if self.dist.is_main:
                log.info("training done: %s", {k: metrics.get(k) for k in ("val_ap50", "val_ssim")})
        except TrainingDiverged as exc:
            last = self.out / "last.pt"
            # name a checkpoint only if one exists: a run can diverge before its first save
            where = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
            msg = f"training stopped: {exc}; {where}"
            if self.dist.is_main:
                (self.out / "STOPPED.txt").write_text(msg + "\n", encoding="utf-8")
            raise TrainingDiverged(msg) from exc
        finally:
            if writer is not None:
                writer.close()
        return metrics

    def _epoch(self, epoch: int, writer: Any) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        batches = self._batches(epoch)
        gen = self._gen(epoch)
        update_obf = t.alternate == "batch" or epoch % 2 == 1
        update_deobf = t.alternate == "batch" or epoch % 2 == 0
        sums = dict.fromkeys(("loss_obf", "loss_det", "mse_obf", "loss_deobf", "reid_confusion", "loss_reid", "face_score",
                              "loss_det_cloud"), 0.0)
        counts = dict.fromkeys(sums, 0)
        start, n_img = time.time(), 0
        bar = self._bar(total=len(batches), desc=f"epoch {epoch + 1}/{t.epochs}")
        for b, idx in enumerate(batches):
            lam = self._lam(epoch + b / max(1, len(batches)))
            x, targets, people = self._batch(idx, gen)
            stats = self.engine.train_batch(x, targets, lam, update_obf, update_deobf, t.deobf_steps, people)
            self.step += 1
            n_img += len(idx)
            for k in sums:
                v = getattr(stats, k)
                if not math.isnan(v):
                    sums[k] += v
                    counts[k] += 1
            run = {k: sums[k] / counts[k] for k in sums if counts[k]}
            bar.update(1)
            bar.set_postfix({k.replace("loss_", ""): f"{v:.4f}" for k, v in run.items()})
            if writer is not None and self.step % t.log_every == 0:
                for k in sums:
                    v = getattr(stats, k)
                    if not math.isnan(v):
                        writer.add_scalar(f"step/{k}", v, self.step)
                writer.add_scalar("step/lam", lam, self.step)
        bar.close()
        # DDP averages gradients, but each rank's BN statistics saw only its own shard: take rank 0's
        sync_buffers(self.obf_raw, self.dist)
        sync_buffers(self.deobf_raw, self.dist)
        elapsed = time.time() - start
        lrs = (self.opt_obf.param_groups[0]["lr"], self.opt_deobf.param_groups[0]["lr"])
        self.sched_obf.step()
        self.sched_deobf.step()
        row: dict[str, Any] = {
            "epoch": epoch + 1, "lr_obf": lrs[0], "lr_deobf": lrs[1], "lam": self._lam(epoch + 1),
            **{k: (sums[k] / counts[k] if counts[k] else float("nan")) for k in sums},
            "train_images": n_img * self.dist.world_size, "epoch_s": round(elapsed, 2),
            "images_per_s": round(n_img * self.dist.world_size / max(elapsed, 1e-9), 3),
        }
        is_best = False
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == t.epochs:
            # every rank validates (same frames, same weights): torchmetrics syncs its state across the group
            val = evaluate(self.obf, self._eval_detector(), self.val_frames, self.val_targets, self.device,
                           cfg.eval.batch_size, cfg.eval.ssim_frames, self.deobf)
            row.update({f"val_{k}": v for k, v in val.items()})
            score = best_score(val["ap50"], val["ssim"], cfg.eval.ssim_target, epoch + 1, cfg.eval.min_ap50)
            is_best = score > self.best_score
            if is_best:
                self.best_score = score
        if self.dist.is_main:
            self._write_row(row, writer, epoch + 1)
            self._save(self.out / "last.pt", epoch + 1, row)
            if is_best:
                self._save(self.out / "best.pt", epoch + 1, row)
            log.info("epoch %d: %s", epoch + 1, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        self.best_score = float(broadcast_object(self.best_score, self.dist))  # type: ignore[arg-type]
        barrier()
        return row

    def _write_row(self, row: dict[str, Any], writer: Any, epoch: int) -> None:
        path = self.out / "metrics.csv"
        rows: list[dict[str, Any]] = []
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < epoch]  # a resumed run rewrites later epochs
        rows.append({k: row.get(k, "") for k in CSV_FIELDS})
        from silhouette.fileio import write_csv

        write_csv(path, CSV_FIELDS, rows)
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    writer.add_scalar(f"epoch/{k}", v, epoch)
            writer.flush()


def train(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a training run described by `cfg` into `out_dir`."""
    return Trainer(cfg, out_dir, resume=resume, progress=progress).run()
