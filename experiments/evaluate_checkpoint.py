"""Evaluate a trained obfuscator on the PETS 2009 test split: utility (AP50) and obfuscation (SSIM etc.).

Rows: person AP of the training detector on obfuscated test frames vs its own pseudo-labels on the clean frames
(the training target), AP vs the human ground truth for clean and obfuscated frames, the similarity of original
and obfuscated frames, and how well the training-time deobfuscator reconstructs. With --cross, the same utility
numbers for other zoo detectors (each against its own clean-frame pseudo-labels).

    python experiments/evaluate_checkpoint.py [--checkpoint PATH] [--data runs/data/pets2009] [--train-dir runs/default]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' shared helpers: _common
import _common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"ap50_vs_pseudo": 0.90, "ssim": 0.45}


def _gt(frames_root: Path, split: str, files: list[str]):  # noqa: ANN202
    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.detectors.base import Detections

    ds = FrameDataset(frames_root, split=split)
    by_file = {r["file"]: r for r in ds.records}
    out = []
    for f in files:
        boxes = torch.tensor(by_file[f]["gt_boxes"] or [], dtype=torch.float32).reshape(-1, 4)
        out.append(Detections(boxes, torch.ones(len(boxes)), torch.zeros(len(boxes), dtype=torch.int64)))
    return out


def _training_summary(train_dir: Path | None) -> dict:
    """Wall time and throughput of the training run, from its metrics.csv."""
    if train_dir is None or not (train_dir / "metrics.csv").is_file():
        return {}
    rows = list(csv.DictReader(open(train_dir / "metrics.csv", encoding="utf-8")))
    secs = sum(float(r["epoch_s"]) for r in rows if r["epoch_s"])
    imgs = sum(int(r["train_images"]) for r in rows if r["train_images"])
    adv = [r for r in rows if r["epoch"] != "0"]
    adv_s = sum(float(r["epoch_s"]) for r in adv)
    adv_i = sum(int(r["train_images"]) for r in adv)
    out = {"epochs_incl_warm_start": len(rows), "train_loop_s": round(secs, 1), "train_images": imgs,
           "adversarial_images_per_s": round(adv_i / adv_s, 3) if adv_s else None}
    wall = train_dir / "wall_time.txt"
    if wall.is_file():
        out["wall_s_total"] = float(wall.read_text().split()[0])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped obfuscator_default.pt)")
    p.add_argument("--data", default="runs/data/pets2009", help="prepared pets2009 folder (prepared if missing)")
    p.add_argument("--split", default="test")
    p.add_argument("--detector", default=None, help="detector spec (default: the checkpoint's training detector)")
    p.add_argument("--threshold", type=float, default=None, help="pseudo-label score threshold (default: checkpoint's)")
    p.add_argument("--eval-conf", type=float, default=0.05, help="score threshold of predictions scored for AP")
    p.add_argument("--cross", default="yolo_fastest_xl,nanodet_m,yolov5n",
                   help="comma list of other detectors to score too ('' = none)")
    p.add_argument("--train-dir", default=None, help="training run folder, to report its time and throughput")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "results" / "shipped" / "evaluate_default.json"))
    p.add_argument("--summary", default=None, help="also write the JSON here (e.g. the shipped checkpoint's summary)")
    args = p.parse_args()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)

    from silhouette.data import prepare_dataset
    from silhouette.data.labels import ensure_pseudo_labels
    from silhouette.detectors import create_detector
    from silhouette.evaluation.metrics import mean_similarity, person_ap
    from silhouette.fileio import write_json
    from silhouette.models import count_macs, count_params, load_obfuscator, read_checkpoint
    from silhouette.models.checkpoint import DEFAULT_CHECKPOINT, build_from_entry
    from silhouette.training.frames import load_frame_set, predict_batched
    from silhouette.training.validation import obfuscate_all

    ckpt_path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    ckpt = read_checkpoint(ckpt_path)
    cfg = ckpt.get("config") or {}
    det_spec = args.detector or cfg.get("detector", {}).get("spec") or "yolox_nano"
    thr = args.threshold if args.threshold is not None else float(cfg.get("detector", {}).get("score_threshold", 0.3))
    root = Path(args.data)
    if not (root / "manifest.json").is_file():
        prepare_dataset("pets2009", root, progress=False)
    frames = load_frame_set(root, args.split)
    clean = frames.batch(range(len(frames)))
    obf = load_obfuscator(ckpt_path)
    t0 = time.perf_counter()
    obfuscated = obfuscate_all(obf, clean, torch.device("cpu"), batch_size=8)
    obf_ms = (time.perf_counter() - t0) * 1000 / len(frames)
    gt = _gt(root, args.split, frames.files)

    def utility(spec: str) -> dict:
        cache = ensure_pseudo_labels(root, spec, thr, split=args.split, progress=False)
        pseudo = [cache[f].persons(thr) for f in frames.files]
        det = create_detector(spec, conf_threshold=args.eval_conf)
        p_clean, p_obf = predict_batched(det, clean), predict_batched(det, obfuscated)
        return {
            "ap50_vs_pseudo": person_ap(p_obf, pseudo)["ap50"],
            "ap_vs_pseudo": person_ap(p_obf, pseudo)["ap"],
            "ap50_vs_gt_clean": person_ap(p_clean, gt)["ap50"],
            "ap50_vs_gt_obfuscated": person_ap(p_obf, gt)["ap50"],
            "pseudo_boxes": int(sum(len(d) for d in pseudo)),
        }

    rows = {det_spec: utility(det_spec)}
    for spec in [s.strip() for s in args.cross.split(",") if s.strip() and s.strip() != det_spec]:
        rows[spec] = utility(spec)
    sim = mean_similarity(list(clean), list(obfuscated))
    recon = {}
    if "deobfuscator" in ckpt:
        deobf = build_from_entry(ckpt["deobfuscator"], ckpt_path).eval()
        rec = obfuscate_all(deobf, obfuscated, torch.device("cpu"), 8)
        rs = mean_similarity(list(clean), list(rec))
        recon = {"deobfuscator_ssim": rs["ssim"], "deobfuscator_mse": rs["mse"], "deobfuscator_psnr": rs["psnr"]}
    main_row = rows[det_spec]
    result = {
        **_common.run_info(load_before, versions=_common.versions("python", "torch", "onnxruntime")),
        "checkpoint": os.path.relpath(ckpt_path, REPO),
        "checkpoint_epoch": ckpt.get("epoch"),
        "checkpoint_val_metrics": {k: v for k, v in (ckpt.get("metrics") or {}).items() if k.startswith("val_")},
        "model": ckpt["obfuscator"]["spec"],
        "params": count_params(obf),
        "macs_320x200": count_macs(obf, (200, 320)),
        "obfuscator_ms_per_frame_cpu": round(obf_ms, 1),
        "split": args.split,
        "frames": len(frames),
        "gt_boxes": int(sum(len(g) for g in gt)),
        "training_detector": det_spec,
        "pseudo_label_threshold": thr,
        "eval_conf_threshold": args.eval_conf,
        "utility": rows,
        "similarity": sim,
        "reconstruction": recon,
        "targets": TARGETS,
        "meets_targets": {
            "ap50_vs_pseudo": main_row["ap50_vs_pseudo"] >= TARGETS["ap50_vs_pseudo"],
            "ssim": sim["ssim"] <= TARGETS["ssim"],
        },
        "training": _training_summary(Path(args.train_dir) if args.train_dir else None),
    }
    write_json(args.out, result)
    if args.summary:
        write_json(args.summary, result)

    print(f"checkpoint {result['checkpoint']}  ({result['params'] / 1e6:.3f} M params, "
          f"{result['macs_320x200'] / 1e9:.2f} GMACs @320x200, {obf_ms:.0f} ms/frame CPU)")
    print(f"pets2009 {args.split}: {len(frames)} frames, {result['gt_boxes']} GT persons; pseudo-labels @ {thr}")
    print(f"{'detector':18s} {'AP50 obf/pseudo':>16s} {'AP obf/pseudo':>14s} {'AP50 clean/GT':>14s} {'AP50 obf/GT':>12s}")
    for spec, r in rows.items():
        print(f"{spec:18s} {r['ap50_vs_pseudo']:16.3f} {r['ap_vs_pseudo']:14.3f} {r['ap50_vs_gt_clean']:14.3f} "
              f"{r['ap50_vs_gt_obfuscated']:12.3f}")
    print("similarity original vs obfuscated: " + "  ".join(f"{k}={v:.4f}" for k, v in sim.items()))
    if recon:
        print("deobfuscator reconstruction:      " + "  ".join(f"{k}={v:.4f}" for k, v in recon.items()))
    print(f"targets: AP50 >= {TARGETS['ap50_vs_pseudo']} -> {result['meets_targets']['ap50_vs_pseudo']}, "
          f"SSIM <= {TARGETS['ssim']} -> {result['meets_targets']['ssim']}")
    if result["training"]:
        print("training: " + "  ".join(f"{k}={v}" for k, v in result["training"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
