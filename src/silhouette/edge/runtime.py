"""Obfuscator runners: ONNX Runtime (the camera's default, no torch) or PyTorch (the reference), behind one call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from silhouette.edge.checkpoint import file_digest, load_torch_obfuscator, require_torch, resolve_checkpoint
from silhouette.edge.export import cached_onnx
from silhouette.errors import SilhouetteError

BACKENDS = ("onnx", "onnx-int8", "torch")


class Runner(Protocol):
    """Maps a float32 [B,3,H,W] RGB batch in [0,1] to the obfuscated batch (same shape, float32)."""

    backend: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """Runs the obfuscator with PyTorch (reference backend)."""

    backend = "torch"

    def __init__(self, model: Any, threads: int | None = None, path: Path | None = None) -> None:
        torch = require_torch("--backend torch")
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.eval()
        self.path = path  # the checkpoint the model came from (names the obfuscator on the wire)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


class OnnxRunner:
    """Runs an exported obfuscator with ONNX Runtime (the fast edge path)."""

    def __init__(
        self, path: str | os.PathLike[str], threads: int | None = None, backend: str = "onnx", spinning: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        if spinning is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt/unsupported files
            raise SilhouetteError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)
        self.backend = backend

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_runner(checkpoint: str | os.PathLike[str] | None = None, backend: str = "onnx", threads: int | None = None) -> Runner:
    """An obfuscator runner for `backend` (onnx, onnx-int8 or torch); without a checkpoint the shipped .onnx runs."""
    if backend not in BACKENDS:
        raise SilhouetteError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if checkpoint is not None and Path(checkpoint).suffix == ".json":
        from silhouette.silhouettes import pair_runner, read_silhouette_pair

        if read_silhouette_pair(checkpoint) is None:
            raise SilhouetteError(f"{checkpoint}: not a silhouette pair's pair.json; a camera runs silhouette pairs, "
                                  "obfuscator checkpoints (.pt) and their ONNX exports")
        try:
            return pair_runner(checkpoint)  # no network: each camera learns its own background
        except ValueError as exc:
            raise SilhouetteError(str(exc)) from None
    if backend == "torch":
        require_torch("--backend torch")
        ckpt = resolve_checkpoint(checkpoint)
        if ckpt.suffix.lower() == ".onnx":
            raise SilhouetteError(f"--checkpoint {ckpt} is an ONNX file; use --backend onnx")
        return TorchRunner(load_torch_obfuscator(ckpt), threads, ckpt)
    # no spinning: ORT's idle pool threads would otherwise busy-wait on the cores the decode/encode threads need
    return OnnxRunner(cached_onnx(checkpoint, int8=backend == "onnx-int8"), threads, backend, spinning=False)


def obfuscator_id(runner: Any) -> str | None:
    """What X-Silhouette-Obfuscator says: the first 16 hex of the SHA-256 of the model file `runner` runs (None: no file)."""
    path = getattr(runner, "path", None)
    return file_digest(Path(path)) if path is not None and Path(path).is_file() else None
