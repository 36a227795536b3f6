"""Leave-one-source-out training of a compatible recipe: does a learned obfuscator beat fold:1 on unseen footage?

For every shared source (the PETS 2009 footage and each Intel camera) the recipe (default `configs/general.yaml`:
every shared source, camera-diversity augmentation, the face adversary) is trained once *without that source*:
- PETS left out: trained on every Intel camera (its worker-zone camera validates);
- an Intel camera left out: trained on the PETS train split plus every other Intel camera (PETS val validates).

The fold's obfuscator (its `best.pt`) and the zero-MAC `fold:1` are then scored on the left-out source by every zoo
detector with the protocol of `experiments/generalisation.py` (relative AP50 against each detector's own boxes on
the clean frames, count MAE, boxes found), and where the left-out source is a face clip, by the scorecard's face
columns (MTCNN and Haar, duplicates merged) on that clip. It prints and writes JSON (with provenance) and Markdown:
the mean and worst left-out source per detector, and the #21 targets (>= 98 % of fold:1's relative AP50 for every
detector, count MAE no worse than fold:1's, at most half of fold:1's faces).

Each fold's run folder (`--runs`/<source>) checkpoints as it trains and keeps its scores, so an interrupted run
resumes where it stopped. This is an experiment (minutes to hours of training), not a speed benchmark.

    python experiments/loso.py                                  # every fold: results/experiments/loso.{json,md}
    python experiments/loso.py --sources intel/people-detection # one fold
    python experiments/loso.py --reuse results/experiments/loso.json  # score new folds, keep those already there
    python experiments/loso.py --smoke --out /tmp/loso.json     # a seconds-long training per fold, 2 folds
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalisation as G  # noqa: E402  (the scoring protocol, shared with the shipped-checkpoint table)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "experiments" / "loso.json"
SMOKE_SET = ["train.epochs=1", "train.warmup_steps=5", "data.max_per_camera=4", "data.max_val_frames=8"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, metavar="YAML",
                   help="the recipe trained per fold (default configs/general.yaml; with --finetune configs/private.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for every fold")
    p.add_argument("--finetune", metavar="SPEC", help="private mode instead: per fold, fine-tune YOLOX-Nano on this "
                   "baseline's frames (e.g. bgsub:mask, the shipped pair's) with --config's budget (default "
                   "configs/private.yaml), and score it beside the shipped pair")
    p.add_argument("--sources", metavar="A,B", help="left-out sources (default: every shared source)")
    p.add_argument("--runs", default="runs/loso", metavar="DIR", help="one training run per fold (resumed if there)")
    p.add_argument("--reuse", metavar="JSON", help="an earlier result of this script with the same settings: its folds "
                   "are taken from it (with its commit) instead of retrained; the others are trained and scored")
    p.add_argument("--pets", default="runs/data/pets2009", metavar="DIR", help="prepared PETS 2009 (prepared if missing)")
    p.add_argument("--intel", default="runs/data/intel", metavar="DIR", help="prepared Intel clips (prepared if missing)")
    p.add_argument("--detectors", metavar="A,B", help="zoo detectors (default: every zoo detector here)")
    p.add_argument("--max-frames", type=int, default=32, metavar="N", help="evenly spaced frames scored per source")
    p.add_argument("--face-every", type=int, default=3, metavar="K", help="one face-clip frame in K (default 3)")
    p.add_argument("--threads", type=int, default=2, metavar="N", help="torch CPU threads (default: 2)")
    p.add_argument("--smoke", action="store_true", help="seconds-long trainings, 2 folds, 8 frames, YOLOX-Nano only")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="JSON", help="result JSON (Markdown beside it)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    if args.max_frames < 1 or args.face_every < 1 or args.threads < 1:
        p.error("--max-frames, --face-every and --threads must be >= 1")
    args.config = args.config or ("configs/private.yaml" if args.finetune else "configs/general.yaml")
    if args.finetune:  # the other sources have no human boxes: every fold learns from the clean detector's boxes
        args.set = ["detector.targets=pseudo", "data.max_per_camera=48", *args.set]
    if args.smoke:  # last, so its small budget wins
        args.set = [*args.set, *SMOKE_SET]
        args.max_frames, args.detectors = 8, args.detectors or G.SMOKE_DETECTOR
    return args


# -- folds ---------------------------------------------------------------------------------------------------------


def fold_overrides(source: Mapping[str, Any], pets: Path, intel: Path) -> list[str]:
    """The config overrides that train without `source`."""
    if source["dataset"] == "pets2009":
        return ["data.dataset=intel", f"data.root={intel}", "data.train_split=all", "data.val_split=val",
                "data.extra_roots=[]", "data.exclude_cameras=[]"]
    return [f"data.root={pets}", f"data.extra_roots=['{intel}:all']",
            f"data.exclude_cameras={json.dumps(source['cameras'])}"]


def slug(source_id: str) -> str:
    """A folder name for a source id."""
    return source_id.replace("/", "__")


def train_fold(args: argparse.Namespace, source: Mapping[str, Any], out: Path) -> Path:
    """Train (or resume, or reuse) the fold that leaves `source` out; the checkpoint it keeps."""
    from silhouette.training import load_config, train

    done = out / "done.json"
    if not done.is_file():
        overrides = [*args.set, *fold_overrides(source, Path(args.pets), Path(args.intel))]
        cfg = load_config(REPO / args.config if not Path(args.config).is_absolute() else args.config, overrides)
        cfg.name = f"loso-{slug(source['id'])}"
        t0 = time.time()
        if args.finetune:
            from silhouette.training.finetune import Finetuner

            pair = Finetuner(cfg, args.finetune, out, resume=(out / "last.pt").is_file(), progress=not args.no_progress).run()
            summary = {f"val_{k}": v for k, v in pair["history"][-1].items() if k.startswith("val_")} if pair["history"] else {}
            summary = {k.replace("val_val_", "val_"): v for k, v in summary.items()}
        else:
            summary = train(cfg, out, resume=(out / "last.pt").is_file(), progress=not args.no_progress)
        done.write_text(json.dumps({"overrides": overrides, "seconds": round(time.time() - t0, 1),
                                    "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}))
    if args.finetune:
        return out / "pair.json"
    return out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"


def check_left_out(ckpt: Path, source: Mapping[str, Any]) -> dict[str, Any]:
    """What the fold trained on, read back from its checkpoint; fails if the left-out source was in it."""
    from silhouette.errors import SilhouetteError
    from silhouette.models.checkpoint import read_checkpoint

    data = (read_checkpoint(ckpt).get("config") or {}).get("data") or {}
    seen = {"dataset": data.get("dataset"), "extra_roots": data.get("extra_roots"),
            "exclude_cameras": data.get("exclude_cameras")}
    leaked = (data.get("dataset") == source["dataset"] if source["dataset"] == "pets2009"
              else not set(source["cameras"]) <= set(data.get("exclude_cameras") or []))
    if leaked:
        raise SilhouetteError(f"{ckpt}: trained on {source['id']}, which its fold must leave out; delete {ckpt.parent}")
    return seen


def score_fold(args: argparse.Namespace, source: dict[str, Any], ckpt: Path, detectors: Mapping[str, Any],
               bar: Any) -> dict[str, Any]:
    """The fold's obfuscator and fold:1 on the left-out source (and its face clip, if it is one)."""
    from silhouette.evaluation.baselines import BaselineModule
    from silhouette.models import load_obfuscator

    model = load_obfuscator(ckpt).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    modules = {"learned": model, "fold:1": BaselineModule("fold:1")}
    info = {"learned": {"trained_on": None}, "fold:1": {"trained_on": None}}  # left out by construction (checked)
    rows = G.score_sources([source], modules, info, detectors, args.max_frames, bar)[source["id"]]
    clips = [c for c in source["clips"] if c in face_clips()]
    faces = score_clip_faces(modules, clips, args.face_every) if clips else None
    return {"checkpoint": str(ckpt), "trained_on": check_left_out(ckpt, source), "rows": rows, "faces": faces}


def score_pair_fold(args: argparse.Namespace, source: dict[str, Any], pair: Path, bar: Any) -> dict[str, Any]:
    """The fold's fine-tuned pair, the shipped silhouette pair and fold:1 (unmodified detector) on the left-out source;
    each scored against the unmodified YOLOX-Nano's boxes on the clean frames."""
    from silhouette.detectors.adapt import pair_detector
    from silhouette.evaluation.baselines import BaselineModule
    from silhouette.evaluation.evaluate import evaluate_obfuscator
    from silhouette.evaluation.silhouettes import make_transform
    from silhouette.paths import ASSETS_DIR

    shipped = ASSETS_DIR / "silhouette_pair.json"
    rows: dict[str, Any] = {}
    for name, pair_file in (("learned", pair), ("shipped pair", shipped), (G.REFERENCE, None)):
        bar.set_postfix_str(f"{source['id']} · {name}")
        if pair_file is None:
            transform, det = BaselineModule(G.REFERENCE), "yolox_nano"
        else:  # a camera learns its own scene: the left-out source's own background, never seen in training
            transform = make_transform(args.finetune, source["root"], cameras=source["cameras"])
            det = pair_detector(pair_file)
        res = evaluate_obfuscator(transform, source["root"], source["split"], {"yolox_nano": det}, cameras=source["cameras"],
                                  max_frames=args.max_frames, progress=False, reference={"yolox_nano": "yolox_nano"})
        rows[name] = {"left_out": name != "shipped pair" or source["dataset"] != "pets2009", "frames": res["frames"],
                      "similarity": {k: res["similarity"][k] for k in ("ssim", "psnr")},
                      "detectors": {d: G.compact(r) for d, r in res["detectors"].items()}}
        bar.update(1)
    return {"checkpoint": str(pair), "trained_on": json.loads(pair.read_text()).get("baseline"), "rows": rows,
            "faces": None}


def face_clips() -> tuple[str, ...]:
    """The scorecard's face clips (file names of shared Intel clips)."""
    from silhouette.privacy.faces import FACE_CLIPS

    return FACE_CLIPS


def score_clip_faces(modules: Mapping[str, Any], clips: list[str], every: int) -> dict[str, Any]:
    """The scorecard's face columns on these shared face clips: per obfuscator, faces found again / reference."""
    import torch

    from silhouette.paths import data_dir
    from silhouette.privacy import faces as F

    names = [n for n, why in F.available_face_detectors().items() if not why]
    footage = F.resolve_footage([str(data_dir() / "intel" / c) for c in clips])
    frames = F.load_footage(footage, every=every)
    detectors = [F.build_face_detector(n) for n in names]
    refs: dict[str, list[Any]] = {}
    out: dict[str, Any] = {"footage": F.footage_summary(footage, frames), "every": every, "rows": {}}
    for name, module in modules.items():
        with torch.no_grad():
            res = F.run_face_attack(detectors, frames, module, references=refs)
        out["rows"][name] = {d.name: {"reference_faces": res[d.name]["reference_faces"],
                                      **res[d.name]["obfuscated"]} for d in detectors}
    return out


# -- summary -------------------------------------------------------------------------------------------------------


def pooled_faces(folds: Mapping[str, Any]) -> dict[str, Any] | None:
    """Faces found again over every face-clip fold, summed per obfuscator and face detector."""
    parts = [f["faces"] for f in folds.values() if f.get("faces")]
    if not parts:
        return None
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for part in parts:
        for obf, per in part["rows"].items():
            for fd, r in per.items():
                acc = rows.setdefault(obf, {}).setdefault(fd, {"reference_faces": 0, "found_again": 0})
                acc["reference_faces"] += r["reference_faces"]
                acc["found_again"] += r["found_again"]
    for per in rows.values():
        for acc in per.values():
            acc["fraction"] = acc["found_again"] / acc["reference_faces"] if acc["reference_faces"] else math.nan
    return {"footage": [c for part in parts for c in part["footage"]], "every": parts[0]["every"], "notes": [],
            "rows": rows}


def loso_targets(results: Mapping[str, Any], faces: Mapping[str, Any] | None, dets: list[str]) -> list[dict[str, Any]]:
    """Issue #21 item 2 for the learned recipe against fold:1, over the left-out sources."""
    out, ids = [], list(results)
    for d in dets:
        ours, ref = G.summarise(results, "learned", d, ids), G.summarise(results, G.REFERENCE, d, ids)
        share = G.TARGETS["ap50_share_of_fold"]
        out.append(G.check(f"learned relAP50 >= {share:.0%} of fold:1's ({d})", ours["mean_relative_ap50"],
                           share * ref["mean_relative_ap50"], True, "mean over the left-out sources"))
        out.append(G.check(f"learned count MAE <= fold:1's ({d})", ours["mean_count_mae"], ref["mean_count_mae"],
                           False, "mean over the left-out sources"))
    for fd in (faces or {}).get("rows", {}).get("learned", {}):
        share = G.TARGETS["faces_share_of_fold"]
        ours, ref = faces["rows"]["learned"][fd]["fraction"], faces["rows"][G.REFERENCE][fd]["fraction"]
        out.append(G.check(f"learned faces found <= {share:.0%} of fold:1's ({fd})", ours, share * ref, False,
                           "face clips, each by the fold that left it out"))
    return out


def pair_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue #20's utility target for private mode on footage it never saw: relative AP50 >= 0.80 on each source."""
    return [G.check(f"private relAP50 >= 80% ({sid})", r["learned"]["detectors"]["yolox_nano"]["relative_ap50"], 0.80,
                    True, "fine-tuned without this source") for sid, r in results.items()]


def markdown(result: Mapping[str, Any]) -> str:
    """The report as Markdown (also printed)."""
    s = result["settings"]
    title = ("fine-tuning of private mode (\"learned\" is the fold's own pair)" if s.get("finetune")
             else "training of a compatible recipe")
    out = [f"# Leave-one-source-out {title}", "",
           f"`{result['provenance']['command']}` at commit {str(result['provenance']['commit'])[:10]}: "
           f"`{s['config']}` {'fine-tuning YOLOX-Nano on ' + s['finetune'] + ' frames' if s.get('finetune') else 'trained'} "
           f"once per left-out source (overrides: {', '.join(s['set']) or 'none'}), scored "
           f"on at most {s['max_frames']} evenly spaced frames of the source it never saw; fold:1 is trained on nothing. "
           "Relative AP50 is against each detector's own boxes on the clean frames; count MAE is obfuscated vs clean "
           "persons per frame.", "", "## Per detector: mean and worst left-out source", "",
           *G.summary_markdown(result), "", "## Per source: relative AP50 % (count MAE)", ""]
    for obf in result["obfuscators"]:
        out += G.source_markdown(result, obf)
    if result.get("faces"):
        out += ["## Faces found again on the face clips, each by the fold that left it out", "",
                *G.faces_markdown(result["faces"]), ""]
    out += ["## Folds", "",  # a trained obfuscator keeps its best epoch, a fine-tuned pair its last
            "| left-out source | training s | val AP50 of the kept epoch | checkpoint | trained and scored by |",
            "|---|---:|---:|---|---|"]
    for sid, f in result["folds"].items():
        by = f.get("reused_from")  # folds taken over with --reuse name the run that made them
        made = f"commit {str(by['commit'])[:10]} ({by['file']})" if by else "this run"
        out.append(f"| {sid} | {G.num(f.get('train_seconds'), 0)} | {G.num(f.get('val_ap50'), 3)} | {f['checkpoint']} "
                   f"| {made} |")
    issue = "issue #20: private mode on footage it never saw" if s.get("finetune") else "issue #21 item 2"
    out += ["", f"## Targets ({issue})", "", *G.target_markdown(result["targets"])]
    return "\n".join(out) + "\n"


# -- main ----------------------------------------------------------------------------------------------------------


def fold_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that decide what a fold trains and scores (what `--reuse` must match)."""
    return {"config": args.config, "set": args.set, "finetune": args.finetune, "max_frames": args.max_frames,
            "face_every": args.face_every, "smoke": args.smoke}


def reused(args: argparse.Namespace) -> dict[str, Any]:
    """The folds of `--reuse`'s earlier result, refused unless it was made with these settings."""
    from silhouette.errors import SilhouetteError

    path = Path(args.reuse)
    try:
        prior = json.loads(path.read_text())
        settings, folds, results = prior["settings"], prior["folds"], prior["results"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SilhouetteError(f"--reuse {path}: not a result of this script ({type(e).__name__}); give its JSON") from None
    for key, value in fold_settings(args).items():
        if settings.get(key) != value:
            raise SilhouetteError(f"--reuse {path}: made with {key}={settings.get(key)!r}, this run has {value!r}; "
                                  "rerun without --reuse or with the same settings")
    prov = prior.get("provenance") or {}
    return {"folds": folds, "results": results,
            "from": {"file": str(path), "commit": prov.get("commit"), "dirty": prov.get("dirty"),
                     "command": prov.get("command")}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score every fold (resuming what is there); the result dict without provenance."""
    from tqdm import tqdm

    from silhouette.errors import SilhouetteError
    from silhouette.evaluation.evaluate import jsonable, make_detector

    sources = G.enumerate_sources(Path(args.pets), Path(args.intel))
    if args.sources:
        wanted = [w.strip() for w in args.sources.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {s["id"] for s in sources}]
        if unknown:
            raise SilhouetteError(f"--sources {unknown[0]}: unknown; sources: {', '.join(s['id'] for s in sources)}")
        sources = [s for s in sources if s["id"] in wanted]
    elif args.smoke:
        sources = [sources[0], sources[-1]]
    det_names = ["yolox_nano"] if args.finetune else G.zoo_detectors(args.detectors)
    detectors = {} if args.finetune else {d: make_detector(d) for d in det_names}
    obfs = ["learned", "shipped pair", G.REFERENCE] if args.finetune else ["learned", G.REFERENCE]
    folds, results = {}, {}
    prior = reused(args) if args.reuse else {"folds": {}}
    with tqdm(total=len(sources) * len(obfs), desc="loso scoring", unit="run", disable=args.no_progress) as bar:
        for src in sources:
            if src["id"] in prior["folds"]:
                fold = prior["folds"][src["id"]]  # a fold reused twice keeps the run that made it
                folds[src["id"]] = {**fold, "reused_from": fold.get("reused_from") or prior["from"]}
                results[src["id"]] = prior["results"][src["id"]]
                bar.update(len(obfs))
                continue
            out = Path(args.runs) / slug(src["id"])
            ckpt = train_fold(args, src, out)
            cache = out / f"score_{len(det_names)}det_{args.max_frames}f_{args.face_every}e.json"
            if cache.is_file():
                fold = json.loads(cache.read_text())
                bar.update(len(obfs))
            else:
                fold = jsonable(score_pair_fold(args, src, ckpt, bar) if args.finetune
                                else score_fold(args, src, ckpt, detectors, bar))
                cache.write_text(json.dumps(fold))
            done = json.loads((out / "done.json").read_text())
            fold["train_seconds"] = done["seconds"]
            fold["val_ap50"] = done["summary"].get("val_ap50")
            folds[src["id"]], results[src["id"]] = fold, fold.pop("rows")
            for name, row in results[src["id"]].items():
                row["left_out"] = row.get("left_out", True) if name == "shipped pair" else True
    faces = pooled_faces(folds)
    return {"experiment": "leave-one-source-out training (issue #21)",
            "settings": {**fold_settings(args), "threads": args.threads,
                         "reused": sorted(i for i in folds if i in prior["folds"])},
            "finetune": args.finetune,
            "obfuscators": {"learned": {"recipe": args.config, "finetune": args.finetune},
                            **({"shipped pair": {"pair": "src/silhouette/assets/silhouette_pair.json"}} if args.finetune else {}),
                            G.REFERENCE: {"baseline": G.REFERENCE}},
            "detectors": {d: {} for d in det_names}, "sources": sources, "folds": folds, "results": results,
            "summary": G.summary_table(results, obfs, det_names), "faces": faces,
            "targets": pair_targets(results) if args.finetune else loso_targets(results, faces, det_names)}


def main(argv: list[str] | None = None) -> int:
    """Run, print the report, write JSON and Markdown."""
    return G.run_and_write(parse(argv), run, markdown, Path(__file__), argv)


if __name__ == "__main__":
    sys.exit(main())
