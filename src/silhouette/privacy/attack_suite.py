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

from silhouette.devices import resolve_device
from silhouette.errors import SilhouetteError
from silhouette.models.cost import count_params

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
                # silhouettes need their camera's background, which the attack's methods do not carry
                how = ("run experiments/silhouette_floor.py, which attacks both silhouette styles" if spec.startswith("bgsub:")
                       else f"attack it as --methods {spec}")
                raise SilhouetteError(f"--pair {pair}: a fine-tuned baseline leaves the camera's frames as the baseline "
                                      f"makes them; {how}")
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


def _recipes(cfg: AttackConfig) -> tuple[Any, Any]:
    """The reconstruction and re-ID recipes of this run (quick or full, with the epoch and scratch overrides)."""
    import dataclasses

    from silhouette.privacy import reconstruction as R
    from silhouette.privacy import reid as I

    recipe = R.QUICK_RECIPE if cfg.quick else R.ReconstructionRecipe()
    if cfg.epochs:
        recipe = dataclasses.replace(recipe, epochs=cfg.epochs)
    if cfg.recon_scratch:
        recipe = dataclasses.replace(recipe, residual=False)
    reid_recipe = I.QUICK_REID if cfg.quick else I.ReIDRecipe()
    if cfg.reid_epochs:
        reid_recipe = I.ReIDRecipe(**{**reid_recipe.to_dict(), "crop": reid_recipe.crop, "epochs": cfg.reid_epochs})
    return recipe, reid_recipe


class AttackSuite:
    """One `silhouette attack` run: the frames and adversaries every method shares, then each method's attacks."""

    def __init__(self, cfg: AttackConfig) -> None:
        from silhouette.data.torch_dataset import FrameDataset

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        torch.manual_seed(0)
        self.train_ds, self.test_ds = FrameDataset(cfg.data, "train"), FrameDataset(cfg.data, "test")
        self.recipe, self.reid_recipe = _recipes(cfg)
        self.ref_params = reference_deobfuscator_params(cfg.checkpoint)
        self.meta: dict[str, Any] = {
            "data": str(cfg.data), "quick": cfg.quick, "attacks": cfg.attacks,
            "reconstruction_recipe": self.recipe.to_dict(), "reid_recipe": self.reid_recipe.to_dict(),
            "deobfuscator_params": self.ref_params, "attacker_params": count_params(self.recipe.build()),
            **_setup_device(self.device)}
        self.notes: list[str] = []
        self.seconds: dict[str, float] = {}
        self.recon_train: torch.Tensor | None = None
        self.recon_test: torch.Tensor | None = None
        self.test_boxes: list[torch.Tensor] | None = None
        self.detectors: list[Any] = []
        self.clips: dict[str, list[torch.Tensor]] = {}
        self.face_refs: dict[str, list[np.ndarray]] = {}
        self.reid_train: list[dict[str, Any]] = []
        self.reid_test: list[dict[str, Any]] = []
        self.reid_cache: dict[str, Any] = {}
        self.clean_reid: Any = None
        if "reconstruction" in cfg.attacks:
            self._load_reconstruction_frames()
        if "faces" in cfg.attacks:
            self.detectors, self.clips, self.meta["faces"] = _face_setup(cfg, self.notes)
        if "reid" in cfg.attacks:
            self._load_reid_frames()

    def _load_reconstruction_frames(self) -> None:
        """The evenly spaced train/test frames of the reconstruction attack and the zero-information floor on them."""
        import time

        from silhouette.privacy import reconstruction as R

        t0 = time.perf_counter()
        train_idx = _evenly(len(self.train_ds), self.recipe.max_train_frames)
        test_idx = _evenly(len(self.test_ds), self.recipe.max_test_frames)
        if len(train_idx) == 0 or len(test_idx) == 0:
            raise SilhouetteError(f"reconstruction attack: {self.cfg.data} needs frames in both its train and test splits")
        self.recon_train, self.recon_test = uint8_frames(self.train_ds, train_idx), uint8_frames(self.test_ds, test_idx)
        self.test_boxes = gt_boxes(self.test_ds, test_idx)
        floor = self.meta["scene_prior"] = R.scene_prior_floor(self.recon_train, self.recon_test, self.test_boxes)
        self.seconds["load_and_scene_prior"] = time.perf_counter() - t0
        log.info("zero-information floor (mean train frame): PSNR %.2f dB, SSIM %.3f", floor["psnr"], floor["ssim"])

    def _load_reid_frames(self) -> None:
        """The re-ID attack's train and test frames (every frame with identities, strided)."""
        cfg = self.cfg
        if not any(r.get("gt_ids") for r in self.test_ds.records):
            raise SilhouetteError(f"reid attack: {cfg.data} has no identity ids in its test split; use a pets2009 dataset")
        tr_stride, te_stride = (8, 2) if cfg.quick else (2, 1)
        self.reid_train = [self.train_ds[i] for i in range(0, len(self.train_ds), tr_stride)]
        self.reid_test = [self.test_ds[i] for i in range(0, len(self.test_ds), te_stride)]
        self.meta["reid_frames"] = {"train": len(self.reid_train), "test": len(self.reid_test),
                                    "train_stride": tr_stride, "test_stride": te_stride}

    def run(self) -> dict[str, Path]:
        """Attack every method (cached per method in out/methods/), then write the scorecard."""
        from silhouette.privacy.scorecard import write_scorecard

        cfg = self.cfg
        rows = [self._attack_method(spec) for spec in cfg.methods]
        self.meta["seconds"] = {k: round(v, 2) for k, v in self.seconds.items()}
        if not cfg.utility:
            self.notes.append("utility columns empty: pass --utility (from `silhouette evaluate`) to fill person AP50 and count MAE")
        if cfg.quick:
            self.notes.append("--quick: tiny attackers and few frames; numbers are a smoke test, not a privacy claim")
        return write_scorecard(cfg.out, rows, self.meta, self.notes)

    def _attack_method(self, spec: str) -> dict[str, Any]:
        """One method's scorecard row: each requested attack, reusing cached results that still apply."""
        from silhouette.privacy import reconstruction as R

        cfg = self.cfg
        method = parse_method(spec, cfg.checkpoint, device=self.device)
        cache_path = cfg.out / "methods" / f"{_safe(method.name)}.json"
        ckpt = cfg.out / "attackers" / f"reconstruction_{_safe(method.name)}.pt"
        row = self._cached_row(method, method_source(spec, cfg.checkpoint), cache_path, ckpt)
        transform = _quantised(method.transform)
        attacker = None
        if "reconstruction" in cfg.attacks:
            attacker = self._reconstruction(method, row, transform, cache_path, ckpt)
        elif ckpt.is_file():
            attacker = R.load_attacker(ckpt)[0].to(self.device)
        reconstructor = (lambda x, m=attacker: R.reconstruct(m, x)) if attacker is not None else None
        # the attacks on reconstructions depend on which attacker made them: a longer-trained one must rerun them
        made_by = ((row.get("reconstruction") or {}).get("recipe") or True) if attacker is not None else False
        if "faces" in cfg.attacks:
            self._faces(method, row, transform, reconstructor, made_by, cache_path)
        if "reid" in cfg.attacks:
            self._reid(method, row, transform, reconstructor, made_by, cache_path)
        row["utility"] = utility_for(cfg.utility, method, spec, cfg.methods)
        return row

    def _cached_row(self, method: Method, source: dict[str, Any] | None, cache_path: Path, ckpt: Path) -> dict[str, Any]:
        """The method's cached row, emptied (and its attacker deleted) when it was made for another checkpoint."""
        from silhouette.fileio import read_json

        row: dict[str, Any] = read_json(cache_path) if cache_path.is_file() else {}
        row.pop("provenance", None)  # the cache file's own, rewritten on every save
        if row and not same_source(row.get("source"), source):
            # the label now names another obfuscator: its old results and attacker say nothing about this one
            log.warning("%s: cached results are for another checkpoint; attacking again", method.name)
            row = {}
            ckpt.unlink(missing_ok=True)
        row.update({"method": method.name, "family": method.family, "setting": method.setting, "source": source})
        return row

    def _reconstruction(self, method: Method, row: dict[str, Any], transform: Transform, cache_path: Path,
                        ckpt: Path) -> Any:
        """Train (or reload) the reconstruction attacker and score it into `row`; returns the attacker."""
        import time

        from silhouette.privacy import reconstruction as R

        t0 = time.perf_counter()
        cached = row.get("reconstruction")
        if cached and cached.get("recipe") == self.recipe.to_dict() and ckpt.is_file():
            attacker = R.load_attacker(ckpt)[0].to(self.device)
            if self.test_boxes is not None and "person_psnr" not in cached.get("test", {}):
                # results from before person-region scoring: score the stored attacker, no retraining
                metrics, _ = R.evaluate_attacker(attacker, transform, list(_floats(self.recon_test)), boxes=self.test_boxes)
                cached["test"].update({k: v for k, v in metrics.items() if k.startswith("person_")})
                _save_row(cache_path, row)
        else:
            deobf_params = reference_deobfuscator_params(method.setting) if (
                method.family == "ours" and method.name != "ours") else self.ref_params
            res, attacker = R.run_reconstruction_attack(
                transform, _floats(self.recon_train), _floats(self.recon_test), self.recipe, ckpt,
                method.name, self.cfg.progress, deobf_params, device=self.device, test_boxes=self.test_boxes)
            row["reconstruction"] = res
            _save_row(cache_path, row)
        self.seconds[f"{method.name}/reconstruction"] = time.perf_counter() - t0
        log.info("%s: reconstruction PSNR %.2f dB, SSIM %.3f", method.name, row["reconstruction"]["test"]["psnr"],
                 row["reconstruction"]["test"]["ssim"])
        return attacker

    def _faces(self, method: Method, row: dict[str, Any], transform: Transform, reconstructor: Transform | None,
               made_by: Any, cache_path: Path) -> None:
        """The face-exposure attack into `row`, unless its cached result was made the same way."""
        import time

        from silhouette.privacy import faces as F_

        t0 = time.perf_counter()
        # other footage, or Haar counts from before duplicate boxes were merged, must not be reused
        key = {"detectors": [d.name for d in self.detectors], "quick": self.cfg.quick, "reconstructed": made_by,
               "footage": [s["path"] + (f"@{s['split']}" if s["split"] else "") for s in self.meta["faces"]["footage"]],
               "haar_merge_iou": F_.HAAR_MERGE_IOU}
        if (row.get("faces") or {}).get("key") != key:
            row["faces"] = {"key": key, **F_.run_face_attack(self.detectors, self.clips, transform, reconstructor,
                                                             references=self.face_refs)}
            _save_row(cache_path, row)
        self.seconds[f"{method.name}/faces"] = time.perf_counter() - t0

    def _reid(self, method: Method, row: dict[str, Any], transform: Transform, reconstructor: Transform | None,
              made_by: Any, cache_path: Path) -> None:
        """The re-identification attack into `row`, unless its cached result was made the same way."""
        import time

        from silhouette.privacy import reid as I

        t0 = time.perf_counter()
        key = {"recipe": self.reid_recipe.to_dict(), "quick": self.cfg.quick, "reconstructed": made_by}
        if (row.get("reid") or {}).get("key") != key:
            res, self.clean_reid = I.run_reid_attack(self.reid_train, self.reid_test, transform, reconstructor,
                                                     self.reid_recipe, self.clean_reid, method.name, self.cfg.progress,
                                                     device=self.device, cache=self.reid_cache)
            row["reid"] = {"key": key, **res}
            _save_row(cache_path, row)
        self.seconds[f"{method.name}/reid"] = time.perf_counter() - t0


def run_attacks(cfg: AttackConfig) -> dict[str, Path]:
    """Run every requested attack on every method (cached per method in out/methods/), then write the scorecard."""
    return AttackSuite(cfg).run()
