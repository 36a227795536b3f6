"""Evaluate an obfuscator (or any image transform) on a prepared dataset with one or more detectors.

Protocol (paper §3.1): the detector's own person boxes on the clean frame are the targets
("pseudo-labels"); person AP of the same detector on the obfuscated frame against them is the
*relative* AP. Where the dataset has human ground truth (PETS 2009), absolute AP on clean and on
obfuscated frames is reported as well, plus per-frame person-count errors and the similarity of
obfuscated frames to the originals.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError

Transform = Callable[[torch.Tensor], torch.Tensor]
# Predictions for AP are kept down to this score so the precision/recall curve is not cut at the
# detector's operating threshold (COCO practice); pseudo-labels use the operating threshold.
PRED_THRESHOLD = 0.05


@dataclass
class FrameSelection:
    """Which frames of a prepared dataset to evaluate on."""

    root: Path
    split: str | None = "test"
    cameras: list[str] | None = None
    max_frames: int | None = None  # evenly spaced subsample
    stride: int = 1

    def describe(self) -> str:
        """Short human label."""
        parts = [self.root.name]
        if self.split:
            parts.append(self.split)
        if self.cameras:
            parts.append("+".join(self.cameras))
        return " / ".join(parts)


def open_frames(sel: FrameSelection) -> tuple[Any, list[int]]:
    """The FrameDataset of `sel` and the indices chosen by stride/max_frames."""
    from silhouette.data import FrameDataset

    if not Path(sel.root).exists():
        raise SilhouetteError(f"{sel.root}: dataset folder not found; prepare it with `silhouette prepare DATASET --out {sel.root}`")
    if sel.stride < 1:
        raise SilhouetteError(f"frame stride must be >= 1, got {sel.stride}")
    ds = FrameDataset(sel.root, split=sel.split, cameras=sel.cameras)
    idx = list(range(0, len(ds), sel.stride))
    if sel.max_frames is not None:
        if sel.max_frames < 1:
            raise SilhouetteError(f"max_frames must be >= 1, got {sel.max_frames}")
        if len(idx) > sel.max_frames:
            # evenly spaced so a subsample still spans the whole clip (and every camera)
            idx = [idx[round(i * (len(idx) - 1) / max(1, sel.max_frames - 1))] for i in range(sel.max_frames)]
            idx = sorted(set(idx))
    if not idx:
        raise SilhouetteError(f"{sel.describe()}: no frames to evaluate")
    return ds, idx


def load_selection(sel: FrameSelection) -> tuple[torch.Tensor, list[Detections | None], list[str]]:
    """The frames of `sel` as one float [N,3,H,W] tensor, their GT (None where not annotated) and file names."""
    ds, idx = open_frames(sel)
    images, gts, files = [], [], []
    for i in idx:
        item = ds[i]
        images.append(item["image"])
        gts.append(_gt_detections(ds.records[i], item))
        files.append(item["file"])
    return torch.stack(images), gts, files


def _gt_detections(record: Mapping[str, Any], item: Mapping[str, Any]) -> Detections | None:
    if record.get("gt_boxes") is None:
        return None
    boxes = item["gt_boxes"].float().reshape(-1, 4)
    n = boxes.shape[0]
    return Detections(boxes, torch.ones(n), torch.zeros(n, dtype=torch.int64))


def as_transform(obfuscator: nn.Module | Transform | None) -> Transform:
    """A no-grad callable images -> images in [0,1]; None is the identity (clean frames)."""
    if obfuscator is None:
        return lambda x: x
    if isinstance(obfuscator, nn.Module):
        obfuscator.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return obfuscator(x).clamp(0.0, 1.0)

    return run


def detector_available(spec: str) -> tuple[bool, str]:
    """Whether `spec` can run here without downloading anything, and why not."""
    from silhouette.detectors.registry import DETECTORS, detector_names

    names = detector_names()
    for part in spec.split("+"):
        name = part.split("*")[0].strip()
        if name not in names:
            DETECTORS.get(name)  # raises the did-you-mean error
        factory = DETECTORS.get(name)
        describe = getattr(factory, "describe", None)
        info = describe() if describe is not None else factory().info()
        if not info.weights_present:
            return False, f"{name}: weights not present ({info.weights})"
    return True, ""


def available_detectors(include_torchvision: bool = True) -> tuple[list[str], dict[str, str]]:
    """Registered detectors that can run here, and the skipped ones with the reason."""
    from silhouette.detectors.registry import detector_names

    ok, skipped = [], {}
    for name in detector_names():
        avail, why = detector_available(name)
        if avail:
            ok.append(name)
        else:
            skipped[name] = why
    if not include_torchvision:
        from silhouette.detectors.torchvision_family import MODELS

        ok = [n for n in ok if n not in MODELS]
    return ok, skipped


def make_detector(spec: str | Detector) -> Detector:
    """Build a detector by spec, refusing those whose weights would have to be downloaded."""
    if isinstance(spec, Detector):
        return spec
    from silhouette.detectors.registry import create_detector

    avail, why = detector_available(spec)
    if not avail:
        raise SilhouetteError(f"detector {spec!r} cannot run here: {why}")
    return create_detector(spec)


def threshold_adjustable(det: Detector) -> bool:
    """Whether `det` re-reads a plain `conf_threshold` attribute on every call (single zoo/torchvision detectors)."""
    # ensembles predict through a member, so changing their own attribute would change nothing
    return not hasattr(det, "members") and "conf_threshold" in vars(det)


@contextlib.contextmanager
def prediction_threshold(det: Detector, threshold: float | None) -> Iterator[float]:
    """Temporarily lower the detector's score threshold for AP; yields its operating threshold."""
    operating = float(getattr(det, "conf_threshold", 0.0))
    adjustable = threshold is not None and threshold_adjustable(det)
    if adjustable:
        det.conf_threshold = float(threshold)  # type: ignore[assignment]
    try:
        yield operating
    finally:
        if adjustable:
            det.conf_threshold = operating  # type: ignore[assignment]


@dataclass
class _Acc:
    """One detector's predictions on the clean and on the obfuscated frames."""

    clean: list[Detections] = field(default_factory=list)
    obf: list[Detections] = field(default_factory=list)


@dataclass
class _Pass:
    """What one pass over the frames collects: predictions per detector, GT per frame, similarity per frame."""

    acc: dict[str, _Acc]
    gts: list[Detections | None] = field(default_factory=list)
    sims: list[dict[str, float]] = field(default_factory=list)
    operating: dict[str, float] = field(default_factory=dict)  # each detector's operating threshold
    ref_operating: dict[str, float] = field(default_factory=dict)  # each reference detector's


def _named_detectors(detectors: Sequence[str | Detector] | Mapping[str, str | Detector]) -> dict[str, Detector]:
    """Detectors by report name: the mapping's keys, else each spec (or the detector's name)."""
    if isinstance(detectors, Mapping):
        dets = {str(k): make_detector(d) for k, d in detectors.items()}
    else:
        dets = {(d if isinstance(d, str) else getattr(d, "name", type(d).__name__)): make_detector(d) for d in detectors}
    if not dets:
        raise SilhouetteError("no detectors to evaluate with")
    return dets


def _predict_frames(ds: Any, idx: list[int], transform: Transform, dets: Mapping[str, Detector],
                    refs: Mapping[str, Detector], batch_size: int, pred_threshold: float | None,
                    progress: bool, desc: str) -> _Pass:
    """Obfuscate the frames batch by batch and collect every detector's predictions on clean and obfuscated frames."""
    from tqdm import tqdm

    from silhouette.data import collate_frames
    from silhouette.evaluation.metrics import similarity

    out = _Pass({name: _Acc() for name in dets})
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, idx), batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_frames
    )
    with contextlib.ExitStack() as stack:
        for name, det in dets.items():
            out.operating[name] = stack.enter_context(prediction_threshold(det, pred_threshold))
        out.ref_operating = {name: stack.enter_context(prediction_threshold(det, pred_threshold)) for name, det in refs.items()}
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            images = batch["image"]
            obf = transform(images)
            if obf.shape != images.shape:
                raise SilhouetteError(f"the obfuscator changed the frame shape {tuple(images.shape)} -> {tuple(obf.shape)}")
            out.sims.extend(similarity(a, b) for a, b in zip(images, obf))
            for j, k in enumerate(batch["index"].tolist()):
                out.gts.append(_gt_detections(ds.records[k], {"gt_boxes": batch["gt_boxes"][j]}))
            with torch.no_grad():
                for name, det in dets.items():
                    out.acc[name].clean.extend(refs.get(name, det).predict(images))
                    out.acc[name].obf.extend(det.predict(obf))
    return out


def _detector_row(name: str, det: Detector, ref: Detector | None, run: _Pass, label_threshold: float | None,
                  pred_threshold: float | None) -> dict[str, Any]:
    """One detector's relative AP, boxes found, count errors and (on annotated frames) AP against GT."""
    from silhouette.evaluation.metrics import boxes_found, count_error, person_ap

    a = run.acc[name]
    thr = run.operating[name] if label_threshold is None else float(label_threshold)
    # clean frames are labelled by whoever saw them: a reference detector at its own operating threshold
    label_thr = run.ref_operating.get(name, thr) if label_threshold is None else thr
    pseudo = [d.persons(label_thr) for d in a.clean]
    row: dict[str, Any] = {
        "label_threshold": label_thr,
        "pred_threshold": pred_threshold if pred_threshold is not None and threshold_adjustable(det)
        else run.operating[name],
        "pseudo_boxes": int(sum(len(p) for p in pseudo)),
        "pseudo_found": boxes_found(a.obf, pseudo, min_score=thr),  # at the operating threshold, IoU >= 0.5
        "relative": person_ap(a.obf, pseudo),
        "count": {"obf_vs_clean": count_error(a.obf, pseudo, min_score=thr)},
        "gt": None,
    }
    if ref is not None:
        row["clean_detector"] = getattr(ref, "name", str(ref))
    annotated = [i for i, g in enumerate(run.gts) if g is not None]
    if annotated:
        g = [run.gts[i] for i in annotated]
        row["gt"] = {
            "clean": person_ap([a.clean[i] for i in annotated], g),
            "obfuscated": person_ap([a.obf[i] for i in annotated], g),
        }
        row["count"]["clean_vs_gt"] = count_error([a.clean[i] for i in annotated], g, min_score=label_thr)
        row["count"]["obf_vs_gt"] = count_error([a.obf[i] for i in annotated], g, min_score=thr)
    return row


def evaluate_obfuscator(
    obfuscator_or_transform: nn.Module | Transform | None,
    dataset_root: str | Path,
    split: str | None = "test",
    detectors: Sequence[str | Detector] | Mapping[str, str | Detector] = ("fastestdet",),
    *,
    cameras: Sequence[str] | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    batch_size: int = 8,
    pred_threshold: float | None = PRED_THRESHOLD,
    label_threshold: float | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    reference: Mapping[str, str | Detector] | None = None,
) -> dict[str, Any]:
    """Per-detector relative AP (vs clean pseudo-labels), absolute AP vs GT, count errors, and similarity.

    `label_threshold` None uses each detector's own operating threshold for its pseudo-labels. `reference` maps a
    detector name to another detector that labels (and is scored on) the clean frames: a private pair's co-trained
    detector is judged against the unmodified detector's boxes on the originals.
    """
    sel = FrameSelection(Path(dataset_root), split, list(cameras) if cameras else None, max_frames, stride)
    ds, idx = open_frames(sel)
    transform = as_transform(obfuscator_or_transform)
    dets = _named_detectors(detectors)
    refs = {str(k): make_detector(d) for k, d in (reference or {}).items()}
    run = _predict_frames(ds, idx, transform, dets, refs, batch_size, pred_threshold, progress, desc)
    return {
        "dataset": str(sel.root),
        "split": split,
        "cameras": sel.cameras,
        "frames": len(idx),
        "annotated_frames": sum(g is not None for g in run.gts),
        "similarity": {k: float(sum(s[k] for s in run.sims) / len(run.sims)) for k in run.sims[0]},
        "detectors": {name: _detector_row(name, det, refs.get(name), run, label_threshold, pred_threshold)
                      for name, det in dets.items()},
    }


def format_evaluation(result: Mapping[str, Any]) -> str:
    """A plain-text table of `evaluate_obfuscator` output."""
    # AP alone hides missed people: beside it, how many clean-frame boxes the obfuscated frame still finds at the
    # operating threshold, and whether the counts run low (negative bias) or high
    head = (f"{'detector':<24} {'relAP50':>8} {'relAP':>7} {'pseudo':>7} {'found%':>7} {'countMAE':>9} {'bias':>6} "
            f"{'gtAP50 clean':>13} {'gtAP50 obf':>11}")
    split = "all" if result["split"] is None else result["split"]
    lines = [f"{result['dataset']} split={split} frames={result['frames']} "
             f"(annotated {result['annotated_frames']})", head, "-" * len(head)]
    for name, r in result["detectors"].items():
        gt = r["gt"] or {}
        count = r["count"]["obf_vs_clean"]
        boxes = r.get("pseudo_boxes")
        found = r.get("pseudo_found")
        lines.append(
            f"{name:<24} {pct(r['relative']['ap50']):>8} {pct(r['relative']['ap']):>7} "
            f"{'—' if boxes is None else boxes:>7} {pct(found / boxes if found is not None and boxes else None):>7} "
            f"{num(count['mae'], 2):>9} {signed(count.get('bias'), 2):>6} "
            f"{pct(gt.get('clean', {}).get('ap50')):>13} {pct(gt.get('obfuscated', {}).get('ap50')):>11}"
        )
    lines += ["pseudo = clean-frame person boxes (the targets); found% = those matched (IoU >= 0.5) on the obfuscated",
              "frames at the operating threshold; bias = mean (obfuscated - clean) persons per frame"]
    s = result["similarity"]
    lines.append(f"similarity to the original: SSIM {num(s['ssim'], 4)}  MSE {num(s['mse'], 4)}  "
                 f"PSNR {num(s['psnr'], 2)} dB  NMI {num(s['nmi'], 4)}")
    return "\n".join(lines)


def signed(x: float | None, digits: int = 2) -> str:
    """A number with an explicit sign (+0.25, -1.60), '—' when undefined."""
    text = num(x, digits)
    return text if text in ("—", "∞") else f"{x:+.{digits}f}"


def pct(x: float | None) -> str:
    """A [0,1] score as a percentage, '—' when undefined."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def num(x: float | None, digits: int = 3) -> str:
    """A number with fixed decimals, '—' when undefined."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def jsonable(obj: Any) -> Any:
    """Replace NaN by None and ±inf by strings so the JSON is standard."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# -- cost ------------------------------------------------------------------------------------------------------


def model_cost(model: nn.Module, size: tuple[int, int]) -> dict[str, int]:
    """Parameters and MACs of one forward pass at `size` = (H, W)."""
    from silhouette.models import count_macs, count_params

    return {"params": int(count_params(model)), "macs": int(count_macs(model, size))}


def detector_cost(spec: str) -> dict[str, Any]:
    """Params and MACs of a detector at its own input size (ONNX: the onnx2torch module; torchvision: the architecture)."""
    from silhouette.detectors.registry import DETECTORS, detector_names

    if spec not in detector_names():
        DETECTORS.get(spec)
    from silhouette.detectors.onnx_zoo import ZOO
    from silhouette.detectors.torchvision_family import MODELS

    if spec in ZOO:
        det = make_detector(spec)
        s = int(ZOO[spec].preproc.size)
        net = det.torch_model()  # type: ignore[attr-defined]
        return {"model": spec, "input": f"{s}x{s}", **model_cost(net, (s, s)), "weights_present": True}
    if spec in MODELS:
        from silhouette.detectors.torchvision_family import build_model, describe

        # architecture only: counting MACs needs no trained weights, so nothing is downloaded
        net = build_model(spec, weights=None)
        tf = net.transform
        h, w = (200, 320)
        if tf.fixed_size is not None:
            size_txt = f"{tf.fixed_size[1]}x{tf.fixed_size[0]}"
        else:
            scale = min(tf.min_size[0] / min(h, w), tf.max_size / max(h, w))
            size_txt = f"{round(w * scale)}x{round(h * scale)} (resized from 320x200)"
        return {"model": spec, "input": size_txt, **model_cost(net, (h, w)),
                "weights_present": bool(describe(spec).weights_present)}
    raise SilhouetteError(f"detector {spec!r}: cost counting supports single zoo or torchvision detectors, not ensembles")
