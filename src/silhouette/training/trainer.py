"""The training run: set-up, the epoch loop, logging, checkpoints and resume (`Trainer`, `train`)."""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.devices import resolve_device
from silhouette.errors import SilhouetteError
from silhouette.training.augment import crop_and_flip, move_boxes
from silhouette.training.config import Config, save_config
from silhouette.training.distributed import barrier, dist_info, sync_buffers, broadcast_object, init_distributed, shutdown, wrap
from silhouette.training.engine import AdversarialEngine, People, TrainingDiverged, unwrap
from silhouette.training.frames import (
    concat, gt_crop_targets, gt_targets, load_frame_set, load_sources, person_targets, pseudo_labels, source_labels,
)
from silhouette.training.rng import rng_state, seed_everything, set_rng_state
from silhouette.training.validation import best_score, evaluate

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "epoch", "lr_obf", "lr_deobf", "lam", "loss_obf", "loss_det", "mse_obf", "loss_deobf", "reid_confusion", "loss_reid",
    "face_score", "loss_det_cloud",
    "val_ap50", "val_ap", "val_ssim", "val_mse", "val_psnr", "val_nmi", "val_recon_mse", "val_count_threshold", "val_count_mae",
    "train_images", "epoch_s", "images_per_s",
]
# the per-batch statistics of AdversarialEngine.train_batch that an epoch averages
EPOCH_STATS = ("loss_obf", "loss_det", "mse_obf", "loss_deobf", "reid_confusion", "loss_reid", "face_score", "loss_det_cloud")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a module's weights."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Trainer:
    """One training run in `out_dir`: `run()` trains (or resumes) and returns the final metrics."""

    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.out, self.resume, self.progress = cfg, Path(out_dir), resume, progress

    # -- setup -------------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        """Everything a run needs before its first step, in the order the steps depend on each other."""
        self._setup_runtime()
        self._check_out_dir()
        self._setup_data()
        self._setup_models()
        if self.cfg.model.init_from:
            self._init_from(self.cfg.model.init_from, self.obf_raw, self.deobf_raw)
        if self.resume:
            self._load_state(self.out / "last.pt", self.obf_raw, self.deobf_raw)
        self._setup_engine()
        if self.dist.is_main:
            self._record_run()

    def _setup_runtime(self) -> None:
        """Threads, device, the process group and the seed."""
        cfg = self.cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # one COCO summary per epoch is noise
        info0 = dist_info()
        self.device = resolve_device(cfg.train.device, info0.local_rank, option="train.device")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        if cfg.mode == "private" and self.dist.world_size > 1:
            # the co-trained detector's gradients are not all-reduced: one process keeps the pair consistent
            raise SilhouetteError("mode: private trains on one process; run it without torchrun")
        seed_everything(cfg.seed)

    def _check_out_dir(self) -> None:
        """A fresh run needs an unused --out; --resume needs the run's last.pt."""
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if self.dist.is_main and not self.resume and last.exists():
            raise SilhouetteError(f"{self.out} already holds a run ({last}); pass --resume to continue it or choose another --out")
        if self.resume and not last.exists():
            raise SilhouetteError(f"--resume: {last} not found; start the run without --resume")

    def _setup_data(self) -> None:
        """The prepared dataset (prepared here on first use), the detectors, the frames and their targets."""
        from silhouette.data import load_manifest  # noqa: F401  (fails early if the data package is broken)

        cfg = self.cfg
        root = Path(cfg.data.root)
        if self.dist.is_main and not (root / "manifest.json").is_file():
            from silhouette.data import prepare_dataset

            prepare_dataset(cfg.data.dataset, root, progress=self.progress)
        barrier()
        self.root = root
        self._setup_detectors()
        d = cfg.data
        self.train_sources = load_sources(d, root)
        self.train_frames = concat([frames for _, _, frames in self.train_sources])
        self.val_frames = load_frame_set(root, d.val_split, d.val_stride, d.max_val_frames, d.exclude_cameras)
        if self.dist.is_main:
            self._load_targets()  # rank 0 fills the label cache; the others read it after the barrier
        barrier()
        if not self.dist.is_main:
            self._load_targets()
        if cfg.detector.targets == "gt":
            self.train_frames.labels = gt_targets(self.train_frames, root, cfg.data.train_split)
            self.val_targets = gt_targets(self.val_frames, root, cfg.data.val_split)

    def _setup_detectors(self) -> None:
        """The training detector, the one that labels crops, and the validation detector."""
        from silhouette.detectors import create_detector

        cfg = self.cfg
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

    def _load_targets(self) -> None:
        """Pseudo-labels of the train frames (training detector) and validation frames (validation detector)."""
        cfg, thr = self.cfg, self.cfg.detector.score_threshold
        self.train_frames.labels = source_labels(self.train_sources, cfg.detector.spec, thr)
        self.val_targets = pseudo_labels(
            self.root, self.val_frames, cfg.detector.eval_spec or cfg.detector.spec, thr, cfg.data.val_split
        )

    def _setup_models(self) -> None:
        """Obfuscator, deobfuscator, their optimisers and schedules, and the optional adversaries and detector step."""
        from silhouette.models import build_deobfuscator, build_obfuscator

        cfg, m, t = self.cfg, self.cfg.model, self.cfg.train
        # seed right before the weights are drawn: building a label cache (or not) must not shift the init
        seed_everything(cfg.seed)
        self.obf_spec = {"name": m.obfuscator, "kwargs": dict(m.obfuscator_kwargs)}
        self.deobf_spec = {"name": m.deobfuscator, "kwargs": dict(m.deobfuscator_kwargs)}
        self.obf_raw = build_obfuscator(m.obfuscator, **m.obfuscator_kwargs).to(self.device)
        self.deobf_raw = build_deobfuscator(m.deobfuscator, **m.deobfuscator_kwargs).to(self.device)
        self.opt_obf = torch.optim.AdamW(self.obf_raw.parameters(), lr=t.lr_obf, weight_decay=t.weight_decay)
        self.opt_deobf = torch.optim.AdamW(self.deobf_raw.parameters(), lr=t.lr_deobf, weight_decay=t.weight_decay)
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

    def _setup_engine(self) -> None:
        """Wrap the networks for DDP and build the adversarial engine around them."""
        t = self.cfg.train
        self.obf = wrap(self.obf_raw, self.dist, self.device)
        self.deobf = wrap(self.deobf_raw, self.dist, self.device)
        self.engine = AdversarialEngine(
            self.obf, self.deobf, self.detector, self.opt_obf, self.opt_deobf,
            det_weight=t.det_weight, blank_weight=t.blank_weight, grad_clip=t.grad_clip, max_loss=t.max_loss, device=self.device, amp=t.amp,
            reid=self.reid, opt_reid=self.opt_reid, reid_weight=t.reid_weight,
            face=self.face, face_weight=t.face_weight, opt_det=self.opt_det,
        )

    def _record_run(self) -> None:
        """The run's config and provenance beside its checkpoints."""
        save_config(self.cfg, self.out / "config.yaml")
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
        """Resume from `path`: weights, optimisers, schedules, adversaries, counters and RNG state."""
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
        """A checkpoint with everything `_load_state` needs (in private mode, the detector file first)."""
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
        """The detector-loss weight at a (fractional) epoch: ramped up over train.lam_warmup_epochs."""
        t = self.cfg.train
        if t.lam_warmup_epochs <= 0:
            return t.lam
        return t.lam * min(1.0, epoch / t.lam_warmup_epochs)

    def _batches(self, epoch: int, batch_size: int = 0) -> list[list[int]]:
        """This rank's shuffled batches of train-frame indices for `epoch`."""
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
        camera = d.camera_jitter()
        if not d.crop and not d.hflip and not d.photometric and not camera:
            return x, [self.train_frames.labels[i] for i in idx], self._people(idx, None, x.shape[-2:])
        geometry: list[tuple[int, int, bool]] = []
        x = crop_and_flip(x, d.crop, d.hflip, gen, d.photometric, geometry, camera)
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
        """The augmentation generator of `epoch` on this rank (a resumed run draws the same crops)."""
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
                x = crop_and_flip(self.train_frames.batch(idx), crop, d.hflip, gen, d.photometric,
                                  camera=d.camera_jitter()).to(self.device)
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
        """The warm start (unless done) and the remaining epochs; a divergence leaves STOPPED.txt naming the last save."""
        t = self.cfg.train
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
        """One epoch of adversarial steps, then validation (when due), the log row and the checkpoints."""
        t = self.cfg.train
        start = time.time()
        means, n_img = self._train_batches(epoch, writer)
        # DDP averages gradients, but each rank's BN statistics saw only its own shard: take rank 0's
        sync_buffers(self.obf_raw, self.dist)
        sync_buffers(self.deobf_raw, self.dist)
        elapsed = time.time() - start
        lrs = (self.opt_obf.param_groups[0]["lr"], self.opt_deobf.param_groups[0]["lr"])
        self.sched_obf.step()
        self.sched_deobf.step()
        row: dict[str, Any] = {
            "epoch": epoch + 1, "lr_obf": lrs[0], "lr_deobf": lrs[1], "lam": self._lam(epoch + 1), **means,
            "train_images": n_img * self.dist.world_size, "epoch_s": round(elapsed, 2),
            "images_per_s": round(n_img * self.dist.world_size / max(elapsed, 1e-9), 3),
        }
        is_best = False
        if (epoch + 1) % self.cfg.eval.every == 0 or epoch + 1 == t.epochs:
            is_best = self._validate(epoch, row)
        if self.dist.is_main:
            self._write_row(row, writer, epoch + 1)
            self._save(self.out / "last.pt", epoch + 1, row)
            if is_best:
                self._save(self.out / "best.pt", epoch + 1, row)
            log.info("epoch %d: %s", epoch + 1, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        self.best_score = float(broadcast_object(self.best_score, self.dist))  # type: ignore[arg-type]
        barrier()
        return row

    def _train_batches(self, epoch: int, writer: Any) -> tuple[dict[str, float], int]:
        """The epoch's training steps; returns the mean of each statistic (NaN: never measured) and the images seen."""
        t = self.cfg.train
        batches = self._batches(epoch)
        gen = self._gen(epoch)
        update_obf = t.alternate == "batch" or epoch % 2 == 1
        update_deobf = t.alternate == "batch" or epoch % 2 == 0
        sums = dict.fromkeys(EPOCH_STATS, 0.0)
        counts = dict.fromkeys(sums, 0)
        n_img = 0
        bar = self._bar(total=len(batches), desc=f"epoch {epoch + 1}/{t.epochs}")
        for b, idx in enumerate(batches):
            lam = self._lam(epoch + b / max(1, len(batches)))
            x, targets, people = self._batch(idx, gen)
            stats = self.engine.train_batch(x, targets, lam, update_obf, update_deobf, t.deobf_steps, people)
            self.step += 1
            n_img += len(idx)
            measured = {k: getattr(stats, k) for k in sums if not math.isnan(getattr(stats, k))}
            for k, v in measured.items():
                sums[k] += v
                counts[k] += 1
            bar.update(1)
            bar.set_postfix({k.replace("loss_", ""): f"{sums[k] / counts[k]:.4f}" for k in sums if counts[k]})
            if writer is not None and self.step % t.log_every == 0:
                for k, v in measured.items():
                    writer.add_scalar(f"step/{k}", v, self.step)
                writer.add_scalar("step/lam", lam, self.step)
        bar.close()
        return {k: (sums[k] / counts[k] if counts[k] else float("nan")) for k in sums}, n_img

    def _validate(self, epoch: int, row: dict[str, Any]) -> bool:
        """Validate into `row`; True when this epoch is the best so far (and `best_score` moves to it)."""
        cfg = self.cfg
        # every rank validates (same frames, same weights): torchmetrics syncs its state across the group
        val = evaluate(self.obf, self._eval_detector(), self.val_frames, self.val_targets, self.device,
                       cfg.eval.batch_size, cfg.eval.ssim_frames, self.deobf)
        row.update({f"val_{k}": v for k, v in val.items()})
        score = best_score(val["ap50"], val["ssim"], cfg.eval.ssim_target, epoch + 1, cfg.eval.min_ap50)
        if score <= self.best_score:
            return False
        self.best_score = score
        return True

    def _write_row(self, row: dict[str, Any], writer: Any, epoch: int) -> None:
        """Append the epoch's row to metrics.csv (rewriting later rows of a resumed run) and to TensorBoard."""
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
