"""Per-frame CPU latency of the ONNX zoo on 1 thread: onnxruntime vs the onnx2torch path, forward and end to end.

Run: .venv/bin/python benchmarks/detectors.py   (writes results/benchmarks/detectors.json)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

from _common import results_path, run_info, sample, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "detectors.json"


def main(argv: list[str] | None = None) -> int:
    """Benchmark every zoo detector and write the JSON results."""
    from silhouette.detectors.onnx_zoo import DETECTORS, zoo_names
    from silhouette.fileio import write_json
    from silhouette.imaging import read_image
    from silhouette.paths import weights_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=zoo_names(), choices=zoo_names(), help="zoo detectors to time")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results file (default {RESULTS.name} in results/benchmarks/)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long plumbing check; writes to a temp file unless --out")
    args = parser.parse_args(argv)
    if args.smoke:  # one small detector, batch 1, one timed call
        args.models, args.batches, args.repeats, args.warmup = ["fastestdet"], [1], 1, 0
    args.out = results_path(args.out, args.smoke, RESULTS)

    torch.set_num_threads(1)
    frames = [read_image(p) for p in sorted((weights_dir() / "testdata").glob("pets2009_*_320x200.png"))]
    if not frames:
        raise SystemExit(f"no PETS test frames in {weights_dir() / 'testdata'}")
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        det = DETECTORS.create(name, num_threads=1)
        det.session()
        det.torch_model()
        for b in args.batches:
            images = torch.stack([frames[i % len(frames)] for i in range(b)])
            batch_np, _ = det.preprocess_exact(images)
            batch_t = torch.from_numpy(batch_np)
            cases: dict[tuple[str, str], Callable[[], object]] = {
                ("onnxruntime", "forward"): lambda: det.forward_ort(batch_np),
                ("onnx2torch", "forward"): lambda: det.forward_torch(batch_t),
                ("onnxruntime", "predict"): lambda: det.predict(images),
                ("onnx2torch", "predict"): lambda: det.predict_torch(images),
            }
            for (path, stage), fn in cases.items():
                with torch.no_grad():
                    secs, cpu_secs = sample(fn, args.warmup, args.repeats)
                per_frame = [s / b * 1000 for s in secs]
                row = {
                    "model": name,
                    "input": det.info().input_size,
                    "batch": b,
                    "path": path,
                    "stage": stage,
                    "median_ms_per_frame": round(statistics.median(per_frame), 2),
                    "min_ms_per_frame": round(min(per_frame), 2),
                    "median_cpu_ms_per_frame": round(statistics.median(cpu_secs) / b * 1000, 2),
                    "repeats": args.repeats,
                }
                rows.append(row)
                print(
                    f"{name:18s} B={b:<2d} {path:11s} {stage:8s} {row['median_ms_per_frame']:8.2f} ms/frame "
                    f"(cpu {row['median_cpu_ms_per_frame']:.2f})",
                    flush=True,
                )

    table = _markdown(rows, args.models, args.batches)
    print()
    print(table)
    write_json(
        args.out,
        {
            **run_info(
                load_before,
                versions=versions("python", "torch", "onnxruntime", "onnx", "onnx2torch", "opencv", "numpy"),
            ),
            "settings": {
                "torch_threads": 1,
                "ort_intra_op_threads": 1,
                "ort_inter_op_threads": 1,
                "frames": "weights/testdata PETS 320x200, cycled to fill the batch",
                "warmup": args.warmup,
                "repeats": args.repeats,
                "timing": "median wall ms per frame, and median process-CPU ms per frame (in parentheses in the table)",
                "forward": "network only, on the already preprocessed batch",
                "predict": "end to end: preprocessing + network + decode + NMS (onnx2torch: predict_torch)",
            },
            "results": rows,
            "table_markdown": table,
        },
    )
    print(f"\nwrote {args.out}")
    return 0


def _markdown(rows: list[dict], models: list[str], batches: list[int]) -> str:
    """One line per model and batch: median wall (process-CPU) ms/frame for ORT/torch forward and predict."""
    get = {
        (r["model"], r["batch"], r["path"], r["stage"]): f"{r['median_ms_per_frame']:.1f} "
        f"({r['median_cpu_ms_per_frame']:.1f})"
        for r in rows
    }
    lines = [
        "| model | input | batch | ORT forward | onnx2torch forward | ORT predict | onnx2torch predict |",
        "|---|---|---|---|---|---|---|",
    ]
    inputs = {r["model"]: r["input"] for r in rows}
    for m in models:
        for b in batches:
            vals = [get[(m, b, p, s)] for s in ("forward", "predict") for p in ("onnxruntime", "onnx2torch")]
            lines.append(f"| {m} | {inputs[m]} | {b} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
