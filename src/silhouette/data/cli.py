"""`silhouette prepare` (footage -> frame dataset) and `silhouette label` (pseudo-label cache)."""

from __future__ import annotations

import argparse
from typing import Any

from silhouette.cli import positive_int
from silhouette.errors import SilhouetteError

FIT_HELP = (
    "footage of another aspect ratio than --size: letterbox = scale to fit, keep the aspect ratio, grey (114) bars; "
    "stretch = resize to --size, distorting; crop = scale to fill, keep the aspect ratio, cut the overflow evenly. "
    "Ground-truth boxes move with the pixels. Default: letterbox for your own footage (video, folder); stretch for "
    "pets2009 and intel, the paper's recipe that the shipped obfuscators and results were made with"
)


def register(subparsers: Any) -> None:
    """Add the `prepare` and `label` commands."""
    p = subparsers.add_parser(
        "prepare",
        help="decode footage into a resized frame dataset with a manifest and train/val/test splits",
        description=(
            "Decode a registered dataset's footage (video, GIF, image folders) into OUT/frames/<camera>/<index>.png, "
            "fitted to --size with cv2.INTER_AREA (--fit: letterbox keeps the aspect ratio), and write "
            "OUT/manifest.json (+ manifest.csv); prints one line per source frame size saying what the fit did. "
            "Re-running with the same options skips frames already written."
        ),
    )
    p.add_argument("dataset", nargs="?", help="dataset name (see --list): pets2009, intel, video, folder")
    p.add_argument("--list", action="store_true", help="list the registered datasets and how they are split, then exit")
    p.add_argument("--out", help="output folder of the prepared dataset")
    p.add_argument("--size", default="320x200", help="frame size WIDTHxHEIGHT (default: 320x200, the paper's)")
    p.add_argument("--fit", choices=["letterbox", "stretch", "crop"], help=FIT_HELP)
    samp = p.add_mutually_exclusive_group()
    samp.add_argument("--every", type=int, default=1, help="keep every N-th frame (default: 1 = all)")
    samp.add_argument("--fps", type=float, default=None, help="keep about F frames per second of footage")
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="frame file format (default: png, lossless)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 for --format jpg (default: 95)")
    p.add_argument("--force", action="store_true", help="delete frames made earlier (even with other options) and redo")
    p.add_argument("--source", action="append", metavar="PATH",
                   help="footage file or folder for the video/folder datasets (repeatable); pets2009: your vtest.avi")
    p.add_argument("--camera-pattern", metavar="RE",
                   help="regex extracting a camera id from file names (named group 'camera', else group 1)")
    p.add_argument("--split-by", choices=["time", "camera"], help="split frames by time within each camera, or by camera")
    p.add_argument("--split-fractions", metavar="TR,VA,TE", help="train,val,test fractions of each camera's timeline (default: 0.7,0.1,0.2)")
    p.add_argument("--camera-split", action="append", metavar="CAM=SPLIT",
                   help="put camera CAM wholly in SPLIT (repeatable; '*=train' for all others); implies --split-by camera")
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="refuse images and video frames larger than N pixels, checked before decoding "
                        "(default: 16777216 = 4096x4096)")
    p.add_argument("--strict", action="store_true",
                   help="fail (and write nothing) when a video ends before the frames its container promises "
                        "(default: warn and keep the frames decoded)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_prepare)
    _register_label(subparsers)


def _register_label(subparsers: Any) -> None:
    """Add the `label` command."""
    q = subparsers.add_parser(
        "label", help="cache a detector's person boxes on the clean frames (pseudo-labels for training/evaluation)",
        description="Run a detector over a prepared dataset and write DATASET_DIR/labels/<detector>_<threshold>.json "
                    "(COCO). Up-to-date labels are reused; stale ones (frames changed) are rebuilt.")
    q.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder made by `silhouette prepare`")
    q.add_argument("--detector", required=True, help="detector name or ensemble spec, e.g. yolox_nano or 'yolox_nano+nanodet_m'")
    q.add_argument("--threshold", type=float, default=0.3, help="keep person detections with score >= this (default: 0.3)")
    q.add_argument("--split", choices=["train", "val", "test"], help="label only this split (default: all frames)")
    q.add_argument("--batch-size", type=int, default=8, help="frames per detector call (default: 8)")
    q.add_argument("--force", action="store_true", help="rebuild even if up-to-date labels exist")
    q.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    q.set_defaults(func=cmd_label)


def _list_datasets() -> int:
    from silhouette.data.datasets import DATASETS

    for name in DATASETS.names():
        cls = DATASETS.get(name)
        print(f"{name:10s} {cls.description}")  # type: ignore[attr-defined]
        print(f"{'':10s} splits: {cls.splits_help()}")  # type: ignore[attr-defined]
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Handler of `silhouette prepare`."""
    if args.list:
        return _list_datasets()
    if not args.dataset:
        raise SilhouetteError("give a DATASET name (see `silhouette prepare --list`)")
    if not args.out:
        raise SilhouetteError("--out DIR is required: the folder to write the prepared dataset to")
    from silhouette.data.datasets import parse_fractions, prepare_dataset
    from silhouette.data.manifest import load_manifest, summarize
    from silhouette.data.sources import parse_size
    from silhouette.fileio import cleanup_on_sigterm

    size = parse_size(args.size, "--size")
    fractions = parse_fractions(args.split_fractions) if args.split_fractions else None
    split_by = args.split_by or ("camera" if args.camera_split else None)
    with cleanup_on_sigterm("prepare"):
        out = prepare_dataset(
            args.dataset, args.out, size=size, every=args.every, fps=args.fps, image_format=args.format,
            jpeg_quality=args.quality, force=args.force, progress=not args.no_progress,
            sources=args.source, camera_pattern=args.camera_pattern, split_by=split_by,
            split_fractions=fractions, camera_splits=args.camera_split, max_pixels=args.max_pixels, strict=args.strict,
            fit=args.fit,
        )
    manifest = load_manifest(out)
    s = summarize(manifest)
    st = manifest.get("stats", {})
    print(f"{out}: {s['frames']} frames of {size[0]}x{size[1]} "
          f"({st.get('written', '?')} written, {st.get('skipped', '?')} already there)")
    for fit in manifest.get("fit", []):
        print(f"resize: {fit['description']}, {fit['frames']} frames")
    splits = [sp for sp in ("train", "val", "test") if sp in s["per_split"]]
    print(f"{'camera':40s} " + " ".join(f"{sp:>6s}" for sp in splits))
    for cam, per in sorted(s["per_camera"].items()):
        print(f"{cam:40s} " + " ".join(f"{per.get(sp, 0):6d}" for sp in splits))
    print(f"{'total':40s} " + " ".join(f"{s['per_split'][sp]:6d}" for sp in splits))
    if s["annotated_frames"]:
        print(f"ground truth: {s['gt_boxes']} person boxes on {s['annotated_frames']} frames")
    else:
        print("ground truth: none (use `silhouette label` for pseudo-labels)")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Handler of `silhouette label`."""
    from silhouette.data.labels import (
        PseudoLabelsMissing,
        PseudoLabelsStale,
        build_pseudo_labels,
        labels_path,
        load_pseudo_labels,
    )
    from silhouette.data.manifest import load_manifest

    manifest = load_manifest(args.dataset_dir)
    path = labels_path(args.dataset_dir, args.detector, args.threshold, args.split)
    status = "up to date"
    try:
        if args.force:
            raise PseudoLabelsMissing("forced")
        labels = load_pseudo_labels(args.dataset_dir, args.detector, args.threshold, args.split)
    except (PseudoLabelsMissing, PseudoLabelsStale):
        path = build_pseudo_labels(args.dataset_dir, args.detector, args.threshold, args.split, args.batch_size,
                                   progress=not args.no_progress)
        labels = load_pseudo_labels(args.dataset_dir, args.detector, args.threshold, args.split)
        status = "written"
    if not path.is_file():  # served by the all-frames file, filtered to the split
        path = labels_path(args.dataset_dir, args.detector, args.threshold, None)
    split_of = {r["file"]: r["split"] for r in manifest["frames"]}
    frames: dict[str, int] = {}
    persons: dict[str, int] = {}
    for file, det in labels.items():
        sp = split_of[file]
        frames[sp] = frames.get(sp, 0) + 1
        persons[sp] = persons.get(sp, 0) + len(det)
    print(f"{path} ({status}): {args.detector} persons with score >= {args.threshold:g}")
    print(f"{'split':6s} {'frames':>7s} {'persons':>8s} {'per frame':>9s}")
    for sp in ("train", "val", "test"):
        if sp in frames:
            print(f"{sp:6s} {frames[sp]:7d} {persons[sp]:8d} {persons[sp] / frames[sp]:9.2f}")
    return 0
