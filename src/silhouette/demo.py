"""`silhouette demo`: the main job on embedded defaults, end to end on the PETS 2009 footage."""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import torch

from silhouette.errors import SilhouetteError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` command."""
    p = sub.add_parser(
        "demo",
        help="obfuscate the PETS 2009 test frames, detect people on them, write counts and pictures",
        description=(
            "Prepare the PETS 2009 footage, obfuscate its test split with the shipped obfuscator, run an "
            "unmodified zoo detector on clean and obfuscated frames, and write a side-by-side picture, "
            "a counts plot and counts.csv. Without a shipped obfuscator it shows the clean counts only."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    p.add_argument("--data", type=Path, default=None, help="prepared pets2009 folder (default: OUT/pets2009)")
    p.add_argument("--detector", default="yolox_nano", help="zoo detector that plays the cloud service")
    p.add_argument("--checkpoint", type=Path, default=None, help="obfuscator checkpoint (default: the shipped one)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N test frames (quick look)")
    p.add_argument("--threshold", type=float, default=0.3, help="person score threshold for counting")
    p.set_defaults(func=run_demo)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from tqdm import tqdm

    from silhouette.data import FrameDataset, prepare_dataset
    from silhouette.detectors import create_detector
    from silhouette.evaluation.metrics import count_error
    from silhouette.models import load_obfuscator

    out: Path = args.out
    detector = create_detector(args.detector)  # fail on a bad name before minutes of decoding
    data_root = args.data or out / "pets2009"
    prepare_dataset("pets2009", data_root)
    ds = FrameDataset(data_root, split="test")
    n = len(ds) if args.max_frames is None else min(len(ds), args.max_frames)
    if n == 0:
        raise SilhouetteError(f"{data_root}: the test split is empty")
    try:
        obfuscator = load_obfuscator(args.checkpoint)
    except SilhouetteError as exc:
        if args.checkpoint is not None:
            raise
        log.warning("%s; showing clean-frame counts only", exc)
        obfuscator = None

    rows: list[dict[str, object]] = []
    clean_dets, obf_dets, gt = [], [], []
    example: tuple[torch.Tensor, torch.Tensor | None, object, object] | None = None
    for idx in tqdm(_batches(n, 8), desc="demo", unit="batch"):
        items = [ds[i] for i in idx]
        images = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            obf = obfuscator(images) if obfuscator is not None else None
        dc = detector.predict(images)
        do = detector.predict(obf) if obf is not None else [None] * len(items)
        for it, c, o in zip(items, dc, do):
            from silhouette.detectors.base import Detections

            g = Detections(it["gt_boxes"], torch.ones(len(it["gt_boxes"])), torch.zeros(len(it["gt_boxes"]), dtype=torch.int64))
            clean_dets.append(c.persons(args.threshold))
            gt.append(g)
            if o is not None:
                obf_dets.append(o.persons(args.threshold))
            rows.append(
                {
                    "frame_index": it["frame_index"],
                    "gt": len(g),
                    "clean": len(c.persons(args.threshold)),
                    "obfuscated": "" if o is None else len(o.persons(args.threshold)),
                }
            )
        if example is None:
            example = (images[0], None if obf is None else obf[0], dc[0].persons(args.threshold), do[0] and do[0].persons(args.threshold))

    out.mkdir(parents=True, exist_ok=True)
    _write_counts(out / "counts.csv", rows)
    _plot_counts(out / "counts.png", rows)
    assert example is not None
    _side_by_side(out / "side_by_side.png", *example)
    summary = {"clean_vs_gt": count_error(clean_dets, gt)}
    if obf_dets:
        summary["obfuscated_vs_clean"] = count_error(obf_dets, clean_dets)
        summary["obfuscated_vs_gt"] = count_error(obf_dets, gt)
    print(f"{n} PETS 2009 test frames, detector {args.detector}, threshold {args.threshold}")
    for k, v in summary.items():
        print(f"  count error {k:>20}: MAE {v['mae']:.2f} persons/frame (bias {v['bias']:+.2f})")
    print(f"wrote {out / 'counts.csv'}, {out / 'counts.png'}, {out / 'side_by_side.png'}")
    return 0


def _write_counts(path: Path, rows: list[dict[str, object]]) -> None:
    from silhouette.fileio import atomic_open

    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot_counts(path: Path, rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from silhouette.fileio import atomic_path

    x = [r["frame_index"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(x, [r["gt"] for r in rows], label="ground truth", color="black", lw=1.5)
    ax.plot(x, [r["clean"] for r in rows], label="detector on clean frames", lw=1)
    if rows[0]["obfuscated"] != "":
        ax.plot(x, [r["obfuscated"] for r in rows], label="detector on obfuscated frames", lw=1)
    ax.set_xlabel("frame")
    ax.set_ylabel("persons")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _side_by_side(path: Path, clean: torch.Tensor, obf: torch.Tensor | None, dc: object, do: object) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from silhouette.fileio import atomic_path

    panels = [("original (never leaves the camera)", clean, dc)]
    if obf is not None:
        panels.append(("obfuscated (what the cloud sees)", obf, do))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3))
    for ax, (title, img, dets) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        for b in dets.boxes.tolist():
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="lime", lw=1))
        ax.set_title(f"{title}: {len(dets)} persons", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
