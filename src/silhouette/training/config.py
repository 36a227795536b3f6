"""Training configuration: YAML -> validated dataclasses; every bad key or value is a SilhouetteError."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silhouette.errors import SilhouetteError

if typing.TYPE_CHECKING:
    from silhouette.training.augment import CameraJitter


WARMUP_TARGETS = ("identity", "fold")
MODES = ("compatible", "private")
TARGETS = ("pseudo", "gt")


@dataclass
class DataConfig:
    """Which frames to train and validate on."""

    dataset: str = "pets2009"  # registered dataset name, prepared on first use
    root: str = "runs/data/pets2009"  # prepared dataset folder (manifest.json + frames)
    train_split: str = "train"
    val_split: str = "val"
    frame_stride: int = 1  # keep every k-th training frame (consecutive frames are near-duplicates)
    max_train_frames: int = 0  # 0 = all
    max_val_frames: int = 0  # 0 = all
    val_stride: int = 1  # keep every k-th validation frame
    crop: list[int] = field(default_factory=list)  # [H, W] random training crops; [] = whole frames
    hflip: bool = False  # random horizontal flips (boxes flipped too)
    photometric: float = 0.0  # strength s of random brightness/contrast/gamma/colour jitter; 0 = off
    # camera diversity (augment.CameraJitter): zoom/aspect strength, blur odds, noise std, JPEG odds; 0 = off
    scale_jitter: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0
    # more prepared datasets whose frames join the training set, each 'DIR' (its train split) or 'DIR:SPLIT'
    # ('DIR:all' = every split); their targets are the detector's boxes, so they need detector.targets: pseudo
    extra_roots: list[str] = field(default_factory=list)
    exclude_cameras: list[str] = field(default_factory=list)  # cameras kept out of training and validation
    max_per_camera: int = 0  # at most N evenly spaced training frames per camera, so no source dominates; 0 = all
    num_workers: int = 0

    def camera_jitter(self) -> "CameraJitter":
        """The camera-diversity augmentation these settings ask for."""
        from silhouette.training.augment import CameraJitter

        return CameraJitter(self.scale_jitter, self.blur, self.noise, self.jpeg)

    def extra_sources(self) -> list[tuple[str, str | None]]:
        """(root, split or None for every split) of each data.extra_roots entry."""
        out = []
        for entry in self.extra_roots:
            root, _, split = entry.rpartition(":") if ":" in entry else (entry, "", "train")
            out.append((root, None if split == "all" else split))
        return out


@dataclass
class DetectorConfig:
    """The detector that supplies L_det and the pseudo-labels: frozen (compatible mode) or co-trained (private mode)."""

    spec: str = "fasterrcnn_resnet50_fpn"  # name or ensemble 'a+b*0.5'
    score_threshold: float = 0.5  # pseudo-label threshold on clean frames
    eval_spec: str = ""  # detector used for validation AP; '' = same as spec
    lr: float = 2e-4  # private mode: AdamW learning rate of the co-trained detector
    targets: str = "pseudo"  # 'pseudo': the original detector's boxes on clean frames; 'gt': human boxes (PETS)


@dataclass
class ModelConfig:
    """Obfuscator and deobfuscator architectures (registry names + keyword overrides)."""

    obfuscator: str = "obf_paper"
    obfuscator_kwargs: dict[str, Any] = field(default_factory=dict)
    deobfuscator: str = "deobf_paper"
    deobfuscator_kwargs: dict[str, Any] = field(default_factory=dict)
    # start from a trained checkpoint's weights instead of the warm start (e.g. to add output_levels to the default)
    init_from: str = ""


@dataclass
class TrainConfig:
    """Optimisation of the alternating game."""

    epochs: int = 30
    batch_size: int = 8
    lr_obf: float = 1e-2
    lr_deobf: float = 1e-3
    weight_decay: float = 1e-4
    lr_step_epochs: int = 10  # every N epochs ...
    lr_decay_obf: float = 0.01  # ... multiply the obfuscator lr by this (paper: /100)
    lr_decay_deobf: float = 0.1  # ... and the deobfuscator lr by this (paper: /10)
    lam: float = 1.0  # λ, weight of the deobfuscator's MSE in the obfuscator loss
    lam_warmup_epochs: float = 0.0  # ramp λ linearly from 0 over this many epochs
    det_weight: float = 1.0  # weight of L_det in the obfuscator loss
    alternate: str = "batch"  # 'batch': both updates every batch; 'epoch': obf and deobf epochs alternate
    deobf_steps: int = 1  # deobfuscator updates per batch
    blank_weight: float = 0.0  # β: L1 pull of the obfuscated frame towards flat grey (the silhouette prior)
    reid_weight: float = 0.0  # γ: identity confusion of a co-trained re-ID classifier on person crops (needs GT ids)
    lr_reid: float = 1e-3  # learning rate of that co-trained re-ID classifier
    face_weight: float = 0.0  # weight of the face adversary: MTCNN P-Net face scores on the obfuscated frame
    warmup_steps: int = 0  # warm-start: fit the obfuscator to `warmup_target` for N batches before the game
    warmup_target: str = "identity"  # identity | fold (the pointwise 2·min(x, 1−x): not invertible)
    warmup_lr: float = 1e-2
    warmup_schedule: str = "linear"  # warm-start lr: 'linear' decay to 0 (a sharper fit) or 'constant'
    warmup_crop: list[int] = field(default_factory=list)  # [H, W] crops for the warm start; [] = data.crop
    warmup_batch_size: int = 0  # 0 = train.batch_size
    grad_clip: float = 0.0  # 0 = off
    max_loss: float = 1e4  # |loss| above this (or NaN/inf) stops the run
    amp: bool = True  # autocast on CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    log_every: int = 10  # batches between CSV/TensorBoard step logs


@dataclass
class EvalConfig:
    """Per-epoch validation."""

    every: int = 1  # epochs
    batch_size: int = 8
    ssim_frames: int = 16  # frames used for the SSIM estimate (0 = all val frames)
    conf_threshold: float = 0.05  # detector score threshold for AP predictions (low, as in COCO evaluation)
    ssim_target: float = 0.45  # best.pt: highest AP50 among epochs with SSIM <= this, else highest AP50 - SSIM
    # best.pt, when set: the most trained epoch with AP50 >= this (and SSIM <= ssim_target), so a privacy term that
    # keeps working after detection peaks is not rolled back to its first epoch; epochs below it rank as before
    min_ap50: float | None = None


@dataclass
class Config:
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    # 'compatible': the paper's game against an unmodified detector; 'private': the cloud detector is trained on the
    # obfuscated frames too, so the camera may discard what identifies people (the run saves an obfuscator/detector pair)
    mode: str = "compatible"
    data: DataConfig = field(default_factory=DataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (YAML/JSON/checkpoint friendly)."""
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Cross-field checks; returns self."""
        t, d = self.train, self.data
        checks = [
            (t.epochs >= 1, "train.epochs: must be >= 1"),
            (t.batch_size >= 1, "train.batch_size: must be >= 1"),
            (t.lr_obf > 0 and t.lr_deobf > 0, "train.lr_obf / train.lr_deobf: must be > 0"),
            (t.weight_decay >= 0, "train.weight_decay: must be >= 0"),
            (t.lr_step_epochs >= 1, "train.lr_step_epochs: must be >= 1"),
            (t.lam >= 0, "train.lam: must be >= 0"),
            (t.alternate in ("batch", "epoch"), f"train.alternate: expected 'batch' or 'epoch', got {t.alternate!r}"),
            (t.deobf_steps >= 1, "train.deobf_steps: must be >= 1"),
            (t.blank_weight >= 0, "train.blank_weight: must be >= 0"),
            (t.reid_weight >= 0, "train.reid_weight: must be >= 0"),
            (t.lr_reid > 0, "train.lr_reid: must be > 0"),
            (t.warmup_lr > 0, "train.warmup_lr: must be > 0"),
            (self.mode in MODES, f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.detector.lr > 0, "detector.lr: must be > 0"),
            (self.detector.targets in TARGETS, f"detector.targets: expected one of {', '.join(TARGETS)}, got {self.detector.targets!r}"),
            (t.face_weight >= 0, "train.face_weight: must be >= 0"),
            (t.lr_decay_obf >= 0 and t.lr_decay_deobf >= 0, "train.lr_decay_obf / train.lr_decay_deobf: must be >= 0"),
            (t.grad_clip >= 0, "train.grad_clip: must be >= 0 (0 = off)"),
            (t.threads >= 0, "train.threads: must be >= 0 (0 = torch's default)"),
            (t.log_every >= 1, "train.log_every: must be >= 1"),
            (self.eval.batch_size >= 1, "eval.batch_size: must be >= 1"),
            (self.eval.ssim_frames >= 0, "eval.ssim_frames: must be >= 0 (0 = all)"),
            (t.warmup_steps >= 0, "train.warmup_steps: must be >= 0"),
            (t.warmup_target in WARMUP_TARGETS, f"train.warmup_target: expected one of {', '.join(WARMUP_TARGETS)}, got {t.warmup_target!r}"),
            (0 <= self.eval.conf_threshold <= 1, "eval.conf_threshold: must lie in [0, 1]"),
            (t.max_loss > 0, "train.max_loss: must be > 0"),
            (d.frame_stride >= 1, "data.frame_stride: must be >= 1"),
            (d.val_stride >= 1, "data.val_stride: must be >= 1"),
            (len(t.warmup_crop) in (0, 2) and all(v > 0 for v in t.warmup_crop), f"train.warmup_crop: expected [] or [H, W], got {t.warmup_crop}"),
            (t.warmup_schedule in ("linear", "constant"), f"train.warmup_schedule: expected 'linear' or 'constant', got {t.warmup_schedule!r}"),
            (t.warmup_batch_size >= 0, "train.warmup_batch_size: must be >= 0"),
            (len(d.crop) in (0, 2) and all(v > 0 for v in d.crop), f"data.crop: expected [] or [H, W], got {d.crop}"),
            (0 <= d.photometric < 1, f"data.photometric: expected a strength in [0, 1), got {d.photometric}"),
            (0 <= d.scale_jitter < 1, f"data.scale_jitter: expected a strength in [0, 1), got {d.scale_jitter}"),
            (0 <= d.blur <= 1, f"data.blur: expected a probability in [0, 1], got {d.blur}"),
            (0 <= d.noise < 0.5, f"data.noise: expected a noise std in [0, 0.5), got {d.noise}"),
            (0 <= d.jpeg <= 1, f"data.jpeg: expected a probability in [0, 1], got {d.jpeg}"),
            (d.max_per_camera >= 0, "data.max_per_camera: must be >= 0 (0 = all)"),
            (all(r.rpartition(":")[0] != "" or ":" not in r for r in d.extra_roots) and all(d.extra_roots),
             f"data.extra_roots: expected entries 'DIR' or 'DIR:SPLIT', got {d.extra_roots}"),
            (not (d.extra_roots and self.detector.targets == "gt"),
             "data.extra_roots: their frames have no human boxes for detector.targets gt; use detector.targets: pseudo"),
            (not (d.scale_jitter and (self.detector.targets == "gt" or t.reid_weight)),
             "data.scale_jitter: zoomed frames lose their human boxes (detector.targets gt, train.reid_weight); set it to 0"),
            (0 <= self.detector.score_threshold <= 1, "detector.score_threshold: must lie in [0, 1]"),
            (self.eval.every >= 1, "eval.every: must be >= 1"),
            (self.eval.min_ap50 is None or 0 <= self.eval.min_ap50 <= 1, "eval.min_ap50: must be null or lie in [0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SilhouetteError(msg)
        return self


def _float_or_none(value: Any) -> float | None:
    """A number as float (YAML reads '1e-2' without a dot as a string), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # `X | None`: null, or a value of X
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, inner[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SilhouetteError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SilhouetteError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = _float_or_none(value)
        if number is None:
            raise SilhouetteError(f"{key}: expected a number, got {value!r}")
        # YAML reads .inf and .nan as floats; no setting means anything with them, and they only fail later
        if not math.isfinite(number):
            raise SilhouetteError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise SilhouetteError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise SilhouetteError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SilhouetteError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise SilhouetteError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SilhouetteError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in fields:
            import difflib

            close = difflib.get_close_matches(str(k), fields, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise SilhouetteError(f"{key}: unknown key{hint}; valid keys: {', '.join(prefix + f for f in fields)}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, f"{key}.")
        else:
            kwargs[k] = _coerce(v, tp, key)
    return cls(**kwargs)


def config_from_dict(data: Any) -> Config:
    """Validate a plain dict (e.g. parsed YAML) into a Config."""
    return _build(Config, data, "").validate()


def _parse_override(item: str) -> tuple[list[str], Any]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SilhouetteError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply dotted `key=value` overrides (values parsed as YAML) to a config dict."""
    for item in overrides or []:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SilhouetteError(f"--set {item!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply overrides, validate."""
    from silhouette.fileio import read_yaml

    data = read_yaml(path, "config") or {}
    if not isinstance(data, dict):
        raise SilhouetteError(f"config {path}: top level must be a mapping")
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except SilhouetteError as exc:
        raise SilhouetteError(f"config {path}: {exc}") from exc


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from silhouette.fileio import write_yaml

    write_yaml(path, cfg.to_dict())


_ = types  # keep the import for typing.get_type_hints on 3.10 unions
