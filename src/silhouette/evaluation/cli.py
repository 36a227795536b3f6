"""`silhouette evaluate` and `silhouette reproduce`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from silhouette.errors import SilhouetteError

DEFAULT_REPRODUCE_CONFIG = "configs/reproduce_cpu.yaml"
SECTION_NAMES = "generalisation, cross_detector, baselines, cost, width_sweep, examples"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the evaluation commands."""
    p = sub.add_parser(
        "evaluate",
        help="person AP / count error / similarity of an obfuscator on a prepared dataset",
        description=(
            "Run each detector on clean and obfuscated frames. Relative AP: obfuscated-frame detections vs the "
            "detector's own detections on the clean frames (the paper's protocol); absolute AP vs human ground "
            "truth where the dataset has it. Prints a table and writes evaluation.json to --out."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="CKPT", help="obfuscator checkpoint (default: the shipped default obfuscator)")
    src.add_argument("--baseline", metavar="METHOD:PARAM",
                     help="evaluate a classic obfuscation instead, e.g. blur:2.0, noise:0.05, quantize:8, pixelate:4, "
                          "or fold:1 (the pointwise map 2·min(x, 1-x) the CPU recipe warm-starts on)")
    src.add_argument("--clean", action="store_true", help="evaluate the unmodified frames (sanity check: relative AP 100%%)")
    src.add_argument("--pair", metavar="CKPT",
                     help="a private-mode pair: the obfuscator checkpoint and the co-trained detector saved beside it, or "
                          "the pair.json of a fine-tuned baseline (`silhouette finetune`); relative AP compares its "
                          "detector with the unmodified detector on the clean frames")
    p.add_argument("--data", required=True, metavar="DIR", help="prepared dataset folder (from `silhouette prepare`)")
    p.add_argument("--split", metavar="SPLIT",
                   help="split to evaluate on: train, val, test or 'all' (default: test). Your own footage from a "
                        "single camera (the video/folder datasets) is cut by time, so its test split is only the last "
                        "20%% of the clip: there evaluate asks you to choose --split all (every frame: an obfuscator "
                        "not trained on this footage) or --split test (the frames training did not see) instead of "
                        "silently scoring a fifth of it")
    p.add_argument("--cameras", metavar="A,B", help="only these cameras (comma-separated)")
    p.add_argument("--detectors", metavar="A,B",
                   help="comma-separated detector specs, or 'all' (default: the checkpoint's training detector, "
                        "else every zoo detector whose weights are present)")
    p.add_argument("--max-frames", type=int, metavar="N", help="evaluate on at most N evenly spaced frames")
    p.add_argument("--stride", type=int, default=1, metavar="K", help="use every K-th frame (default: 1)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="frames per batch (default: 8)")
    p.add_argument("--label-threshold", type=float, metavar="T",
                   help="score threshold of the clean-frame pseudo-labels (default: each detector's operating threshold)")
    p.add_argument("--out", metavar="DIR", help="write evaluation.json into this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=evaluate_command)

    r = sub.add_parser(
        "reproduce",
        help="regenerate the paper's tables and figures into a report folder",
        description=(
            "Evaluate the checkpoints named in a YAML config and write REPORT.md (every table, with the command "
            "line and software versions), metrics.json and PNG figures into --out. Sections whose inputs are "
            "missing say 'not run: <reason>'."
        ),
    )
    r.add_argument("--out", required=True, metavar="DIR", help="report folder, e.g. results/reproduce_cpu (replaced atomically)")
    r.add_argument("--config", default=DEFAULT_REPRODUCE_CONFIG, metavar="YAML",
                   help=f"reproduction config (default: {DEFAULT_REPRODUCE_CONFIG})")
    r.add_argument("--quick", action="store_true", help="same code on a few frames per test set (smoke test)")
    r.add_argument("--only", metavar="A,B", help=f"only these sections: {SECTION_NAMES}")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.set_defaults(func=reproduce_command)


def _quiet_coco_logs() -> None:
    """faster_coco_eval logs a full COCO summary at INFO for every AP computed; keep the console readable."""
    import logging

    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed when run through the console script, else an equivalent one rebuilt from `args`."""
    import shlex
    import sys

    if "reproduce" in sys.argv[1:]:
        return shlex.join(["silhouette", *sys.argv[1:]])
    parts = ["silhouette", "reproduce", "--out", args.out, "--config", args.config]
    parts += ["--quick"] if args.quick else []
    parts += ["--only", args.only] if args.only else []
    return shlex.join(parts)


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _baseline_source(spec: str) -> tuple[Callable[[Any], Any], str]:
    """--baseline METHOD:NUMBER as a frame transform and its description."""
    from silhouette.evaluation.baselines import get_baseline

    method, _, param = spec.partition(":")
    base = get_baseline(method.strip())
    try:
        value = float(param)
    except ValueError as exc:
        raise SilhouetteError(f"--baseline {spec!r}: expected METHOD:NUMBER, e.g. blur:2.0") from exc
    return (lambda x: base.apply(x, value)), f"baseline {base.name} ({base.describe(value)})"


def _checkpoint_source(checkpoint: str | None) -> tuple[Any, str, str | None]:
    """The obfuscator of --checkpoint (else the shipped default), its description and the detector it was trained on."""
    from silhouette.detectors.adapt import refuse_private
    from silhouette.models.checkpoint import DEFAULT_CHECKPOINT, build_from_entry, read_checkpoint

    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not checkpoint and not path.is_file():
        raise SilhouetteError(f"no --checkpoint given and the default obfuscator {path} is not installed")
    ckpt = read_checkpoint(path)
    refuse_private(ckpt, path)
    det_cfg = (ckpt.get("config") or {}).get("detector")
    trained_on = det_cfg.get("spec") if isinstance(det_cfg, dict) else None
    return build_from_entry(ckpt["obfuscator"], path).eval(), f"checkpoint {path}", trained_on


def _evaluation_detectors(spec: str | None, trained_on: str | None) -> list[str]:
    """--detectors as a list: 'all' usable ones; none given: the one trained against, else every usable zoo detector."""
    from silhouette.evaluation.evaluate import available_detectors

    dets = _csv(spec)
    if dets == ["all"]:
        return available_detectors()[0]
    if dets is not None:
        return dets
    if trained_on:
        return [trained_on]
    from silhouette.detectors.onnx_zoo import ZOO

    return [d for d in available_detectors(include_torchvision=False)[0] if d in ZOO]


def evaluate_command(args: argparse.Namespace) -> int:
    """Handler of `silhouette evaluate`."""
    import torch

    from silhouette.evaluation.evaluate import evaluate_obfuscator, format_evaluation, jsonable
    from silhouette.fileio import write_json

    _quiet_coco_logs()
    if args.max_frames is not None and args.max_frames < 1:
        raise SilhouetteError(f"--max-frames {args.max_frames}: must be >= 1")
    if args.batch_size < 1:
        raise SilhouetteError(f"--batch-size {args.batch_size}: must be >= 1")
    data = Path(args.data)
    if not data.is_dir():
        raise SilhouetteError(f"--data {data}: folder not found; prepare it with `silhouette prepare DATASET --out {data}`")
    split_name = args.split or _default_split(data, _csv(args.cameras))  # before any model is loaded
    trained_on, reference = None, None
    if args.pair:
        transform, what, dets, reference = _pair_source(args)  # the pair names its own detector
    elif args.clean:
        transform, what = None, "clean frames"
    elif args.baseline:
        transform, what = _baseline_source(args.baseline)
    else:
        transform, what, trained_on = _checkpoint_source(args.checkpoint)
    if not args.pair:
        dets = _evaluation_detectors(args.detectors, trained_on)
    split = None if split_name == "all" else split_name
    # scoped, not global: the CLI also runs in-process (tests, notebooks) where later code needs autograd
    with torch.no_grad():
        res = evaluate_obfuscator(
            transform, data, split, dets, cameras=_csv(args.cameras), max_frames=args.max_frames, stride=args.stride,
            batch_size=args.batch_size, label_threshold=args.label_threshold, progress=not args.no_progress,
            reference=reference,
        )
    res["obfuscation"] = what
    print(f"{what}")
    print(format_evaluation(res))
    if args.out:
        out = Path(args.out) / "evaluation.json"
        from silhouette.provenance import provenance

        write_json(out, {**jsonable(res), "provenance": provenance()})
        print(f"wrote {out}")
    return 0


USER_FOOTAGE = ("video", "folder")  # datasets of the user's own footage; pets2009 and intel have fixed protocols


def _default_split(data: Path, cameras: list[str] | None) -> str:
    """'test', unless the frames come from one camera of the user's own footage cut by time: then a one-line error."""
    from silhouette.data.manifest import load_manifest, select_records

    manifest = load_manifest(data)
    if manifest.get("dataset") not in USER_FOOTAGE:
        return "test"  # a registered benchmark: its split is the protocol the shipped results were made with
    records = select_records(manifest, None, cameras)
    cams = sorted({r["camera"] for r in records})
    splits = {r["split"] for r in records}
    if len(cams) != 1 or len(splits) < 2:
        return "test"
    n_test = sum(r["split"] == "test" for r in records)
    raise SilhouetteError(
        f"--data {data}: all frames come from one camera ({cams[0]}), cut by time, so its test split is only the last "
        f"{n_test} of {len(records)} frames; pass --split all to score every frame (an obfuscator not trained on this "
        "footage) or --split test to score only the frames training did not see"
    )


def _pair_source(args: argparse.Namespace) -> tuple:  # type: ignore[type-arg]
    """Obfuscator, description, detectors and clean-frame references of `--pair CKPT`."""
    from silhouette.detectors.adapt import pair_detector, read_pair
    from silhouette.models.checkpoint import build_from_entry, read_checkpoint

    if args.detectors:
        raise SilhouetteError("--pair brings its own detector; drop --detectors")
    det = pair_detector(args.pair)
    pair = read_pair(args.pair)
    if "baseline" in pair:  # a fine-tuned baseline: a classic obfuscation and a detector adapted to it
        from silhouette.evaluation.silhouettes import make_transform

        # silhouettes take the background of the footage being scored (its train split: frames the camera saw before)
        transform = make_transform(pair["baseline"], args.data, _csv(args.cameras))
        what, name = f"fine-tuned baseline {pair['baseline']}", f"{det.name} (fine-tuned)"
    else:
        transform = build_from_entry(read_checkpoint(args.pair)["obfuscator"], args.pair).eval()
        what, name = f"private pair {args.pair}", f"{det.name} (co-trained)"
    return transform, what, {name: det}, {name: det.name}


def reproduce_command(args: argparse.Namespace) -> int:
    """Handler of `silhouette reproduce`."""
    from silhouette.evaluation.reproduce import reproduce
    from silhouette.paths import REPO_ROOT

    _quiet_coco_logs()
    config = Path(args.config)
    if not config.is_file() and args.config == DEFAULT_REPRODUCE_CONFIG and (REPO_ROOT / config).is_file():
        config = REPO_ROOT / config  # run from outside the checkout
    out = reproduce(args.out, config, quick=args.quick, only=_csv(args.only), progress=not args.no_progress,
                    command=_command_line(args))
    print(f"wrote {out / 'REPORT.md'}, {out / 'metrics.json'} and figures")
    return 0
