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
    recon_scratch: bool = False  # the reconstruction U-Net without its identity start
    reid_epochs: int | None = None
    face_detectors: list[str] | None = None  # None = every one usable here
    face_clips: list[str] | None = None  # --clips: None = the shared Intel face clips
    utility: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    threads: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu

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
        pair = getattr(args, "pair", None)
        if pair:
            from silhouette.detectors.adapt import pair_detector

            pair_detector(pair)  # the pair must be whole before its obfuscator is attacked
            if str(pair).endswith(".json"):
                from silhouette.detectors.adapt import read_pair

                spec = read_pair(pair)["baseline"]
                raise SilhouetteError(f"--pair {pair}: a fine-tuned baseline leaves the camera's frames as the baseline "
                                      f"makes them; attack it as --methods {spec}")
        if args.methods or pair:
            methods = ([f"private={pair}"] if pair else []) + (_csv(args.methods) if args.methods else [])
        else:
            from silhouette.models.checkpoint import DEFAULT_CHECKPOINT

            has_ours = args.checkpoint is not None or Path(DEFAULT_CHECKPOINT).is_file()
            methods = (["ours"] if has_ours else []) + ["clean"] + _csv(
                ",".join(f"{k}:{v:g}" for k, v in DEFAULT_PARAMS.items()))
        if not methods:
            raise SilhouetteError("--methods: empty list")
        seen: dict[str, str] = {}
        for m in methods:
            name = parse_method(m, args.checkpoint, check_only=True).name
            if name in seen:
                raise SilhouetteError(f"--methods: {m!r} and {seen[name]!r} are both {name}; give each method once")
            seen[name] = m
        device = getattr(args, "device", None) or "auto"
        resolve_device(device)  # a cuda request on a machine without CUDA fails here, before any work
        dets = None if args.face_detectors in (None, "auto") else _csv(args.face_detectors)
        face_clips = _face_clips(getattr(args, "clips", None), attacks)
        utility: dict[str, dict[str, Any]] = {}
        for spec in args.utility:
            if "=" in spec:
                name, _, path = spec.partition("=")
                utility[name.strip()] = utility_from_evaluation(path)
            else:
                utility.update(load_utility(spec))
        return cls(data=data, methods=methods, attacks=attacks, out=Path(args.out), checkpoint=args.checkpoint,
                   quick=args.quick, epochs=args.epochs, recon_scratch=getattr(args, "recon_scratch", False),
                   reid_epochs=args.reid_epochs, face_detectors=dets, face_clips=face_clips,
                   utility=utility, progress=not args.no_progress, threads=args.threads, device=device)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _face_clips(given: list[str] | str | None, attacks: list[str]) -> list[str] | None:
    """The --clips entries (repeatable, comma-separated), checked now so a bad path fails before any attack runs."""
    if not given:
        return None
    specs = [c for g in ([given] if isinstance(given, str) else given) for c in _csv(g)]
    if not specs:
        raise SilhouetteError("--clips: empty list")
    if "faces" not in attacks:
        raise SilhouetteError("--clips is the footage of the faces attack; add faces to --attacks or drop --clips")
    from silhouette.privacy.faces import resolve_footage

    resolve_footage(specs)
    return specs


def resolve_device(name: str | None) -> torch.device:
    """'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N' -> torch.device; unusable CUDA is an error."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise SilhouetteError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu or auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SilhouetteError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    raise SilhouetteError(f"--device {name!r}: choose auto, cpu or cuda")


def _quantised(transform: Transform) -> Transform:
    # the frame leaves the camera as 8-bit pixels: every attack sees exactly that
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.round(transform(x).clamp(0, 1) * 255) / 255

    return fn


OURS_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _ours_spec(spec: str) -> tuple[str, str | None]:
    """'ours' -> ('ours', None); 'ours:LABEL=PATH' -> ('ours:LABEL', PATH); anything else 'ours...' is an error."""
    if spec == "ours":
        return "ours", None
    label, eq, path = spec[len("ours:"):].partition("=")
    label, path = label.strip(), path.strip()
    if not spec.startswith("ours:") or not eq or not path or not OURS_LABEL.fullmatch(label):
        raise SilhouetteError(f"--methods {spec!r}: expected 'ours' or ours:LABEL=PATH with LABEL of letters, digits, . _ -"
                              " (e.g. ours:lam10=runs/lam10/best.pt)")
    return f"ours:{label}", path


def _ours_transform(model: torch.nn.Module, device: torch.device) -> Transform:
    # the frozen obfuscator runs on the attack device; callers get CPU frames back, as from every other method
    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x.to(device)).float().cpu()

    return fn


def parse_method(spec: str, checkpoint: str | None, check_only: bool = False,
                 device: str | torch.device = "cpu") -> Method:
    """'ours', 'ours:LABEL=PATH', 'clean' or 'family[:param]' -> Method with its frozen transform.

    'ours' uses `checkpoint` (None = the shipped default); 'ours:LABEL=PATH' the obfuscator in PATH, in a row
    named ours:LABEL. `device` is where an obfuscator runs; with `check_only` a checkpoint is only read.
    """
    from silhouette.evaluation.baselines import get_baseline

    name = spec.strip()
    if name == "clean":
        return Method("clean", "clean", None, lambda x: x)
    learned = name.startswith("private=") or name == "ours" or name.startswith(("ours:", "ours="))
    if name.startswith("private="):  # the obfuscator of a private pair (`attack --pair`), in a row named private
        mname, path, checkpoint = "private", None, name.partition("=")[2]
    elif learned:
        mname, path = _ours_spec(name)
    if learned:
        ckpt = path if path is not None else checkpoint
        if path is not None and not Path(path).is_file():
            raise SilhouetteError(f"--methods {spec!r}: obfuscator checkpoint {path} not found")
        if check_only:
            if path is not None:
                from silhouette.models.checkpoint import read_checkpoint

                if "obfuscator" not in read_checkpoint(path):
                    raise SilhouetteError(f"--methods {spec!r}: checkpoint {path} holds no obfuscator")
            return Method(mname, "ours", ckpt, lambda x: x)
        from silhouette.models.checkpoint import load_obfuscator

        model = load_obfuscator(ckpt)
        for p in model.parameters():
            p.requires_grad_(False)
        dev = torch.device(device)
        transform: Transform = model if dev.type == "cpu" else _ours_transform(model.to(dev), dev)
        return Method(mname, "ours", str(ckpt) if ckpt else "default checkpoint", transform)
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
        transform = lambda x: base.apply(x, value, seed=next(counter))  # noqa: E731
    else:
        transform = lambda x: base.apply(x, value)  # noqa: E731
    return Method(f"{base.name}:{value:g}", base.name, base.describe(value), transform)


def method_source(spec: str, checkpoint: str | None) -> dict[str, Any] | None:
    """What a method's cached results depend on beyond its name: the obfuscator file's SHA-256 for ours rows."""
    import hashlib

    from silhouette.paths import DEFAULT_CHECKPOINT

    name = spec.strip()
    if not (name == "ours" or name.startswith("ours:")):
        return None
    _, path = _ours_spec(name)
    ckpt = Path(path or checkpoint or DEFAULT_CHECKPOINT)
    h = hashlib.sha256()
    with open(ckpt, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"checkpoint": str(ckpt), "sha256": h.hexdigest()}


def same_source(cached: dict[str, Any] | None, now: dict[str, Any] | None) -> bool:
    """Cached results still hold: the same obfuscator file by content (wherever it lies now), or no file at all."""
    if cached is None or now is None:
        return cached is now
    return cached.get("sha256") == now.get("sha256")


def utility_for(utility: dict[str, dict[str, Any]], method: Method, spec: str, specs: list[str]) -> dict[str, Any] | None:
    """The utility entry of one method: by its name (ours:LABEL, blur:2), its spec, else its family if it is alone in it."""
    alone = sum(parse_family(m) == method.family for m in specs) == 1
    return utility.get(method.name) or utility.get(spec) or (utility.get(method.family) if alone else None)


def parse_family(spec: str) -> str:
    """Family of a method spec (ours:lam10=... -> ours, blur:2 -> blur)."""
    return spec.strip().partition(":")[0].partition("=")[0]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _evenly(n: int, k: int | None) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


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


def uint8_frames(ds: Any, idx: list[int]) -> torch.Tensor:
    """Frames `idx` of a FrameDataset as one uint8 stack (the float frames are exactly these / 255)."""
    return torch.stack([ds[i]["image"].mul(255).round().to(torch.uint8) for i in idx])


def _floats(frames: torch.Tensor) -> Iterator[torch.Tensor]:
    for f in frames:
        yield f.float() / 255


def gt_boxes(ds: Any, idx: list[int]) -> list[torch.Tensor] | None:
    """Ground-truth person boxes per frame (pets2009), or None when the dataset has none (no person-region scores)."""
    boxes = [torch.tensor(ds.records[i].get("gt_boxes") or [], dtype=torch.float32).reshape(-1, 4) for i in idx]
    return boxes if any(len(b) for b in boxes) else None


def _setup_device(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        # fixed crop sizes: let cuDNN pick its fastest kernels once (fp32 throughout; no autocast)
        torch.backends.cudnn.benchmark = True
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _face_setup(cfg: AttackConfig, notes: list[str]) -> tuple[list[Any], dict[str, list[torch.Tensor]], dict[str, Any]]:
    """The face detectors to run, the face footage's frames and its meta entry (which also names it in `notes`)."""
    from silhouette.privacy import faces as F_

    names = cfg.face_detectors
    if names is None:
        usable = F_.available_face_detectors()
        names = [n for n, why in usable.items() if not why]
        notes.extend(f"face detector {n} not run: {why}" for n, why in usable.items() if why)
        if not names:
            raise SilhouetteError("faces attack: no face detector can run here (" + "; ".join(usable.values()) + ")")
    detectors = [F_.build_face_detector(n) for n in names]
    footage = F_.resolve_footage(cfg.face_clips)
    clips = F_.load_footage(footage, every=5 if cfg.quick else 1)
    summary = F_.footage_summary(footage, clips)
    meta = {"clips": list(clips), "footage": summary, "iou_threshold": F_.DEFAULT_IOU,
            "resolution": F_.frame_sizes([f for frames in clips.values() for f in frames]),
            "haar_merge_iou": F_.HAAR_MERGE_IOU, "detectors": [d.name for d in detectors]}
    # the scorecard must say whose faces these numbers are about: the shared Intel clips or the user's footage
    notes.append("face attack footage: " + "; ".join(
        f"{f.describe()}, {s['frames']} frame{'s' * (s['frames'] != 1)} at {s['resolution']}" for f, s in zip(footage, summary)))
    return detectors, clips, meta


def _save_row(path: Path, row: dict[str, Any]) -> None:
    """Cache one method's results, with the provenance of the run that last changed them."""
    from silhouette.fileio import write_json
    from silhouette.provenance import provenance

    write_json(path, {**row, "provenance": provenance()})


def run_attacks(cfg: AttackConfig) -> dict[str, Path]:
    """Run every requested attack on every method (cached per method in out/methods/), then write the scorecard."""
    import dataclasses
    import time

    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.fileio import read_json
    from silhouette.privacy import faces as F_
    from silhouette.privacy import reconstruction as R
    from silhouette.privacy import reid as I
    from silhouette.privacy.scorecard import write_scorecard

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    train_ds, test_ds = FrameDataset(cfg.data, "train"), FrameDataset(cfg.data, "test")
    recipe = R.QUICK_RECIPE if cfg.quick else R.ReconstructionRecipe()
    if cfg.epochs:
        recipe = dataclasses.replace(recipe, epochs=cfg.epochs)
    if cfg.recon_scratch:
        recipe = dataclasses.replace(recipe, residual=False)
    reid_recipe = I.QUICK_REID if cfg.quick else I.ReIDRecipe()
    if cfg.reid_epochs:
        reid_recipe = I.ReIDRecipe(**{**reid_recipe.to_dict(), "crop": reid_recipe.crop, "epochs": cfg.reid_epochs})
    ref_params = reference_deobfuscator_params(cfg.checkpoint)
    recon_train_idx = _evenly(len(train_ds), recipe.max_train_frames)
    recon_test_idx = _evenly(len(test_ds), recipe.max_test_frames)
    meta: dict[str, Any] = {"data": str(cfg.data), "quick": cfg.quick, "attacks": cfg.attacks,
                            "reconstruction_recipe": recipe.to_dict(), "reid_recipe": reid_recipe.to_dict(),
                            "deobfuscator_params": ref_params, "attacker_params": R.count_params(recipe.build()),
                            **_setup_device(device)}
    notes: list[str] = []
    seconds: dict[str, float] = {}

    recon_train = recon_test = None
    test_boxes = None
    if "reconstruction" in cfg.attacks:
        t0 = time.perf_counter()
        if len(recon_train_idx) == 0 or len(recon_test_idx) == 0:
            raise SilhouetteError(f"reconstruction attack: {cfg.data} needs frames in both its train and test splits")
        recon_train, recon_test = uint8_frames(train_ds, recon_train_idx), uint8_frames(test_ds, recon_test_idx)
        test_boxes = gt_boxes(test_ds, recon_test_idx)
        meta["scene_prior"] = R.scene_prior_floor(recon_train, recon_test, test_boxes)
        seconds["load_and_scene_prior"] = time.perf_counter() - t0
        log.info("zero-information floor (mean train frame): PSNR %.2f dB, SSIM %.3f", meta["scene_prior"]["psnr"],
                 meta["scene_prior"]["ssim"])

    detectors: list[Any] = []
    clips: dict[str, list[torch.Tensor]] = {}
    face_refs: dict[str, list[np.ndarray]] = {}
    if "faces" in cfg.attacks:
        detectors, clips, meta["faces"] = _face_setup(cfg, notes)

    reid_train: list[dict[str, Any]] = []
    reid_test: list[dict[str, Any]] = []
    reid_cache: dict[str, Any] = {}
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
        method = parse_method(spec, cfg.checkpoint, device=device)
        source = method_source(spec, cfg.checkpoint)
        cache_path = cfg.out / "methods" / f"{_safe(method.name)}.json"
        ckpt = cfg.out / "attackers" / f"reconstruction_{_safe(method.name)}.pt"
        row: dict[str, Any] = read_json(cache_path) if cache_path.is_file() else {}
        row.pop("provenance", None)  # the cache file's own, rewritten on every save
        if row and not same_source(row.get("source"), source):
            # the label now names another obfuscator: its old results and attacker say nothing about this one
            log.warning("%s: cached results are for another checkpoint; attacking again", method.name)
            row = {}
            ckpt.unlink(missing_ok=True)
        row.update({"method": method.name, "family": method.family, "setting": method.setting, "source": source})
        transform = _quantised(method.transform)
        deobf_params = reference_deobfuscator_params(method.setting) if (
            method.family == "ours" and method.name != "ours") else ref_params
        attacker = None
        if "reconstruction" in cfg.attacks:
            t0 = time.perf_counter()
            cached = row.get("reconstruction")
            if cached and cached.get("recipe") == recipe.to_dict() and ckpt.is_file():
                attacker, _ = R.load_attacker(ckpt)
                attacker = attacker.to(device)
                if test_boxes is not None and "person_psnr" not in cached.get("test", {}):
                    # results from before person-region scoring: score the stored attacker, no retraining
                    metrics, _ = R.evaluate_attacker(attacker, transform, list(_floats(recon_test)), boxes=test_boxes)
                    cached["test"].update({k: v for k, v in metrics.items() if k.startswith("person_")})
                    _save_row(cache_path, row)
            else:
                res, attacker = R.run_reconstruction_attack(
                    transform, _floats(recon_train), _floats(recon_test), recipe, ckpt,
                    method.name, cfg.progress, deobf_params, device=device, test_boxes=test_boxes)
                row["reconstruction"] = res
                _save_row(cache_path, row)
            seconds[f"{method.name}/reconstruction"] = time.perf_counter() - t0
            log.info("%s: reconstruction PSNR %.2f dB, SSIM %.3f", method.name, row["reconstruction"]["test"]["psnr"],
                     row["reconstruction"]["test"]["ssim"])
        elif ckpt.is_file():
            attacker = R.load_attacker(ckpt)[0].to(device)
        reconstructor = (lambda x, m=attacker: R.reconstruct(m, x)) if attacker is not None else None
        # the attacks on reconstructions depend on which attacker made them: a longer-trained one must rerun them
        made_by = ((row.get("reconstruction") or {}).get("recipe") or True) if attacker is not None else False
        if "faces" in cfg.attacks:
            t0 = time.perf_counter()
            # other footage, or Haar counts from before duplicate boxes were merged, must not be reused
            key = {"detectors": [d.name for d in detectors], "quick": cfg.quick, "reconstructed": made_by,
                   "footage": [s["path"] + (f"@{s['split']}" if s["split"] else "") for s in meta["faces"]["footage"]],
                   "haar_merge_iou": F_.HAAR_MERGE_IOU}
            if (row.get("faces") or {}).get("key") != key:
                row["faces"] = {"key": key, **F_.run_face_attack(detectors, clips, transform, reconstructor,
                                                                 references=face_refs)}
                _save_row(cache_path, row)
            seconds[f"{method.name}/faces"] = time.perf_counter() - t0
        if "reid" in cfg.attacks:
            t0 = time.perf_counter()
            key = {"recipe": reid_recipe.to_dict(), "quick": cfg.quick, "reconstructed": made_by}
            if (row.get("reid") or {}).get("key") != key:
                res, clean_reid = I.run_reid_attack(reid_train, reid_test, transform, reconstructor, reid_recipe,
                                                    clean_reid, method.name, cfg.progress, device=device,
                                                    cache=reid_cache)
                row["reid"] = {"key": key, **res}
                _save_row(cache_path, row)
            seconds[f"{method.name}/reid"] = time.perf_counter() - t0
        row["utility"] = utility_for(cfg.utility, method, spec, cfg.methods)
        rows.append(row)
    meta["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    if not cfg.utility:
        notes.append("utility columns empty: pass --utility (from `silhouette evaluate`) to fill person AP50 and count MAE")
    if cfg.quick:
        notes.append("--quick: tiny attackers and few frames; numbers are a smoke test, not a privacy claim")
    return write_scorecard(cfg.out, rows, meta, notes)
