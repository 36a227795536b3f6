"""Leave-one-source-out generalisation of the shipped obfuscators: every shared source, every zoo detector, faces.

For each shared source (the PETS 2009 test split, and every Intel camera, each one clip) the shipped default
(`obfuscator_default.pt`), the shipped edge checkpoint (`obfuscator_edge.pt`) and the zero-MAC fold `fold:1` are
scored with every zoo detector by the project's evaluation (`silhouette evaluate`'s protocol): relative AP50 against
the detector's own boxes on the clean frames, count MAE and bias (obfuscated vs clean persons per frame) and the
clean boxes found again at the detector's operating threshold. A source is *left out* for an obfuscator when none of
its cameras was in that obfuscator's training or validation data (read from the checkpoint's config): the shipped
checkpoints were trained on the PETS 2009 train split, so the PETS test rows share their camera and scene and are
not left out for them; `fold:1` is trained on nothing. Beside that, the scorecard's face columns (`silhouette attack
--attacks faces`: MTCNN and Haar with duplicate boxes merged, faces found again / reference faces, on the shared
Intel face clips at their native size) for each obfuscator.

It prints and writes (JSON with a provenance block, plus a Markdown table beside it) the per-detector mean and worst
left-out source, and whether the targets of issue #21 are met: the default reaches >= 98 % of fold:1's relative
AP50 for every detector, a count MAE no worse than fold:1's and at most half of fold:1's faces; the edge checkpoint
keeps >= 85 % relative AP50 with YOLOX-Nano on every left-out source.

This is an experiment, not a speed benchmark, so it lives in experiments/ (benchmarks/ holds speed and cost only).

    python experiments/generalisation.py                      # the committed run: results/experiments/generalisation.*
    python experiments/generalisation.py --max-frames 80      # at most 80 evenly spaced frames per source
    python experiments/generalisation.py --smoke --out /tmp/g.json   # a quick check: 8 frames per source, YOLOX-Nano only
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from silhouette.detectors.base import Detector

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "experiments" / "generalisation.json"
OBFUSCATORS = {  # name in the table -> checkpoint (relative to the checkout) or baseline spec
    "default": "src/silhouette/assets/obfuscator_default.pt",
    "edge": "src/silhouette/assets/obfuscator_edge.pt",
    "fold:1": "fold:1",
}
REFERENCE = "fold:1"  # what the learned obfuscators must beat (zero MACs, trained on nothing)
SMOKE_DETECTOR = "yolox_nano"  # the shipped checkpoints' training detector, so every target is still computed
SMOKE_FRAMES, SMOKE_FACE_EVERY = 8, 20
TARGETS = {"ap50_share_of_fold": 0.98, "faces_share_of_fold": 0.5, "edge_ap50": 0.85, "edge_detector": "yolox_nano"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help=f"a quick check of the whole path, for tests: {SMOKE_FRAMES} frames per source, {SMOKE_DETECTOR} only, "
                        f"one face-clip frame in {SMOKE_FACE_EVERY}")
    p.add_argument("--max-frames", type=int, default=80, metavar="N",
                   help="at most N evenly spaced frames per source (default: 80; 0 = every frame)")
    p.add_argument("--detectors", metavar="A,B", help="zoo detectors (default: every zoo detector whose weights are here)")
    p.add_argument("--obfuscators", default=",".join(OBFUSCATORS), metavar="A,B",
                   help=f"which of {', '.join(OBFUSCATORS)} to score (default: all three)")
    p.add_argument("--pets", default="runs/data/pets2009", metavar="DIR",
                   help="prepared pets2009 folder; its test split is one source (prepared here if missing)")
    p.add_argument("--intel", default="runs/data/intel", metavar="DIR",
                   help="prepared intel folder; each camera is one source, all its frames (prepared here if missing)")
    p.add_argument("--face-every", type=int, default=1, metavar="K", help="one frame in K of the face clips (default: 1, every frame, as the scorecard)")
    p.add_argument("--no-faces", action="store_true", help="skip the face columns")
    p.add_argument("--threads", type=int, default=2, metavar="N", help="torch CPU threads (default: 2)")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="JSON",
                   help="results JSON; the Markdown table goes beside it as .md "
                        "(default: results/experiments/generalisation.json)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.smoke:
        args.max_frames, args.face_every = SMOKE_FRAMES, max(args.face_every, SMOKE_FACE_EVERY)
        args.detectors = args.detectors or SMOKE_DETECTOR
    if args.max_frames < 0 or args.face_every < 1 or args.threads < 1:
        p.error("--max-frames must be >= 0, --face-every and --threads >= 1")
    args.obfuscators = [o.strip() for o in args.obfuscators.split(",") if o.strip()]
    unknown = [o for o in args.obfuscators if o not in OBFUSCATORS]
    if unknown or not args.obfuscators:
        p.error(f"--obfuscators: choose from {', '.join(OBFUSCATORS)} (got {', '.join(unknown) or 'none'})")
    return args


# -- sources and obfuscators -----------------------------------------------------------------------------------


def prepared(name: str, root: Path) -> Path:
    """`root`, prepared from the shared footage first if it holds no manifest."""
    from silhouette.data import prepare_dataset

    if not (root / "manifest.json").is_file():
        print(f"preparing {name} into {root} (once)", flush=True)
        prepare_dataset(name, root, progress=False)
    return root


def enumerate_sources(pets: Path, intel: Path) -> list[dict[str, Any]]:
    """Every shared source: the PETS 2009 test split, then each Intel camera (one clip each, all its frames)."""
    from silhouette.data.manifest import load_manifest

    sources = []
    for dataset, root in (("pets2009", prepared("pets2009", pets)), ("intel", prepared("intel", intel))):
        frames = load_manifest(root)["frames"]
        if dataset == "pets2009":
            test = [f for f in frames if f["split"] == "test"]
            cams = sorted({f["camera"] for f in test})
            sources.append({"id": "pets2009/test", "dataset": dataset, "root": str(root), "split": "test",
                            "cameras": cams, "frames_total": len(test), "clips": sorted({Path(f["source"]).name for f in test})})
            continue
        for cam in sorted({f["camera"] for f in frames}):
            mine = [f for f in frames if f["camera"] == cam]
            sources.append({"id": f"intel/{cam}", "dataset": dataset, "root": str(root), "split": None, "cameras": [cam],
                            "frames_total": len(mine), "clips": sorted({Path(f["source"]).name for f in mine}),
                            "intel_split": sorted({f["split"] for f in mine})})
    return sources


def training_cameras(ckpt_path: Path, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The dataset, splits and cameras a checkpoint trained and validated on (from its config and the manifest)."""
    from silhouette.data.manifest import load_manifest
    from silhouette.models.checkpoint import read_checkpoint

    data = (read_checkpoint(ckpt_path).get("config") or {}).get("data") or {}
    dataset, splits = data.get("dataset"), [data.get("train_split"), data.get("val_split")]
    root = next((Path(s["root"]) for s in sources if s["dataset"] == dataset), None)
    cams: list[str] = []
    if root is not None:  # the prepared copy here decides which cameras those splits hold
        cams = sorted({f["camera"] for f in load_manifest(root)["frames"] if f["split"] in splits})
    return {"dataset": dataset, "splits": [s for s in splits if s], "cameras": cams}


def left_out(source: Mapping[str, Any], trained_on: Mapping[str, Any] | None) -> bool:
    """Whether no camera of `source` was in the obfuscator's training or validation data."""
    if not trained_on:
        return True
    return source["dataset"] != trained_on["dataset"] or not set(source["cameras"]) & set(trained_on["cameras"])


def load_obfuscators(names: list[str], sources: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """name -> frozen module, and name -> what it is (path or spec, MACs at 320x200, what it was trained on)."""
    from silhouette.evaluation.baselines import BaselineModule
    from silhouette.models import count_macs, load_obfuscator

    modules, info = {}, {}
    for name in names:
        spec = OBFUSCATORS[name]
        if spec.endswith(".pt"):
            path = REPO / spec
            model = load_obfuscator(path).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            modules[name] = model
            info[name] = {"checkpoint": spec, "macs_320x200": int(count_macs(model, (200, 320))),
                          "trained_on": training_cameras(path, sources)}
        else:
            modules[name] = BaselineModule(spec)
            info[name] = {"baseline": spec, "macs_320x200": 0, "trained_on": None}
    return modules, info


# -- scoring -----------------------------------------------------------------------------------------------------


def compact(row: Mapping[str, Any]) -> dict[str, Any]:
    """One detector's `evaluate_obfuscator` row reduced to the table's numbers (NaN kept: no clean boxes)."""
    count = row["count"]["obf_vs_clean"]
    boxes, found = row["pseudo_boxes"], row["pseudo_found"]
    out = {"relative_ap50": row["relative"]["ap50"], "relative_ap": row["relative"]["ap"],
           "count_mae": count["mae"], "count_bias": count["bias"], "pseudo_boxes": boxes, "boxes_found": found,
           "found_fraction": found / boxes if boxes else math.nan}
    if row.get("gt"):
        out["gt_ap50"] = {"clean": row["gt"]["clean"]["ap50"], "obfuscated": row["gt"]["obfuscated"]["ap50"]}
    return out


class CleanOnce(Detector):
    """A detector's predictions on the clean frames, made once and replayed for every obfuscator of the same frames.

    Passed to `evaluate_obfuscator` as the `reference` (the detector that labels the clean frames), so the three
    obfuscators of a source share one clean pass: a third less detector work. Keyed by the frames' bytes and the score
    threshold, so a replay is exactly what the detector would return.
    """

    def __init__(self, detector: Any) -> None:
        self.detector, self.name = detector, getattr(detector, "name", type(detector).__name__)
        self.conf_threshold = float(detector.conf_threshold)  # set by evaluate's prediction_threshold, like a detector's
        self.cache: dict[tuple[str, float], list[Any]] = {}

    def predict(self, images: Any) -> list[Any]:
        """The wrapped detector's predictions on `images` at this threshold, from the cache when seen before."""
        import hashlib

        key = (hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16).hexdigest(), self.conf_threshold)
        if key not in self.cache:
            operating = self.detector.conf_threshold
            self.detector.conf_threshold = self.conf_threshold
            try:
                self.cache[key] = self.detector.predict(images)
            finally:
                self.detector.conf_threshold = operating
        return self.cache[key]

    def candidates(self, images: Any) -> Any:
        """The wrapped detector's (never used here: evaluation only predicts)."""
        return self.detector.candidates(images)

    def info(self) -> Any:
        """The wrapped detector's."""
        return self.detector.info()


def score_sources(sources: list[dict[str, Any]], modules: Mapping[str, Any], info: Mapping[str, Any],
                  detectors: Mapping[str, Any], max_frames: int | None, bar: Any) -> dict[str, dict[str, Any]]:
    """source id -> obfuscator -> {left_out, frames, similarity, detectors: {name: compact row}}."""
    from silhouette.evaluation.evaluate import evaluate_obfuscator

    results: dict[str, dict[str, Any]] = {}
    for src in sources:
        results[src["id"]] = {}
        clean = {d: CleanOnce(det) for d, det in detectors.items()}  # one clean pass per source
        for name, module in modules.items():
            bar.set_postfix_str(f"{src['id']} · {name}")
            res = evaluate_obfuscator(module, src["root"], src["split"], detectors, cameras=src["cameras"],
                                      max_frames=max_frames, progress=False, reference=clean)
            src["frames_used"] = res["frames"]
            results[src["id"]][name] = {
                "left_out": left_out(src, info[name]["trained_on"]),
                "frames": res["frames"],
                "similarity": {k: res["similarity"][k] for k in ("ssim", "psnr")},
                "detectors": {d: compact(r) for d, r in res["detectors"].items()},
            }
            bar.update(1)
    return results


def score_faces(modules: Mapping[str, Any], every: int, bar: Any) -> dict[str, Any]:
    """The scorecard's face columns: per obfuscator and face detector, faces found again / reference faces."""
    import torch

    from silhouette.privacy import faces as F

    usable = F.available_face_detectors()  # name -> '' or why it cannot run here
    names = [n for n, why in usable.items() if not why]
    notes = [f"face detector {n} not run: {why}" for n, why in usable.items() if why]
    footage = F.resolve_footage(None)  # the scorecard's footage: the shared Intel face clips at native size
    clips = F.load_footage(footage, every=every)
    detectors = [F.build_face_detector(n) for n in names]
    refs: dict[str, list[Any]] = {}  # clean-frame faces, searched once for every obfuscator
    out: dict[str, Any] = {"footage": F.footage_summary(footage, clips), "every": every, "notes": notes, "rows": {}}
    for name, module in modules.items():
        bar.set_postfix_str(f"faces · {name}")
        with torch.no_grad():
            res = F.run_face_attack(detectors, clips, module, references=refs)
        out["rows"][name] = {d.name: {"reference_faces": res[d.name]["reference_faces"],
                                      **res[d.name]["obfuscated"]} for d in detectors}
        bar.update(1)
    return out


# -- summary and targets -----------------------------------------------------------------------------------------


def finite(values: Iterable[Any]) -> list[float]:
    """The values that are real numbers (NaN and None dropped: a source where a detector saw nobody)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def mean(values: Iterable[Any]) -> float:
    """Mean of the finite values, NaN when there are none."""
    vals = finite(values)
    return sum(vals) / len(vals) if vals else math.nan


def summarise(results: Mapping[str, Any], obf: str, det: str, only: list[str]) -> dict[str, Any]:
    """Mean over the sources `only` (equal weight per source) and the worst source, for one obfuscator and detector."""
    rows = {s: results[s][obf]["detectors"][det] for s in only}
    ap = {s: r["relative_ap50"] for s, r in rows.items() if finite([r["relative_ap50"]])}
    worst = min(ap, key=ap.get) if ap else None
    boxes = sum(r["pseudo_boxes"] for r in rows.values())
    return {"sources": len(only), "mean_relative_ap50": mean(ap.values()),
            "worst_relative_ap50": ap[worst] if worst else math.nan, "worst_source": worst,
            "mean_count_mae": mean(r["count_mae"] for r in rows.values()),
            "mean_count_bias": mean(r["count_bias"] for r in rows.values()),
            "found_fraction": sum(r["boxes_found"] for r in rows.values()) / boxes if boxes else math.nan}


def summary_table(results: Mapping[str, Any], obfs: list[str], dets: list[str]) -> dict[str, Any]:
    """obfuscator -> {left_out: {detector: summary}, all: {detector: summary}}."""
    out: dict[str, Any] = {}
    for obf in obfs:
        lo = [s for s in results if results[s][obf]["left_out"]]
        out[obf] = {"left_out_sources": lo,
                    "left_out": {d: summarise(results, obf, d, lo) for d in dets} if lo else {},
                    "all": {d: summarise(results, obf, d, list(results)) for d in dets}}
    return out


def check(name: str, value: float, bound: float, at_least: bool, detail: str) -> dict[str, Any]:
    """One target: met when `value` >= (or <=) `bound`; not measured when either is NaN."""
    if not (math.isfinite(value) and math.isfinite(bound)):
        return {"target": name, "value": value, "bound": bound, "met": None, "detail": detail + " (not measured)"}
    return {"target": name, "value": value, "bound": bound, "met": value >= bound if at_least else value <= bound,
            "detail": detail}


def default_targets(results: Mapping[str, Any], faces: Mapping[str, Any] | None, dets: list[str]) -> list[dict[str, Any]]:
    """Issue #21 item 2: the default against fold:1, on the sources left out for the default."""
    lo = [s for s in results if results[s]["default"]["left_out"]]
    out = []
    for d in dets:
        ours, ref = summarise(results, "default", d, lo), summarise(results, REFERENCE, d, lo)
        share = TARGETS["ap50_share_of_fold"]
        out.append(check(f"default relAP50 >= {share:.0%} of fold:1's ({d})", ours["mean_relative_ap50"],
                         share * ref["mean_relative_ap50"], True, "mean over the default's left-out sources"))
        out.append(check(f"default count MAE <= fold:1's ({d})", ours["mean_count_mae"], ref["mean_count_mae"], False,
                         "mean over the default's left-out sources"))
    for fd in (faces or {}).get("rows", {}).get("default", {}):
        share = TARGETS["faces_share_of_fold"]
        ours, ref = faces["rows"]["default"][fd]["fraction"], faces["rows"][REFERENCE][fd]["fraction"]
        out.append(check(f"default faces found <= {share:.0%} of fold:1's ({fd})", ours, share * ref, False,
                         "shared Intel face clips"))
    return out


def edge_targets(results: Mapping[str, Any], dets: list[str]) -> list[dict[str, Any]]:
    """Issue #21 item 3: the edge checkpoint keeps >= 85 % relative AP50 with YOLOX-Nano on every left-out source."""
    det, bound = TARGETS["edge_detector"], TARGETS["edge_ap50"]
    if det not in dets:
        return [check(f"edge relAP50 >= {bound:.0%} on every left-out source ({det})", math.nan, bound, True, f"{det} not run")]
    return [check(f"edge relAP50 >= {bound:.0%} with {det} ({s})", results[s]["edge"]["detectors"][det]["relative_ap50"],
                  bound, True, "left-out source") for s in results if results[s]["edge"]["left_out"]]


def targets(results: Mapping[str, Any], faces: Mapping[str, Any] | None, obfs: list[str], dets: list[str]) -> list[dict[str, Any]]:
    """Every target of issue #21 this experiment can measure (those whose obfuscators were scored)."""
    out = []
    if "default" in obfs and REFERENCE in obfs:
        out += default_targets(results, faces, dets)
    if "edge" in obfs:
        out += edge_targets(results, dets)
    return out


# -- report ------------------------------------------------------------------------------------------------------


def pct(x: Any) -> str:
    """A [0,1] value as a percentage with one decimal, '—' when undefined."""
    return f"{100 * x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def num(x: Any, digits: int = 2, signed: bool = False) -> str:
    """A number with fixed decimals, '—' when undefined."""
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def summary_markdown(result: Mapping[str, Any]) -> list[str]:
    """Per obfuscator and detector: mean and worst left-out source, count error, boxes found."""
    lines = ["| obfuscator | detector | left-out sources | relAP50 % mean | worst source (relAP50 %) | count MAE | "
             "count bias | boxes found % | relAP50 % mean, all sources |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for obf, s in result["summary"].items():
        for det, a in s["all"].items():
            lo = s["left_out"].get(det) or {}
            worst = f"{lo.get('worst_source')} ({pct(lo.get('worst_relative_ap50'))})" if lo.get("worst_source") else "—"
            lines.append(f"| {obf} | {det} | {lo.get('sources', 0)} | {pct(lo.get('mean_relative_ap50'))} | {worst} | "
                         f"{num(lo.get('mean_count_mae'))} | {num(lo.get('mean_count_bias'), signed=True)} | "
                         f"{pct(lo.get('found_fraction'))} | {pct(a['mean_relative_ap50'])} |")
    return lines


def source_markdown(result: Mapping[str, Any], obf: str) -> list[str]:
    """One obfuscator: relative AP50 % (count MAE) per source and detector; seen sources marked."""
    dets = list(result["detectors"])
    lines = [f"**{obf}**", "", "| source | frames | " + " | ".join(dets) + " |", "|---|---:|" + "---:|" * len(dets)]
    for sid, row in result["results"].items():
        r = row[obf]
        mark = "" if r["left_out"] else " (seen in training)"
        cells = [f"{pct(r['detectors'][d]['relative_ap50'])} ({num(r['detectors'][d]['count_mae'])})" for d in dets]
        lines.append(f"| {sid}{mark} | {r['frames']} | " + " | ".join(cells) + " |")
    return lines + [""]


def faces_markdown(faces: Mapping[str, Any]) -> list[str]:
    """Faces found again / reference faces on the obfuscated face clips, per face detector."""
    fds = list(next(iter(faces["rows"].values()), {}))
    lines = ["| obfuscator | " + " | ".join(f"{fd}: found / reference (%)" for fd in fds) + " |",
             "|---|" + "---:|" * len(fds)]
    for obf, row in faces["rows"].items():
        cells = [f"{row[fd]['found_again']} / {row[fd]['reference_faces']} ({pct(row[fd]['fraction'])})" for fd in fds]
        lines.append(f"| {obf} | " + " | ".join(cells) + " |")
    clips = "; ".join(f"{c['clip']} ({c['frames']} frames, {c['resolution']})" for c in faces["footage"])
    step = "every frame" if faces["every"] == 1 else f"one frame in {faces['every']}"
    return lines + ["", f"Footage: {clips}; {step}." + "".join(f" {n}." for n in faces["notes"])]


def target_markdown(checks: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, met or missed."""
    lines = ["| target | value | bound | met |", "|---|---:|---:|---|"]
    for c in checks:
        met = {True: "met", False: "**missed**", None: "not measured"}[c["met"]]
        lines.append(f"| {c['target']} | {num(c['value'], 3)} | {num(c['bound'], 3)} | {met} |")
    return lines


def markdown(result: Mapping[str, Any]) -> str:
    """The whole report as Markdown (also printed)."""
    s = result["settings"]
    trained = "; ".join(f"{o}: {i['trained_on']['dataset']} {'+'.join(i['trained_on']['splits'])} "
                        f"(cameras {', '.join(i['trained_on']['cameras'])})"
                        for o, i in result["obfuscators"].items() if i["trained_on"])
    out = ["# Generalisation: leave-one-source-out", "",
           f"`{result['provenance']['command']}` at commit {str(result['provenance']['commit'])[:10]}; "
           f"at most {s['max_frames'] or 'every'} evenly spaced frames per source. Relative AP50 is against each "
           "detector's own boxes on the clean frames; count MAE and bias are obfuscated vs clean persons per frame; "
           "boxes found are the clean boxes matched (IoU >= 0.5) at the detector's operating threshold.", "",
           f"Trained on: {trained or 'nothing'}; fold:1 is trained on nothing. A source is left out for an obfuscator "
           "when none of its cameras was in its training or validation data: the PETS rows are not left out for the "
           "shipped checkpoints (same camera and scene, other frames).", "",
           "## Per detector: mean and worst left-out source", "", *summary_markdown(result), "",
           "## Per source: relative AP50 % (count MAE)", ""]
    for obf in result["obfuscators"]:
        out += source_markdown(result, obf)
    if result.get("faces"):
        out += ["## Faces found again (the scorecard's face columns)", "", *faces_markdown(result["faces"]), ""]
    out += ["## Targets (issue #21 items 2 and 3)", "",
            "The default is compared with fold:1 on the default's left-out sources (fold:1's rows above also average "
            "the PETS test split); faces on the shared face clips; the edge checkpoint on each of its left-out sources.",
            "", *target_markdown(result["targets"]), "",
            "Adaptive re-identification (item 2) and frames/s (item 3) are not measured here: see the privacy "
            "scorecard and benchmarks/edge.py."]
    return "\n".join(out) + "\n"


# -- main --------------------------------------------------------------------------------------------------------


def zoo_detectors(given: str | None) -> list[str]:
    """The detectors to score with: the given ones, else every zoo (ONNX) detector whose weights are here."""
    from silhouette.detectors.onnx_zoo import ZOO
    from silhouette.evaluation.evaluate import available_detectors

    if given:
        return [d.strip() for d in given.split(",") if d.strip()]
    return [d for d in available_detectors(include_torchvision=False)[0] if d in ZOO]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score every source and the face clips; the result dict (without provenance)."""
    from tqdm import tqdm

    from silhouette.evaluation.evaluate import make_detector

    sources = enumerate_sources(Path(args.pets), Path(args.intel))
    modules, info = load_obfuscators(args.obfuscators, sources)
    det_names = zoo_detectors(args.detectors)
    detectors = {d: make_detector(d) for d in det_names}  # built once, shared by every source and obfuscator
    steps = len(sources) * len(modules) + (0 if args.no_faces else len(modules))
    with tqdm(total=steps, desc="generalisation", unit="run", disable=args.no_progress) as bar:
        results = score_sources(sources, modules, info, detectors, args.max_frames or None, bar)
        faces = None if args.no_faces else score_faces(modules, args.face_every, bar)
    return {"experiment": "leave-one-source-out generalisation (issue #21)",
            "settings": {"max_frames": args.max_frames, "smoke": args.smoke, "face_every": args.face_every,
                         "threads": args.threads, "pred_threshold": 0.05, "label_threshold": "each detector's own"},
            "obfuscators": info, "detectors": {d: {} for d in det_names}, "sources": sources, "results": results,
            "summary": summary_table(results, list(modules), det_names), "faces": faces,
            "targets": targets(results, faces, list(modules), det_names)}


def run_and_write(args: argparse.Namespace, run_fn: Any, report_fn: Any, script: Path, argv: list[str] | None) -> int:
    """Run an experiment (`run_fn(args)`), then print its report and write JSON (with provenance) and Markdown beside
    it; exit status 2 with one line on a user error. Shared by the experiments that score footage this way."""
    import torch

    from silhouette.evaluation.evaluate import jsonable
    from silhouette.errors import SilhouetteError
    from silhouette.fileio import atomic_open, write_json
    from silhouette.provenance import provenance

    torch.set_num_threads(args.threads)
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # a COCO summary per AP otherwise
    t0 = time.perf_counter()
    try:
        result = run_fn(args)
    except SilhouetteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    result["provenance"] = provenance([python, os.path.relpath(script.resolve(), REPO),
                                       *(sys.argv[1:] if argv is None else argv)])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result = jsonable(result)
    out = Path(args.out)
    write_json(out, result)
    report = report_fn(result)
    with atomic_open(out.with_suffix(".md"), encoding="utf-8") as fh:
        fh.write(report)
    print(report)
    print(f"wrote {out} and {out.with_suffix('.md')} in {result['seconds']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write JSON and Markdown."""
    return run_and_write(parse(argv), run, markdown, Path(__file__), argv)


if __name__ == "__main__":
    sys.exit(main())
