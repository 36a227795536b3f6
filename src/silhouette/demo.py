"""`silhouette demo`: the main job on embedded defaults, end to end on the PETS 2009 footage."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from silhouette.errors import SilhouetteError
from silhouette.fileio import write_csv

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


DEFAULT_PAIR_NAME = "silhouette_pair.json"  # the shipped private pair, beside its .detector.onnx in assets/


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` command."""
    p = sub.add_parser(
        "demo",
        help="both modes side by side on the PETS 2009 test frames: counts and pictures",
        description=(
            "Prepare the PETS 2009 footage and count the people of its test split three ways: the unmodified detector on "
            "the original frames, compatible mode (the shipped obfuscator, the unmodified detector) and private mode "
            "(the shipped private pair: background-subtraction silhouettes and a detector fine-tuned on them; or a learned "
            "pair given with --pair). Writes side_by_side.png, "
            "counts.png and counts.csv. A mode whose files are not installed is left out with a warning."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    p.add_argument("--data", type=Path, default=None, help="prepared pets2009 folder, used as it is (default: OUT/pets2009, prepared on first use)")
    p.add_argument("--detector", default="yolox_nano", help="zoo detector that plays the cloud service in compatible mode")
    p.add_argument("--checkpoint", type=Path, default=None, help="compatible-mode obfuscator (default: the shipped one)")
    p.add_argument("--pair", type=Path, default=None, help="private-mode pair: a pair.json or a co-trained .pt (default: the shipped silhouette pair)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N test frames (quick look)")
    p.add_argument("--threshold", type=float, default=0.3, help="person score threshold for counting")
    p.set_defaults(func=run_demo)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _modes(args: argparse.Namespace, detector: object) -> dict[str, tuple[object, object]]:
    """{mode: (obfuscator, detector)}; a shipped file that is missing drops its mode with a warning."""
    from silhouette.detectors.adapt import pair_detector, read_pair
    from silhouette.models.checkpoint import build_from_entry, load_obfuscator, read_checkpoint
    from silhouette.paths import ASSETS_DIR

    modes: dict[str, tuple[object, object]] = {}
    try:
        modes["compatible"] = (load_obfuscator(args.checkpoint), detector)
    except SilhouetteError as exc:
        if args.checkpoint is not None:
            raise
        log.warning("%s; compatible mode left out", exc)
    pair = args.pair or ASSETS_DIR / DEFAULT_PAIR_NAME
    if args.pair is None and not pair.is_file():
        log.warning("no private pair installed (%s); private mode left out", pair)
        return modes
    if pair.suffix == ".json":  # silhouettes need the footage's background: built once the data is prepared
        modes["private"] = (read_pair(pair)["baseline"], pair_detector(pair))
    else:
        modes["private"] = (build_from_entry(read_checkpoint(pair)["obfuscator"], pair).eval(), pair_detector(pair))
    return modes


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from silhouette.data import FrameDataset, prepare_dataset
    from silhouette.detectors import create_detector

    out: Path = args.out
    detector = create_detector(args.detector)  # fail on a bad name before minutes of decoding
    modes = _modes(args, detector)
    data_root = args.data or out / "pets2009"
    if args.data is None or not (data_root / "manifest.json").is_file():
        prepare_dataset("pets2009", data_root)  # a --data folder that is already prepared is used as it is
    for mode, (obf, det) in list(modes.items()):
        if isinstance(obf, str):  # a fine-tuned baseline: its frames from the camera's (the train split's) background
            from silhouette.evaluation.silhouettes import make_transform

            modes[mode] = (make_transform(obf, data_root), det)
    ds = FrameDataset(data_root, split="test")
    n = len(ds) if args.max_frames is None else min(len(ds), args.max_frames)
    if n == 0:
        raise SilhouetteError(f"{data_root}: the test split is empty")
    rows, dets, example = _count_all(ds, n, detector, modes, args.threshold)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "counts.csv", list(rows[0]), rows)
    _plot_counts(out / "counts.png", rows, list(modes))
    _side_by_side(out / "side_by_side.png", example)
    _print_summary(args, n, dets)
    print(f"wrote {out / 'counts.csv'}, {out / 'counts.png'}, {out / 'side_by_side.png'}")
    return 0


def _count_all(ds: object, n: int, detector: object, modes: dict, threshold: float) -> tuple[list, dict, list]:
    """Per-frame counts of GT, clean and every mode; detections per column; the first frame's panels."""
    import torch
    from tqdm import tqdm

    from silhouette.detectors.base import Detections

    rows: list[dict[str, object]] = []
    dets: dict[str, list] = {"gt": [], "clean": [], **{m: [] for m in modes}}
    example: list = []
    for idx in tqdm(_batches(n, 8), desc="demo", unit="batch"):
        items = [ds[i] for i in idx]
        images = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            outs = {m: obf(images) for m, (obf, _) in modes.items()}
        found = {"clean": detector.predict(images), **{m: modes[m][1].predict(o) for m, o in outs.items()}}
        for j, it in enumerate(items):
            b = it["gt_boxes"]
            dets["gt"].append(Detections.of_people(b))
            row: dict[str, object] = {"frame_index": it["frame_index"], "gt": len(b)}
            for col, per_frame in found.items():
                dets[col].append(per_frame[j].persons(threshold))
                row[col] = len(dets[col][-1])
            rows.append(row)
        if not example:
            example = [("original (never leaves the camera)", images[0], dets["clean"][-len(items)])]
            example += [(f"{m} mode (what the cloud sees)", outs[m][0], dets[m][-len(items)]) for m in modes]
    return rows, dets, example


def _print_summary(args: argparse.Namespace, n: int, dets: dict) -> None:
    """Count error of every column against GT (and the modes against the clean detector)."""
    from silhouette.evaluation.metrics import count_error

    print(f"{n} PETS 2009 test frames, threshold {args.threshold}; compatible mode uses {args.detector} unmodified, "
          "private mode the pair's own detector")
    for col in [c for c in dets if c != "gt"]:
        v = count_error(dets[col], dets["gt"])
        print(f"  {col:>10} vs ground truth: count MAE {v['mae']:.2f} persons/frame (bias {v['bias']:+.2f})")


def _plot_counts(path: Path, rows: list[dict[str, object]], modes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from silhouette.fileio import atomic_path

    x = [r["frame_index"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(x, [r["gt"] for r in rows], label="ground truth", color="black", lw=1.5)
    ax.plot(x, [r["clean"] for r in rows], label="detector on original frames", lw=1)
    for m in modes:
        ax.plot(x, [r[m] for r in rows], label=f"{m} mode", lw=1)
    ax.set_xlabel("frame")
    ax.set_ylabel("persons")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _side_by_side(path: Path, panels: list[tuple[str, torch.Tensor, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from silhouette.fileio import atomic_path
    from silhouette.imaging import tensor_to_rgb

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3), squeeze=False)
    for ax, (title, img, found) in zip(axes[0], panels):
        ax.imshow(tensor_to_rgb(img))
        for b in found.boxes.tolist():
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="lime", lw=1))
        ax.set_title(f"{title}: {len(found)} persons", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
