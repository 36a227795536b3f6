"""Orchestration of `silhouette attack`: build each method's transform, run the attacks, cache, write the scorecard."""

from __future__ import annotations

import argparse
import inspect
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from silhouette.errors import SilhouetteError

log = logging.getLogger(__name__)

ATTACKS = ("reconstruction", "faces", "reid")
DEFAULT_PARAMS = {"blur": 1.0, "noise": 0.02, "quantize": 15.0, "pixelate": 4.0}
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Method:
    """One row of the scorecard: a name, its family and setting, and the frozen frame transform."""

    name: str
    family: str
    setting: str | None
    transform: Transform


@dataclass
class AttackConfig:
    """Validated options of one `silhouette attack` run."""

    data: Path
    methods: list[str]
    attacks: list[str]
    out: Path
    checkpoint: str | None = None
    quick: bool = False
    epochs: int | None = None
    reid_epochs: int | None = None
    face_detectors: list[str] | None = None  # None = every one usable here
    utility: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    threads: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AttackConfig":
        """Check the command-line options; every mistake is a one-line SilhouetteError."""
        from silhouette.privacy.scorecard import load_utility, utility_from_evaluation

        attacks = _csv(args.attacks)
        bad = [a for a in attacks if a not in ATTACKS]
        if bad or not attacks:
            raise SilhouetteError(f"--attacks {args.attacks!r}: unknown {', '.join(bad) or 'empty list'}; choose from {', '.join(ATTACKS)}")
        for opt in ("epochs", "reid_epochs"):
            v = getattr(args, opt)
            if v is not None and v < 1:
                raise SilhouetteError(f"--{opt.replace('_', '-')} {v}: must be >= 1")
        data = Path(args.data)
        if not (data / "manifest.json").is_file():
            raise SilhouetteError(f"--data {data}: not a prepared dataset (no manifest.json); run `silhouette prepare pets2009 --out {data}`")
        if args.methods:
            methods = _csv(args.methods)
        else:
            from silhouette.models.checkpoint import DEFAULT_CHECKPOINT

            has_ours = args.checkpoint is not None or Path(DEFAULT_CHECKPOINT).is_file()
            methods = (["ours"] if has_ours else []) + ["clean"] + _csv(
                ",".join(f"{k}:{v:g}" for k, v in DEFAULT_PARAMS.items()))
        if not methods:
            raise SilhouetteError("--methods: empty list")
        for m in methods:
            parse_method(m, args.checkpoint, check_only=True)
        dets = None if args.face_detectors in (None, "auto") else _csv(args.face_detectors)
        utility: dict[str, dict[str, Any]] = {}
        for spec in args.utility:
            if "=" in spec:
                name, _, path = spec.partition("=")
                utility[name.strip()] = utility_from_evaluation(path)
            else:
                utility.update(load_utility(spec))
        return cls(data=data, methods=methods, attacks=attacks, out=Path(args.out), checkpoint=args.checkpoint,
                   quick=args.quick, epochs=args.epochs, reid_epochs=args.reid_epochs, face_detectors=dets,
                   utility=utility, progress=not args.no_progress, threads=args.threads)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _quantised(transform: Transform) -> Transform:
    # the frame leaves the camera as 8-bit pixels: every attack sees exactly that
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.round(transform(x).clamp(0, 1) * 255) / 255

    return fn


def parse_method(spec: str, checkpoint: str | None, check_only: bool = False) -> Method:
    """'ours', 'clean' or 'family[:param]' -> Method with its frozen transform."""
    from silhouette.evaluation.baselines import get_baseline

    name = spec.strip()
    if name == "clean":
        return Method("clean", "clean", None, lambda x: x)
    if name == "ours":
        if check_only:
            return Method("ours", "ours", checkpoint, lambda x: x)
        from silhouette.models.checkpoint import load_obfuscator

        model = load_obfuscator(checkpoint)
        for p in model.parameters():
            p.requires_grad_(False)
        return Method("ours", "ours", str(checkpoint) if checkpoint else "default checkpoint", model)
    family, _, param = name.partition(":")
    base = get_baseline(family.strip())
    try:
        value = float(param) if param else DEFAULT_PARAMS.get(base.name, base.weakest())
    except ValueError as exc:
        raise SilhouetteError(f"--methods {spec!r}: expected METHOD:NUMBER, e.g. blur:2 (or 'ours', 'clean')") from exc
    if not base.low <= value <= base.high:
        raise SilhouetteError(f"--methods {spec!r}: {base.param} must be within [{base.low:g}, {base.high:g}]")
    if "seed" in inspect.signature(base.apply).parameters:
        # a fresh noise draw per call: a fixed pattern would let the attacker learn and subtract it
        counter = itertools.count(1)
        transform: Transform = lambda x: base.apply(x, value, seed=next(counter))  # noqa: E731
    else:
        transform = lambda x: base.apply(x, value)  # noqa: E731
    return Method(f"{base.name}:{value:g}", base.name, base.describe(value), transform)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _evenly(n: int, k: int | None) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _images(ds: Any, idx: list[int]) -> Iterator[torch.Tensor]:
    for i in idx:
        yield ds[i]["image"]


def reference_deobfuscator_params(checkpoint: str | None) -> int:
    """Parameters of the training-time deobfuscator (the checkpoint's, else the paper-sized preset)."""
    from silhouette.models.autoencoder import build_deobfuscator
    from silhouette.privacy.reconstruction import count_params

    if checkpoint:
        try:
            from silhouette.models.checkpoint import load_deobfuscator

            return count_params(load_deobfuscator(checkpoint))
        except SilhouetteError:
            pass
    return count_params(build_deobfuscator())


def run_attacks(cfg: AttackConfig) -> dict[str, Path]:
    """Run every requested attack on every method (cached per method in out/methods/), then write the scorecard."""
    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.fileio import read_json, write_json
    from silhouette.privacy import faces as F_
    from silhouette.privacy import reconstruction as R
    from silhouette.privacy import reid as I
    from silhouette.privacy.scorecard import write_scorecard

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    train_ds, test_ds = FrameDataset(cfg.data, "train"), FrameDataset(cfg.data, "test")
    recipe = R.QUICK_RECIPE if cfg.quick else R.ReconstructionRecipe()
    if cfg.epochs:
        recipe = R.ReconstructionRecipe.from_dict({**recipe.to_dict(), "epochs": cfg.epochs})
    reid_recipe = I.QUICK_REID if cfg.quick else I.ReIDRecipe()
    if cfg.reid_epochs:
        reid_recipe = I.ReIDRecipe(**{**reid_recipe.to_dict(), "crop": reid_recipe.crop, "epochs": cfg.reid_epochs})
    ref_params = reference_deobfuscator_params(cfg.checkpoint)
    recon_train_idx = _evenly(len(train_ds), recipe.max_train_frames)
    recon_test_idx = _evenly(len(test_ds), recipe.max_test_frames)
    meta: dict[str, Any] = {"data": str(cfg.data), "quick": cfg.quick, "attacks": cfg.attacks,
                            "reconstruction_recipe": recipe.to_dict(), "reid_recipe": reid_recipe.to_dict(),
                            "deobfuscator_params": ref_params, "attacker_params": R.count_params(recipe.build())}
    notes: list[str] = []

    detectors: list[Any] = []
    clips: dict[str, list[torch.Tensor]] = {}
    if "faces" in cfg.attacks:
        names = cfg.face_detectors
        if names is None:
            usable = F_.available_face_detectors()
            names = [n for n, why in usable.items() if not why]
            for n, why in usable.items():
                if why:
                    notes.append(f"face detector {n} not run: {why}")
            if not names:
                raise SilhouetteError("faces attack: no face detector can run here (" + "; ".join(usable.values()) + ")")
        detectors = [F_.build_face_detector(n) for n in names]
        clips = F_.load_face_clips(every=5 if cfg.quick else 1)
        meta["faces"] = {"clips": list(clips), "resolution": "native 480x270", "iou_threshold": F_.DEFAULT_IOU,
                         "detectors": [d.name for d in detectors]}

    reid_train: list[dict[str, Any]] = []
    reid_test: list[dict[str, Any]] = []
    clean_reid: Any = None
    if "reid" in cfg.attacks:
        if not any(r.get("gt_ids") for r in test_ds.records):
            raise SilhouetteError(f"reid attack: {cfg.data} has no identity ids in its test split; use a pets2009 dataset")
        tr_stride, te_stride = (8, 2) if cfg.quick else (2, 1)
        reid_train = [train_ds[i] for i in range(0, len(train_ds), tr_stride)]
        reid_test = [test_ds[i] for i in range(0, len(test_ds), te_stride)]
        meta["reid_frames"] = {"train": len(reid_train), "test": len(reid_test), "train_stride": tr_stride, "test_stride": te_stride}

    rows: list[dict[str, Any]] = []
    for spec in cfg.methods:
        method = parse_method(spec, cfg.checkpoint)
        cache_path = cfg.out / "methods" / f"{_safe(method.name)}.json"
        row: dict[str, Any] = read_json(cache_path) if cache_path.is_file() else {}
        row.update({"method": method.name, "family": method.family, "setting": method.setting})
        transform = _quantised(method.transform)
        ckpt = cfg.out / "attackers" / f"reconstruction_{_safe(method.name)}.pt"
        attacker = None
        if "reconstruction" in cfg.attacks:
            cached = row.get("reconstruction")
            if cached and cached.get("recipe") == recipe.to_dict() and ckpt.is_file():
                attacker, _ = R.load_attacker(ckpt)
            else:
                res, attacker = R.run_reconstruction_attack(
                    transform, _images(train_ds, recon_train_idx), _images(test_ds, recon_test_idx), recipe, ckpt,
                    method.name, cfg.progress, ref_params)
                row["reconstruction"] = res
                write_json(cache_path, row)
            log.info("%s: reconstruction PSNR %.2f dB, SSIM %.3f", method.name, row["reconstruction"]["test"]["psnr"],
                     row["reconstruction"]["test"]["ssim"])
        elif ckpt.is_file():
            attacker, _ = R.load_attacker(ckpt)
        reconstructor = (lambda x, m=attacker: R.reconstruct(m, x)) if attacker is not None else None
        if "faces" in cfg.attacks:
            key = {"detectors": [d.name for d in detectors], "quick": cfg.quick, "reconstructed": reconstructor is not None}
            if (row.get("faces") or {}).get("key") != key:
                row["faces"] = {"key": key, **F_.run_face_attack(detectors, clips, transform, reconstructor)}
                write_json(cache_path, row)
        if "reid" in cfg.attacks:
            key = {"recipe": reid_recipe.to_dict(), "quick": cfg.quick, "reconstructed": reconstructor is not None}
            if (row.get("reid") or {}).get("key") != key:
                res, clean_reid = I.run_reid_attack(reid_train, reid_test, transform, reconstructor, reid_recipe,
                                                    clean_reid, method.name, cfg.progress)
                row["reid"] = {"key": key, **res}
                write_json(cache_path, row)
        row["utility"] = cfg.utility.get(method.name) or cfg.utility.get(spec) or (
            cfg.utility.get(method.family) if sum(m.split(":")[0] == method.family for m in cfg.methods) == 1 else None)
        rows.append(row)
    if not cfg.utility:
        notes.append("utility columns empty: pass --utility (from `silhouette evaluate`) to fill person AP50 and count MAE")
    if cfg.quick:
        notes.append("--quick: tiny attackers and few frames; numbers are a smoke test, not a privacy claim")
    return write_scorecard(cfg.out, rows, meta, notes)
