"""ONNX export of the obfuscator (dynamic batch/H/W), the export cache, parity checks and static int8 quantisation.

Exporting needs torch and onnx (`silhouette[train]`); quantising an ONNX file needs onnx but no torch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from silhouette.edge.checkpoint import cache_dir, file_digest, load_torch_obfuscator, require_torch, resolve_model
from silhouette.errors import SilhouetteError
from silhouette.imaging import bgr_batch, resize_frame

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "obfuscated"
# Traced at a size that is NOT a multiple of the encoder stride so the pad-then-crop path is in the graph
# with shape-dependent amounts; at multiples of the stride it pads by zero.
TRACE_HW = (203, 317)
PARITY_SIZES: tuple[tuple[int, int], ...] = ((200, 320), (240, 416))
CALIB_RANGE = (0, 600)  # PETS frames used for int8 calibration ...
EVAL_RANGE = (600, 795)  # ... and held out for reporting int8 quality


def export_onnx(model, out: str | os.PathLike[str], opset: int = OPSET) -> Path:  # noqa: ANN001 - nn.Module
    """Export `model` to ONNX with dynamic batch, height and width; validated with onnx.checker."""
    torch = require_torch("exporting to ONNX")
    onnx = _require_onnx("exporting to ONNX")

    from silhouette.fileio import atomic_path

    if opset < 13:
        raise SilhouetteError(f"--opset {opset}: must be >= 13")
    out = Path(out)
    model = model.eval()
    x = torch.rand(1, 3, *TRACE_HW, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(out, suffix=".onnx") as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about the model's shape-dependent padding branch; the traced graph keeps it dynamic
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # dynamo=False on purpose: the TorchScript exporter needs no onnxscript and keeps H/W dynamic here
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (x,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        meta = {"producer": "silhouette", "preprocess": "float32 RGB [0,1] NCHW", "output": "obfuscated RGB [0,1] NCHW"}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return out


def parity(model, onnx_path: str | os.PathLike[str], sizes: Sequence[tuple[int, int]] = PARITY_SIZES, batch: int = 2) -> dict[str, float]:  # noqa: ANN001
    """Max |torch - onnxruntime| over random frames at each (H, W) in `sizes`."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(1)
    result: dict[str, float] = {}
    for h, w in sizes:
        x = torch.rand(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model.eval()(x).numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise SilhouetteError(f"{onnx_path}: output shape {got.shape} at {h}x{w} differs from torch {ref.shape}")
        result[f"{w}x{h}"] = float(np.abs(got - ref).max())
    return result


def pets_frames(start: int, stop: int, count: int, size: tuple[int, int] = (320, 200)) -> list[np.ndarray]:
    """`count` evenly spaced PETS-2009 frames from [start, stop), resized to size=(W, H), HxWx3 uint8 BGR."""
    from silhouette.data.sources import iter_frames
    from silhouette.paths import data_dir

    video = data_dir() / "pets2009" / "vtest.avi"
    if not video.is_file():
        raise SilhouetteError(f"{video}: PETS footage not found; it is needed for int8 calibration (see shared/data/README.md)")
    wanted = {int(i) for i in np.linspace(start, stop - 1, count).round()}
    frames = []
    for frame in iter_frames(str(video)):
        if frame.index >= stop:
            break
        if frame.index in wanted:
            frames.append(resize_frame(frame.image, size))
    return frames


def _frame_reader(frames: Iterable[np.ndarray], input_name: str):  # noqa: ANN202 - CalibrationDataReader
    """A CalibrationDataReader feeding the frames one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: bgr_batch([f])} for f in frames])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return FrameReader()


def quantize_int8(fp32_path: str | os.PathLike[str], out: str | os.PathLike[str], frames: Sequence[np.ndarray] | None = None) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, MinMax calibration on PETS frames) of an fp32 export."""
    import tempfile

    _require_onnx("int8 quantisation (--backend onnx-int8, export --int8)")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from silhouette.fileio import atomic_path

    if frames is None:
        frames = pets_frames(*CALIB_RANGE, count=32)
    if not frames:
        raise SilhouetteError("int8 calibration needs at least one frame")
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(out, suffix=".onnx") as tmp:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(tmp), _frame_reader(frames, INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
    return out


def int8_quality(
    model,  # noqa: ANN001 - nn.Module
    int8_path: str | os.PathLike[str],
    detector_name: str = "yolox_nano",
    frames: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Person AP50 of the detector on int8-obfuscated frames, against its detections on torch-obfuscated frames."""
    import onnxruntime as ort
    import torch

    from silhouette.detectors import create_detector
    from silhouette.evaluation.metrics import person_ap

    if frames is None:
        frames = pets_frames(*EVAL_RANGE, count=20)
    detector = create_detector(detector_name)
    sess = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    refs, preds, diffs = [], [], []
    for frame in frames:
        batch = bgr_batch([frame])
        with torch.inference_mode():
            a = model.eval()(torch.from_numpy(batch)).numpy()
        b = sess.run(None, {name: batch})[0]
        diffs.append(float(np.abs(a - b).mean()))
        refs += detector.predict(torch.from_numpy(a))
        preds += detector.predict(torch.from_numpy(b))
    ap = person_ap([p.persons() for p in preds], [r.persons() for r in refs])
    return {
        "detector": detector_name,
        "frames": len(frames),
        "ap50_vs_torch": ap["ap50"],
        "persons_torch": int(sum(len(r.persons()) for r in refs)),
        "persons_int8": int(sum(len(p.persons()) for p in preds)),
        "mean_abs_diff": float(np.mean(diffs)),
    }


def _require_onnx(what: str) -> Any:
    """The onnx module, or a one-line SilhouetteError saying how to get it."""
    try:
        import onnx
    except ImportError:
        raise SilhouetteError(f"{what} needs the onnx package, which is not installed: pip install 'silhouette[train]'") from None
    return onnx


def cached_onnx(checkpoint: str | os.PathLike[str] | None, int8: bool = False) -> Path:
    """The fp32 (or static int8) ONNX model to run: an .onnx as is, a .pt exported once and cached by content hash.

    Without a checkpoint it is the shipped .onnx, so the default (and its int8 quantisation) needs no torch."""
    src = resolve_model(checkpoint)
    is_onnx = src.suffix.lower() == ".onnx"
    if is_onnx and int8 and checkpoint is not None:  # it may be quantised already: never quantise twice
        raise SilhouetteError(f"--checkpoint {src} is already an ONNX file; quantise it with 'silhouette export --int8'")
    base = f"{src.stem}-{file_digest(src)}"
    fp32 = src if is_onnx else cache_dir() / f"{base}.onnx"
    if not fp32.is_file():
        export_onnx(load_torch_obfuscator(src), fp32)
    if not int8:
        return fp32
    q = cache_dir() / f"{base}-int8.onnx"
    if not q.is_file():
        quantize_int8(fp32, q)
    return q
