"""Fine-tuned baselines: the private pair's detector and budget, trained on the frames of a fixed classic obfuscation.

A co-trained detector can make plain blur or pixelation strong too; this gives every baseline the same chance as
private mode (same detector, targets, crops, epochs and learning rate), so the frontier compares like with like.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from silhouette.detectors.adapt import PAIR_FORMAT as FORMAT
from silhouette.errors import SilhouetteError
from silhouette.training.config import Config

log = logging.getLogger(__name__)


class Finetuner:
    """One fine-tuning run in `out`: `run()` trains (or resumes) and writes detector.onnx and pair.json."""

    def __init__(self, cfg: Config, baseline: str, out: str | Path, resume: bool = False, progress: bool = True) -> None:
        from silhouette.detectors import create_detector
        from silhouette.detectors.adapt import trainable_detector
        from silhouette.evaluation.silhouettes import make_transform
        from silhouette.training.frames import concat, load_frame_set, load_sources
        from silhouette.training.rng import seed_everything

        self.cfg, self.out, self.progress = cfg, Path(out), progress
        roots = [cfg.data.root, *(r for r, _ in cfg.data.extra_sources())]
        self.transform = make_transform(baseline, roots, exclude=cfg.data.exclude_cameras)
        last = self.out / "last.pt"
        if last.exists() and not resume:
            raise SilhouetteError(f"{self.out} already holds a fine-tuning run; pass --resume or choose another --out")
        if resume and not last.exists():
            raise SilhouetteError(f"--resume: {last} not found; start without --resume")
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        root, d = Path(cfg.data.root), cfg.data
        self.train_sources = load_sources(d, root)
        self.train_frames = concat([frames for _, _, frames in self.train_sources])
        self.val_frames = load_frame_set(root, d.val_split, d.val_stride, d.max_val_frames, d.exclude_cameras)
        self.label_detector = create_detector(cfg.detector.spec)
        self.train_frames.labels, self.val_targets = self._targets(root)
        self.detector = trainable_detector(cfg.detector.spec)
        self.opt = torch.optim.AdamW(self.detector.torch_model().parameters(), lr=cfg.detector.lr,
                                     weight_decay=cfg.train.weight_decay)
        self.start_epoch, self.history = 0, []
        if resume:
            self._load(last)

    def _targets(self, root: Path) -> tuple[list, list]:
        """Train and val targets: human boxes, or the unmodified detector's boxes on the clean frames."""
        from silhouette.training.frames import gt_targets, pseudo_labels, source_labels

        c = self.cfg
        if c.detector.targets == "gt":
            return gt_targets(self.train_frames, root, c.data.train_split), gt_targets(self.val_frames, root, c.data.val_split)
        thr = c.detector.score_threshold
        return (source_labels(self.train_sources, c.detector.spec, thr),
                pseudo_labels(root, self.val_frames, c.detector.spec, thr, c.data.val_split))

    def _batch(self, idx: list[int], gen: torch.Generator) -> tuple[torch.Tensor, list]:
        """Cropped/flipped clean frames through the baseline, with targets moved along (as the trainer does)."""
        from silhouette.training.augment import crop_and_flip
        from silhouette.training.frames import gt_crop_targets, person_targets

        d = self.cfg.data
        x = self.train_frames.batch(idx)
        # silhouettes need the whole frame against the camera's background (and its light: no photometric jitter);
        # the clean frame rides along as channels 3-5 so the detector labels exactly the same crop
        frame_level = getattr(self.transform, "frame_level", False)
        if frame_level:
            with torch.no_grad():
                x = torch.cat([self.transform(x), x], dim=1)
        photometric = 0.0 if frame_level else d.photometric
        geometry: list[tuple[int, int, bool]] = []
        x = crop_and_flip(x, d.crop, d.hflip, gen, photometric, geometry) if (d.crop or d.hflip or photometric) else x
        seen, x = (x[:, 3:], x[:, :3]) if frame_level else (x, x)
        if not geometry:
            targets = [self.train_frames.labels[i] for i in idx]
        elif self.cfg.detector.targets == "gt":
            targets = gt_crop_targets(self.train_frames, idx, geometry, x.shape[-2:])
        else:
            with torch.no_grad():
                targets = person_targets(self.label_detector.predict(seen), self.cfg.detector.score_threshold)
        with torch.no_grad():
            return (x if frame_level else self.transform(x)), targets

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training frames, then validation AP50 of the exported detector."""
        from tqdm import tqdm

        from silhouette.training.engine import check_loss

        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch * 7919)
        order = torch.randperm(len(self.train_frames), generator=gen).tolist()
        bs = self.cfg.train.batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        start, total = time.time(), 0.0
        for idx in tqdm(batches, desc=f"fine-tune {self.transform.spec} {epoch + 1}/{self.cfg.train.epochs}",
                        disable=not self.progress, leave=False):
            x, targets = self._batch(idx, gen)
            loss = self.detector.loss(x, targets)["loss"]
            check_loss("detector loss", float(loss.detach()), self.cfg.train.max_loss)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
        row = {"epoch": epoch + 1, "loss_det": total / max(1, len(batches)), "epoch_s": round(time.time() - start, 2)}
        row.update({f"val_{k}": v for k, v in self._validate().items()})
        return row

    def _validate(self) -> dict[str, float]:
        """AP50 on the validation frames of the detector as it would be served (exported to ONNX)."""
        from silhouette.detectors import create_detector
        from silhouette.training.validation import evaluate

        path = self.out / "val.detector.onnx"
        self.detector.export_onnx(path)
        det = create_detector(self.cfg.detector.spec, weights=str(path), conf_threshold=self.cfg.eval.conf_threshold)
        val = evaluate(self.transform, det, self.val_frames, self.val_targets, torch.device("cpu"),
                       self.cfg.eval.batch_size, ssim_frames=1)
        return {"ap50": val["ap50"], "ap": val["ap"], "count_threshold": val["count_threshold"], "count_mae": val["count_mae"]}

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs (each saved atomically, so a killed run resumes) and write the pair."""
        self.out.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, self.cfg.train.epochs):
            row = self._epoch(epoch)
            self.history.append(row)
            self._save(self.out / "last.pt", epoch + 1)
            log.info("fine-tune %s epoch %d: %s", self.transform.spec, epoch + 1, row)
        return self._write_pair()

    def _save(self, path: Path, epoch: int) -> None:
        from silhouette.fileio import atomic_path
        from silhouette.training.rng import rng_state

        state = {"format": FORMAT, "baseline": self.transform.spec, "detector": self.cfg.detector.spec,
                 "epoch": epoch, "history": self.history, "config": self.cfg.to_dict(), "rng": rng_state(),
                 "state_dict": self.detector.torch_model().state_dict(), "optimizer": self.opt.state_dict()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def _load(self, path: Path) -> None:
        from silhouette.models.checkpoint import safe_torch_load
        from silhouette.training.rng import set_rng_state

        state = safe_torch_load(path, "fine-tuning checkpoint")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise SilhouetteError(f"--resume: {path} is not a fine-tuning checkpoint")
        if (state["baseline"], state["detector"]) != (self.transform.spec, self.cfg.detector.spec):
            raise SilhouetteError(f"--resume: {path} fine-tuned {state['detector']} on {state['baseline']}; keep the run's options")
        self.detector.torch_model().load_state_dict(state["state_dict"])
        self.opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.start_epoch, self.history = int(state["epoch"]), list(state["history"])

    def _write_pair(self) -> dict[str, Any]:
        """detector.onnx plus pair.json naming the baseline, the detector and the file's sha256."""
        from silhouette.fileio import write_json

        sha = self.detector.export_onnx(self.out / "detector.onnx")
        pair = {"format": FORMAT, "baseline": self.transform.spec, "detector": self.cfg.detector.spec,
                "file": "detector.onnx", "sha256": sha, "epochs": self.cfg.train.epochs, "history": self.history}
        if self.history:  # the adapted detector counts at the threshold its last validation chose
            pair["conf_threshold"] = float(self.history[-1]["val_count_threshold"])
        from silhouette.provenance import provenance

        write_json(self.out / "pair.json", {**pair, "provenance": provenance()})
        return pair
