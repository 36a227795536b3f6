"""The paper's tables and figures as functions: each returns a `Section` (markdown + data + figure files).

Every function takes a `Context` (output folder, frame subsampling, caches) and its own options;
inputs that do not exist yet (an untrained checkpoint, a detector without weights) make the
section say "not run: <reason>" instead of inventing numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError
from silhouette.evaluation.evaluate import (
    PRED_THRESHOLD,
    FrameSelection,
    available_detectors,
    evaluate_obfuscator,
    load_selection,
    make_detector,
    num,
    pct,
    prediction_threshold,
)

FRAME_SIZE = (200, 320)  # (H, W): the paper's frame size, used when no test set fixes one
FEW_BOXES = 20  # below this many pseudo-label boxes a relative AP is flagged as unstable in the report


@dataclass
class Section:
    """One table or figure of the report."""

    key: str
    title: str
    caption: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # file names inside the report folder
    data: dict[str, Any] = field(default_factory=dict)
    not_run: str | None = None

    def markdown(self) -> str:
        """The section as Markdown (heading, caption, table, figures, notes)."""
        out = [f"## {self.title}", ""]
        if self.caption:
            out += [self.caption, ""]
        if self.not_run:
            out += [f"**not run: {self.not_run}**", ""]
        if self.columns and self.rows:
            out.append("| " + " | ".join(self.columns) + " |")
            out.append("|" + "|".join("---" for _ in self.columns) + "|")
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
            out.append("")
        for fig in self.figures:
            out += [f"![{self.title}]({fig})", ""]
        for note in self.notes:
            out.append(f"- {note}")
        if self.notes:
            out.append("")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form for metrics.json."""
        return {"title": self.title, "not_run": self.not_run, "columns": self.columns, "rows": self.rows,
                "notes": self.notes, "figures": self.figures, "data": self.data}


@dataclass
class TestSet:
    """A named frame selection (dataset folder + split/cameras) used by the tables."""

    name: str
    root: Path
    split: str | None = "test"
    cameras: list[str] | None = None
    label: str = ""

    def display(self) -> str:
        """Label shown in tables."""
        return self.label or self.name


@dataclass
class Loaded:
    """A checkpoint's models and training config."""

    path: Path
    obfuscator: nn.Module
    deobfuscator: nn.Module | None
    config: dict[str, Any]

    @property
    def detector(self) -> str | None:
        """The detector spec the obfuscator was trained against, if the checkpoint records it."""
        det = self.config.get("detector")
        if isinstance(det, Mapping):
            return det.get("spec") or None
        return det if isinstance(det, str) else None

    @property
    def label_threshold(self) -> float | None:
        """Pseudo-label threshold used in training, if recorded."""
        det = self.config.get("detector")
        if isinstance(det, Mapping) and isinstance(det.get("score_threshold"), (int, float)):
            return float(det["score_threshold"])
        return None


@dataclass
class Context:
    """Shared settings and caches of one report run."""

    out: Path
    quick: bool = False
    progress: bool = True
    max_frames: int | None = None
    stride: int = 1
    batch_size: int = 8
    pred_threshold: float | None = PRED_THRESHOLD
    label_threshold: float | None = None  # None: each detector's operating threshold
    tune_evals: int = 14
    _detectors: dict[str, Detector] = field(default_factory=dict)
    _checkpoints: dict[str, Loaded] = field(default_factory=dict)
    _evals: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def detector(self, spec: str) -> Detector:
        """A cached detector (ONNX sessions are reused across tables)."""
        if spec not in self._detectors:
            self._detectors[spec] = make_detector(spec)
        return self._detectors[spec]

    def checkpoint(self, path: str | Path) -> Loaded:
        """Load (once) a checkpoint's obfuscator, deobfuscator and config."""
        from silhouette.models.checkpoint import build_from_entry, read_checkpoint

        key = str(Path(path).resolve())
        if key not in self._checkpoints:
            ckpt = read_checkpoint(path)
            obf = build_from_entry(ckpt["obfuscator"], path).eval()
            deobf = build_from_entry(ckpt["deobfuscator"], path).eval() if "deobfuscator" in ckpt else None
            self._checkpoints[key] = Loaded(Path(path), obf, deobf, dict(ckpt.get("config") or {}))
        return self._checkpoints[key]

    def selection(self, test: TestSet) -> FrameSelection:
        """The frames of `test` under this run's subsampling."""
        return FrameSelection(test.root, test.split, test.cameras, self.max_frames, self.stride)

    def evaluate(self, ckpt: str | Path | None, test: TestSet, detectors: Sequence[str], desc: str = "") -> dict[str, Any]:
        """`evaluate_obfuscator` of a checkpoint (None = clean frames) on `test`, cached per detector."""
        ck = "clean" if ckpt is None else str(Path(ckpt).resolve())
        missing = [d for d in detectors if (ck, test.name, d) not in self._evals]
        if missing:
            model = None if ckpt is None else self.checkpoint(ckpt).obfuscator
            sel = self.selection(test)
            res = evaluate_obfuscator(
                model, sel.root, sel.split, {d: self.detector(d) for d in missing}, cameras=sel.cameras,
                max_frames=sel.max_frames, stride=sel.stride, batch_size=self.batch_size,
                pred_threshold=self.pred_threshold, label_threshold=self.label_threshold,
                progress=self.progress, desc=desc or f"eval {test.name}",
            )
            for d in missing:
                self._evals[(ck, test.name, d)] = {**{k: v for k, v in res.items() if k != "detectors"},
                                                   "detector": res["detectors"][d]}
        return {d: self._evals[(ck, test.name, d)] for d in detectors}


def _missing(path: str | Path | None) -> str | None:
    """Why a checkpoint cannot be used, or None if the file exists."""
    if path is None or str(path) == "":
        return "no checkpoint given"
    if not Path(path).is_file():
        return f"checkpoint {path} not found (train it first)"
    return None


def _split_members(spec: str) -> set[str]:
    return {p.split("*")[0].strip() for p in spec.split("+") if p.strip()}


# -- Table 1: generalisation -------------------------------------------------------------------------------------


def generalisation_table(
    ctx: Context, train: Mapping[str, str | Path], tests: Sequence[TestSet], detector: str | None = None
) -> Section:
    """Person AP of obfuscators trained on one footage, tested on each footage (paper Table 1)."""
    sec = Section(
        "generalisation", "Table 1 — Generalisation across cameras and datasets",
        "Relative person AP: the detector on obfuscated frames vs its own detections on the clean frames "
        "(the paper's protocol). Absolute AP vs human ground truth where the test set has it. Count MAE: mean "
        "absolute error of the per-frame person count (the paper's target task) at the detector's operating threshold.",
        ["Train set", "Test set", "Detector", "Frames", "Pseudo boxes", "Person AP50 (%)", "AP50:95 (%)",
         "GT AP50 clean → obf (%)", "Count MAE obf vs clean", "Count MAE vs GT clean → obf"],
    )
    if not train:
        sec.not_run = "no training checkpoints configured (tables.generalisation.train)"
        return sec
    if not tests:
        sec.not_run = "no test sets configured (tables.generalisation.test)"
        return sec
    sec.data["results"] = []
    for label, path, loaded, det in _runnable(ctx, sec, train, detector, "generalisation"):
        for test in tests:
            r = ctx.evaluate(path, test, [det], desc=f"T1 {label} → {test.name}")[det]
            d = r["detector"]
            gt = d["gt"]
            same = _trained_on_root(loaded) == test.root.resolve()
            boxes = int(d["pseudo_boxes"])
            sec.rows.append([
                label, test.display() + (" (training dataset)" if same else ""), det, str(r["frames"]), str(boxes),
                pct(d["relative"]["ap50"]), pct(d["relative"]["ap"]),
                f"{pct(gt['clean']['ap50'])} → {pct(gt['obfuscated']['ap50'])}" if gt else "no GT",
                num(d["count"]["obf_vs_clean"]["mae"], 2),
                f"{num(d['count']['clean_vs_gt']['mae'], 2)} → {num(d['count']['obf_vs_gt']['mae'], 2)}"
                if "obf_vs_gt" in d["count"] else "no GT",
            ])
            if boxes < FEW_BOXES:
                # a relative AP over a handful of reference boxes swings between 0 and 100 on one detection
                sec.notes.append(f"{label} → {test.display()}: the clean frames give only {boxes} pseudo-label "
                                 f"box{'es' if boxes != 1 else ''}, too few for a stable AP; read it as "
                                 f"{d['pseudo_found']} of {boxes} found again at the detector's operating threshold, not as a rate")
            sec.data["results"].append({"train": label, "checkpoint": str(path), "test": test.name, "detector": det,
                                        "frames": r["frames"], "pseudo_boxes": boxes, "relative": d["relative"],
                                        "count": d["count"], "gt": gt, "similarity": r["similarity"]})
    if not sec.rows:
        sec.not_run = "no configured training checkpoint could be evaluated (see notes)"
    return sec


def _trained_on_root(loaded: Loaded) -> Path | None:
    """The prepared dataset folder the checkpoint was trained on, if recorded."""
    data = loaded.config.get("data")
    root = data.get("root") if isinstance(data, Mapping) else None
    return Path(root).resolve() if isinstance(root, str) and root else None


def _checkpoint_and_detector(
    ctx: Context, path: str | Path | None, detector: str | None, section: str
) -> tuple[Loaded, str] | str:
    """The loaded checkpoint and the detector to evaluate it with (`detector`, else the one it was trained
    against), or why that cannot run; `section` names the config key to set when the checkpoint names none."""
    why = _missing(path)
    if why:
        return why
    loaded = ctx.checkpoint(path)  # type: ignore[arg-type]
    det = detector or loaded.detector
    if det is None:
        return f"checkpoint does not name its detector; set tables.{section}.detector"
    ok, why = _detector_ok(det)
    return (loaded, det) if ok else why


def _runnable(
    ctx: Context, sec: Section, checkpoints: Mapping[str, str | Path], detector: str | None, section: str
) -> Iterator[tuple[str, str | Path, Loaded, str]]:
    """(label, path, loaded checkpoint, detector) of each checkpoint that can run; the others get a note in `sec`."""
    for label, path in checkpoints.items():
        got = _checkpoint_and_detector(ctx, path, detector, section)
        if isinstance(got, str):
            sec.notes.append(f"{label}: not run: {got}")
            continue
        yield (label, path, *got)


def _detector_ok(spec: str) -> tuple[bool, str]:
    from silhouette.evaluation.evaluate import detector_available

    try:
        return detector_available(spec)
    except SilhouetteError as exc:
        return False, str(exc)


# -- Table 2: cross-detector -------------------------------------------------------------------------------------


def cross_detector_table(
    ctx: Context, checkpoints: Mapping[str, str | Path], test: TestSet | None, detectors: Sequence[str] | str = "all"
) -> Section:
    """Relative person AP of each obfuscator under every runnable detector (paper Table 2)."""
    sec = Section(
        "cross_detector", "Table 2 — Cross-detector accuracy",
        "Relative person AP50 (%) of each detector on frames obfuscated by an obfuscator trained against the "
        "detector(s) in the first column. `*` marks detectors the obfuscator never saw in training.",
    )
    if test is None:
        sec.not_run = "no test set configured (tables.cross_detector.test)"
        return sec
    names, skipped = _resolve_detectors(detectors)
    for name, why in skipped.items():
        sec.notes.append(f"{name} skipped: {why}")
    if not names:
        sec.not_run = "no runnable detectors"
        return sec
    if not checkpoints:
        sec.not_run = "no checkpoints configured (tables.cross_detector.checkpoints)"
        return sec
    sec.columns = ["Trained on"] + names
    sec.data = {"test": test.name, "detectors": names, "rows": []}
    for label, path in checkpoints.items():
        why = _missing(path)
        if why:
            sec.notes.append(f"{label}: not run: {why}")
            continue
        loaded = ctx.checkpoint(path)
        trained_on = loaded.detector or label
        seen = _split_members(trained_on)
        res = ctx.evaluate(path, test, names, desc=f"T2 {label}")
        cells = []
        for n in names:
            ap50 = res[n]["detector"]["relative"]["ap50"]
            cells.append(pct(ap50) + ("" if n in seen else "*"))
        row_label = f"{label} (ensemble)" if len(seen) > 1 else label
        sec.rows.append([row_label] + cells)
        sec.data["rows"].append({"label": label, "checkpoint": str(path), "trained_on": trained_on,
                                 "relative": {n: res[n]["detector"]["relative"] for n in names},
                                 "gt": {n: res[n]["detector"]["gt"] for n in names},
                                 "unseen": [n for n in names if n not in seen]})
    if not sec.rows:
        sec.not_run = "no configured checkpoint could be evaluated (see notes)"
        return sec
    # context row: how well each detector does on clean frames against human GT, when the set has GT
    clean = ctx.evaluate(None, test, names, desc="T2 clean")
    if any(clean[n]["detector"]["gt"] for n in names):
        sec.rows.append(["(clean frames, AP50 vs human GT)"] + [
            pct(clean[n]["detector"]["gt"]["clean"]["ap50"]) if clean[n]["detector"]["gt"] else "—" for n in names
        ])
        sec.data["clean_gt"] = {n: clean[n]["detector"]["gt"] for n in names}
    sec.notes.append(f"test set: {test.display()}, {clean[names[0]]['frames']} frames")
    return sec


def _resolve_detectors(detectors: Sequence[str] | str) -> tuple[list[str], dict[str, str]]:
    """'all' = every registered detector that can run here; else the given list minus unavailable ones."""
    if detectors == "all" or detectors == ["all"]:
        return available_detectors()
    names = [detectors] if isinstance(detectors, str) else list(detectors)
    ok, skipped = [], {}
    for n in names:
        avail, why = _detector_ok(n)
        if avail:
            ok.append(n)
        else:
            skipped[n] = why
    return ok, skipped


# -- Table 3: baselines at matched AP ----------------------------------------------------------------------------


def _matched_baselines(ctx: Context, bases: Sequence[Any], frames: torch.Tensor, det: Detector, target: float,
                       pseudo: list[Detections], tol: float, notes: list[str]) -> dict[str, dict[str, Any]]:
    """Each baseline tuned to the target AP50: its column (AP, parameter, similarity, images); misses noted."""
    from tqdm import tqdm

    from silhouette.evaluation.baselines import tune_baseline
    from silhouette.evaluation.metrics import mean_similarity

    columns: dict[str, dict[str, Any]] = {}
    for b in tqdm(bases, desc="T3 tune baselines", disable=not ctx.progress, leave=False):
        res = tune_baseline(b, frames, det, target, pseudo, tol=tol, max_evals=ctx.tune_evals,
                            batch_size=ctx.batch_size)
        out = b.apply(frames, res.param)
        columns[b.name] = {"label": b.label, "ap": {"ap50": res.ap50, "ap": res.ap}, "param": b.describe(res.param),
                           "similarity": mean_similarity(list(frames), list(out)), "images": out,
                           "tune": res.to_dict()}
        if not res.reached:
            notes.append(f"{b.label}: AP50 {pct(res.ap50)}% is outside ±{100 * tol:.0f} points of the target "
                         f"{pct(target)}% anywhere in its range ({b.param} {b.low:g}…{b.high:g}); closest shown")
    return columns


def _fill_baselines(ctx: Context, sec: Section, columns: dict[str, dict[str, Any]], frames: torch.Tensor,
                    files: list[str], picture_frame: int, test: TestSet) -> None:
    """Table 3's rows and its picture row (one frame under each obfuscation)."""
    from silhouette.evaluation.figures import picture_row

    sec.columns = ["Metric"] + [f"{c['label']} ({pct(c['ap']['ap50'])}%)" for c in columns.values()]
    sec.rows = [["Parameter"] + [c["param"] for c in columns.values()]]
    for metric, digits in (("ssim", 4), ("mse", 4), ("psnr", 2), ("nmi", 4)):
        sec.rows.append([metric.upper()] + [num(c["similarity"][metric], digits) for c in columns.values()])
    i = min(max(0, picture_frame), len(frames) - 1)
    name = "table3_baselines.png"
    picture_row(ctx.out / name, frames[i], [(c["label"] + ("" if k == "ours" else f"\n{c['param']}"), c["images"][i])
                                             for k, c in columns.items()], title=f"{test.display()}: {files[i]}")
    sec.figures.append(name)


def baselines_table(
    ctx: Context,
    checkpoint: str | Path | None,
    test: TestSet | None,
    detector: str | None = None,
    methods: Sequence[str] = ("blur", "noise", "quantize", "pixelate"),
    tol: float = 0.02,
    picture_frame: int = 0,
) -> Section:
    """Similarity to the original of our obfuscation vs classic ones tuned to the same person AP50 (paper Table 3)."""
    from silhouette.evaluation.baselines import get_baseline, predict_all
    from silhouette.evaluation.metrics import mean_similarity, person_ap

    sec = Section(
        "baselines", "Table 3 — Obfuscation baselines at matched accuracy",
        "Each baseline's parameter is bisected until its relative person AP50 matches ours (within the "
        "tolerance); then the similarity of obfuscated to original frames is compared. Lower SSIM/PSNR/NMI "
        "and higher MSE mean stronger obfuscation.",
    )
    why = _missing(checkpoint) or ("no test set configured (tables.baselines.test)" if test is None else None)
    got = why or _checkpoint_and_detector(ctx, checkpoint, detector, "baselines")
    if isinstance(got, str):
        sec.not_run = got
        return sec
    loaded, det_name = got
    bases = [get_baseline(m) for m in methods]
    frames, _, files = load_selection(ctx.selection(test))
    det = ctx.detector(det_name)
    with prediction_threshold(det, ctx.pred_threshold) as operating:
        thr = operating if ctx.label_threshold is None else ctx.label_threshold
        pseudo = [d.persons(thr) for d in predict_all(det, frames, ctx.batch_size)]
        with torch.no_grad():
            ours = torch.cat([loaded.obfuscator(frames[i : i + ctx.batch_size]).clamp(0, 1)
                              for i in range(0, len(frames), ctx.batch_size)])
        ours_ap = person_ap(predict_all(det, ours, ctx.batch_size), pseudo)
        target = ours_ap["ap50"]
        if math.isnan(target):
            sec.not_run = f"{det_name} finds no person on the clean frames of {test.display()}; nothing to match"
            return sec
        columns: dict[str, dict[str, Any]] = {"ours": {"label": "Ours", "ap": ours_ap, "param": "—",
                                                       "similarity": mean_similarity(list(frames), list(ours)),
                                                       "images": ours}}
        columns.update(_matched_baselines(ctx, bases, frames, det, target, pseudo, tol, sec.notes))
    sec.notes.append(f"detector {det_name}, pseudo-labels at score ≥ {thr:g}, test set {test.display()}, "
                     f"{len(frames)} frames; AP in the header is relative person AP50")
    sec.data = {"detector": det_name, "test": test.name, "frames": len(frames), "target_ap50": target, "tol": tol,
                "methods": {k: {kk: vv for kk, vv in v.items() if kk != "images"} for k, v in columns.items()}}
    _fill_baselines(ctx, sec, columns, frames, files, picture_frame, test)
    return sec


# -- Table 4: cost -----------------------------------------------------------------------------------------------


def _obfuscator_costs(ctx: Context, sec: Section, checkpoint: str | Path | None, variants: Sequence[str],
                      size: tuple[int, int]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Cost rows of the obfuscator (the untrained default architecture without a checkpoint) and of each variant."""
    from silhouette.evaluation.evaluate import model_cost
    from silhouette.models import build_obfuscator

    h, w = size
    why = _missing(checkpoint)
    if why:
        obf = build_obfuscator()
        sec.notes.append(f"obfuscator: {why}; counted the untrained default architecture obf_paper instead "
                         "(cost depends on the architecture only)")
        label = "Obfuscator (obf_paper)"
    else:
        obf = ctx.checkpoint(checkpoint).obfuscator  # type: ignore[arg-type]
        label = "Obfuscator"
    ours = model_cost(obf, (h, w))
    sec.rows.append([label, f"{w}x{h}", f"{ours['macs'] / 1e9:.3f}", f"{ours['params'] / 1e6:.3f}"])
    rows: list[dict[str, Any]] = [{"model": label, "input": f"{w}x{h}", **ours}]
    for v in variants:
        c = model_cost(build_obfuscator(v), (h, w))
        rows.append({"model": f"obfuscator variant {v}", "input": f"{w}x{h}", **c})
        sec.rows.append([f"Obfuscator variant `{v}`", f"{w}x{h}", f"{c['macs'] / 1e9:.3f}", f"{c['params'] / 1e6:.3f}"])
    return ours, rows


def _detector_costs(ctx: Context, sec: Section, detectors: Sequence[str] | str, torchvision: Sequence[str],
                    ours: Mapping[str, int], rows: list[dict[str, Any]]) -> None:
    """Each detector's cost row (ratios to our obfuscator in parentheses); one that cannot be counted gets a note."""
    from tqdm import tqdm

    from silhouette.evaluation.evaluate import detector_cost

    if detectors == "zoo":
        from silhouette.detectors.onnx_zoo import ZOO

        det_names = [n for n in ZOO if _detector_ok(n)[0]]
        sec.notes += [f"{n} skipped: {_detector_ok(n)[1]}" for n in ZOO if n not in det_names]
    else:
        det_names = [detectors] if isinstance(detectors, str) else list(detectors)
    for name in tqdm(list(det_names) + list(torchvision), desc="T4 cost", disable=not ctx.progress, leave=False):
        try:
            c = detector_cost(name)
        except SilhouetteError as exc:
            sec.notes.append(f"{name} skipped: {exc}")
            continue
        rows.append(c)
        sec.rows.append([
            name + ("" if c.get("weights_present", True) else " (architecture only; weights absent)"), c["input"],
            f"{c['macs'] / 1e9:.3f} ({c['macs'] / max(1, ours['macs']):.1f})",
            f"{c['params'] / 1e6:.3f} ({c['params'] / max(1, ours['params']):.1f})",
        ])


def cost_table(
    ctx: Context,
    checkpoint: str | Path | None,
    detectors: Sequence[str] | str = "zoo",
    torchvision: Sequence[str] = (),
    variants: Sequence[str] = (),
    frame_size: tuple[int, int] = FRAME_SIZE,
) -> Section:
    """Params and MACs of the obfuscator vs each detector at its input size (paper Table 4)."""
    h, w = frame_size
    sec = Section(
        "cost", "Table 4 — Computational cost",
        f"MACs of one forward pass (torch.utils.flop_counter) and parameter counts. The obfuscator runs on "
        f"{w}x{h} frames; each detector at its own input size (ONNX zoo: the onnx2torch module). "
        "Parentheses: ratio to our obfuscator.",
        ["Model", "Input", "MACs (G)", "Params (M)"],
    )
    ours, rows = _obfuscator_costs(ctx, sec, checkpoint, variants, (h, w))
    _detector_costs(ctx, sec, detectors, torchvision, ours, rows)
    cheaper = [r["model"] for r in rows[1 + len(variants):] if r["macs"] < ours["macs"]]
    if cheaper:
        sec.notes.append(
            f"{', '.join(cheaper)} need fewer MACs than the obfuscator: against such edge-sized detectors the "
            "obfuscator is not the cheaper option; the paper's cost argument is made against server-class "
            "detectors (Faster R-CNN, YOLOv5s)"
        )
    sec.data = {"frame_size": [h, w], "rows": rows}
    return sec


# -- Figure 2: width sweep ---------------------------------------------------------------------------------------


def width_sweep(
    ctx: Context, checkpoints: Mapping[str, str | Path], test: TestSet | None, detector: str | None = None,
    frame_size: tuple[int, int] = FRAME_SIZE,
) -> Section:
    """Relative person AP vs obfuscator MACs across widths (paper Figure 2)."""
    from silhouette.evaluation.evaluate import model_cost

    sec = Section(
        "width_sweep", "Figure 2 — Accuracy vs obfuscator cost (width sweep)",
        "Relative person AP50 of obfuscators of several widths against their MACs per frame.",
        ["Obfuscator", "MACs (G)", "Params (M)", "Person AP50 (%)", "AP50:95 (%)", "SSIM"],
    )
    if test is None:
        sec.not_run = "no test set configured (tables.width_sweep.test)"
        return sec
    if not checkpoints:
        sec.not_run = "no checkpoints configured (tables.width_sweep.checkpoints)"
        return sec
    points = []
    for label, path, loaded, det in _runnable(ctx, sec, checkpoints, detector, "width_sweep"):
        c = model_cost(loaded.obfuscator, frame_size)
        r = ctx.evaluate(path, test, [det], desc=f"F2 {label}")[det]
        ap = r["detector"]["relative"]
        points.append({"label": label, "checkpoint": str(path), "detector": det, **c, "relative": ap,
                       "ssim": r["similarity"]["ssim"]})
        sec.rows.append([label, f"{c['macs'] / 1e9:.3f}", f"{c['params'] / 1e6:.3f}", pct(ap["ap50"]), pct(ap["ap"]),
                         num(r["similarity"]["ssim"], 4)])
    if not points:
        sec.not_run = "no configured checkpoint could be evaluated (see notes)"
        return sec
    from silhouette.evaluation.figures import ap_vs_macs

    name = "figure2_width_sweep.png"
    ap_vs_macs(ctx.out / name, points, title=f"{test.display()} ({points[0]['detector']})")
    sec.figures.append(name)
    sec.data = {"test": test.name, "points": points}
    return sec


# -- Figures 3–4: examples ---------------------------------------------------------------------------------------


def examples_figure(ctx: Context, checkpoint: str | Path | None, tests: Sequence[TestSet], n: int = 4,
                    detector: str | None = None) -> Section:
    """Original / obfuscated / reconstructed frames per test set (paper Figures 3–4)."""
    sec = Section(
        "examples", "Figures 3–4 — Example frames",
        "Rows: original frames, obfuscated frames (boxes: the detector's persons on the obfuscated frame), "
        "and the training-time deobfuscator's reconstruction.",
    )
    why = _missing(checkpoint)
    if why:
        sec.not_run = why
        return sec
    if not tests:
        sec.not_run = "no test sets configured (tables.examples.tests)"
        return sec
    from silhouette.evaluation.figures import example_grid

    loaded = ctx.checkpoint(checkpoint)  # type: ignore[arg-type]
    if loaded.deobfuscator is None:
        sec.notes.append("the checkpoint holds no deobfuscator, so the reconstruction row is omitted")
    det_name = detector or loaded.detector
    det = None
    if det_name is not None and _detector_ok(det_name)[0]:
        det = ctx.detector(det_name)
    sec.data = {"figures": []}
    for k, test in enumerate(tests):
        sel = ctx.selection(test)
        sel.max_frames = max(1, n)
        frames, _, files = load_selection(sel)
        with torch.no_grad():
            obf = loaded.obfuscator(frames).clamp(0, 1)
            rec = loaded.deobfuscator(obf).clamp(0, 1) if loaded.deobfuscator is not None else None
        boxes: list[Detections] | None = None
        if det is not None:
            with torch.no_grad():
                boxes = [d.persons(det.conf_threshold) for d in det.predict(obf)]
        name = f"figure{3 + k}_examples_{test.name}.png"
        example_grid(ctx.out / name, frames, obf, rec, boxes, title=test.display())
        sec.figures.append(name)
        sec.data["figures"].append({"test": test.name, "file": name, "frames": files,
                                    "reconstruction": rec is not None, "detector": det_name if det else None})
    return sec
