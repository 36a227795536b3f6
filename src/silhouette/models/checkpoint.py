"""Checkpoint format: weights + model spec + training state, written atomically."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from silhouette.errors import SilhouetteError
from silhouette.fileio import atomic_path
from silhouette.paths import DEFAULT_CHECKPOINT

FORMAT = "silhouette-checkpoint/1"


def save_checkpoint(
    path: str | Path,
    *,
    obfuscator: nn.Module,
    obfuscator_spec: dict[str, Any],
    deobfuscator: nn.Module | None = None,
    deobfuscator_spec: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; `*_spec` = {"name": registry name, "kwargs": {...}} to rebuild the model.

    `extra` adds top-level entries (private mode: "mode", "pair" and the co-trained "detector")."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "obfuscator": {"spec": _with_arch(obfuscator_spec, obfuscator), "state_dict": _cpu_state(obfuscator)},
        "config": config or {},
        "epoch": epoch,
        "step": step,
        "metrics": metrics or {},
        "input": {"range": [0.0, 1.0], "layout": "NCHW", "channels": "RGB"},
    }
    if deobfuscator is not None:
        ckpt["deobfuscator"] = {"spec": _with_arch(deobfuscator_spec or {}, deobfuscator), "state_dict": _cpu_state(deobfuscator)}
    if training_state is not None:
        ckpt["training_state"] = training_state
    ckpt.update(extra or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def _with_arch(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The spec plus the fully resolved constructor arguments, so a checkpoint outlives preset changes."""
    arch = getattr(getattr(model, "module", model), "config", None)
    return {**spec, "arch": dict(arch)} if arch is not None else dict(spec)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # unwrap DDP
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """torch.load that can only rebuild tensors and plain containers: a pickled payload is refused before it runs."""
    path = Path(path)
    if not path.is_file():
        raise SilhouetteError(f"{what} {path}: file not found")
    try:
        # weights_only=True: the unpickler only knows tensors, dicts, lists, tuples, strings and numbers,
        # so a file carrying a code payload stops at its first foreign global instead of executing it
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the foreign global it stopped at; any other unpickling failure is plain damage
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise SilhouetteError(
                f"{what} {path}: refused, it holds Python objects other than tensors and plain data "
                "(a code payload, or a file from an old or foreign writer); nothing in it was run"
            ) from None
        raise SilhouetteError(f"{what} {path}: cannot be read, the file is corrupt or not a {what}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, TypeError, KeyError,
            IndexError, UnicodeDecodeError, MemoryError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SilhouetteError(f"{what} {path}: cannot be read, the file is corrupt or not a {what} ({reason})") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely, with a clear error for a missing, corrupt, unsafe or foreign file."""
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SilhouetteError(f"checkpoint {path}: not a silhouette checkpoint (expected format {FORMAT!r})")
    return ckpt


def build_from_entry(entry: dict[str, Any], path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild a model from a checkpoint entry {"spec": ..., "state_dict": ...}."""
    from silhouette.models.autoencoder import build_model

    from silhouette.models.autoencoder import MobileAutoencoder

    spec = entry.get("spec") if isinstance(entry, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("arch", {}), dict) or not isinstance(spec.get("kwargs", {}), dict):
        raise SilhouetteError(f"checkpoint {path}: its model entry is damaged (no model spec); re-export or retrain it")
    try:
        if "arch" in spec:
            model = MobileAutoencoder(**spec["arch"])
        else:
            model = build_model(spec.get("name", "autoencoder"), **spec.get("kwargs", {}))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # a damaged or foreign spec: an unknown argument or a value of the wrong type
        raise SilhouetteError(f"checkpoint {path}: its model spec is damaged ({str(exc).splitlines()[0][:160]})") from None
    try:
        model.load_state_dict(entry["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise SilhouetteError(f"checkpoint {path}: weights do not match model {spec.get('name')!r} ({reason})") from None
    return model


def load_obfuscator(path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The obfuscator of a checkpoint in eval mode; None = the shipped default."""
    if path is None:
        path = DEFAULT_CHECKPOINT
        if not path.is_file():
            raise SilhouetteError(
                f"the default obfuscator checkpoint {path} is not installed; pass --checkpoint PATH to a trained one"
            )
    model = build_from_entry(read_checkpoint(path).get("obfuscator"), path)
    return model.to(device).eval()


def load_deobfuscator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The training-time deobfuscator of a checkpoint, in eval mode."""
    ckpt = read_checkpoint(path)
    if "deobfuscator" not in ckpt:
        raise SilhouetteError(f"checkpoint {path}: holds no deobfuscator (it was saved for deployment only)")
    return build_from_entry(ckpt["deobfuscator"], path).to(device).eval()


def export_checkpoint(src: str | Path, dst: str | Path, keep_deobfuscator: bool = True) -> Path:
    """Copy a training checkpoint without its optimiser/RNG state (for shipping); written atomically."""
    ckpt = read_checkpoint(src)
    ckpt.pop("training_state", None)
    if not keep_deobfuscator:
        ckpt.pop("deobfuscator", None)
    ckpt["exported_from"] = str(src)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(ckpt, tmp)
    return dst
