"""Which obfuscator file a camera command runs, where exports are cached, and the torch it may need."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from silhouette.errors import SilhouetteError
from silhouette.paths import DEFAULT_CHECKPOINT, DEFAULT_ONNX

ENV_CACHE = "SILHOUETTE_CACHE"


def cache_root() -> Path:
    """The camera's cache folder: $SILHOUETTE_CACHE, else $XDG_CACHE_HOME/silhouette (~/.cache/silhouette)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "silhouette"


def cache_dir() -> Path:
    """Where exported ONNX files are cached: <cache_root>/onnx."""
    return cache_root() / "onnx"


def resolve_checkpoint(checkpoint: str | os.PathLike[str] | None) -> Path:
    """The checkpoint path to use (the shipped .pt when None), with a clear error if it is missing."""
    if checkpoint is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise SilhouetteError(
                f"no default obfuscator shipped at {DEFAULT_CHECKPOINT}; train one ('silhouette train') and pass --checkpoint PATH"
            )
        return DEFAULT_CHECKPOINT
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SilhouetteError(f"--checkpoint {path}: file not found")
    return path


def resolve_model(checkpoint: str | os.PathLike[str] | None) -> Path:
    """The file an ONNX backend starts from: the shipped .onnx when None (no torch needed), else `checkpoint`."""
    if checkpoint is None and DEFAULT_ONNX.is_file():
        return DEFAULT_ONNX
    return resolve_checkpoint(checkpoint)


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (cache key for exports)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def require_torch(what: str, onnx: Path | None = None) -> Any:
    """The torch module, or a one-line SilhouetteError saying how to get it or which ONNX file runs without it."""
    try:
        import torch
    except ImportError:
        way_out = (f"pass its ONNX export instead (--checkpoint {onnx})" if onnx is not None and onnx.is_file() else
                   f"run the shipped ONNX obfuscator instead (the default without --checkpoint, or --checkpoint {DEFAULT_ONNX})")
        raise SilhouetteError(f"{what} needs PyTorch, which is not installed: pip install 'silhouette[train]', or {way_out}") from None
    return torch


def load_torch_obfuscator(checkpoint: Path) -> Any:
    """The obfuscator module (nn.Module) of a .pt checkpoint, in eval mode on the CPU."""
    require_torch(f"--checkpoint {checkpoint}", Path(checkpoint).with_suffix(".onnx"))
    from silhouette.models.checkpoint import load_obfuscator

    return load_obfuscator(str(checkpoint), device="cpu").eval()


def pair_id(checkpoint: str | os.PathLike[str], option: str = "--pair") -> str | None:
    """The id a private pair names itself by on the wire (None for a compatible obfuscator): a silhouette pair's
    pair.json is read without torch; any other pair is a .pt checkpoint."""
    from silhouette.silhouettes import read_silhouette_pair

    if Path(checkpoint).suffix == ".json":
        pair = read_silhouette_pair(checkpoint)
        if pair is None or "sha256" not in pair:
            raise SilhouetteError(f"{option} {checkpoint}: not a silhouette pair's pair.json (`silhouette finetune "
                                  "--baseline bgsub:mask`); a camera runs silhouette pairs and private .pt checkpoints")
        return str(pair["sha256"])[:16]
    require_torch(f"{option} {checkpoint}", Path(checkpoint).with_suffix(".onnx"))
    from silhouette.detectors.adapt import pair_id_of

    return pair_id_of(checkpoint)
