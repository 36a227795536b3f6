"""End-to-end `silhouette obfuscate` throughput on a 320x200 video: decode -> obfuscate -> encode -> write .mp4.

Run: .venv/bin/python benchmarks/obfuscate_video.py [--checkpoint PATH ...]   (writes results/benchmarks/obfuscate_video.json)

The test video is made from PETS-2009 frames (resized to 320x200, looped to --frames, mp4v) in a temporary folder.
Each checkpoint (the shipped default, plus every --checkpoint) is timed through `obfuscate_source` with ONNX Runtime
on all cores, at every --batch, --repeats times after one untimed warm-up run; the table gives the median
end-to-end and obfuscator-only (time inside the runner) frames/s. The target is >= 30 frames/s end to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import print_report, results_path, run_info, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "obfuscate_video.json"
TARGET_FPS = 30.0
SIZE = (320, 200)


def make_video(path: Path, frames: int, unique: int) -> Path:
    """A 320x200 mp4v video of `frames` frames: `unique` evenly spaced PETS frames, looped."""
    import cv2

    from silhouette.edge.export import pets_frames

    images = pets_frames(0, 795, unique, SIZE)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"{path}: OpenCV cannot write mp4v")
    for i in range(frames):
        writer.write(images[i % len(images)])
    writer.release()
    return path


def time_run(video: Path, runner, out: Path, batch: int) -> dict:  # noqa: ANN001 - Runner
    """One obfuscate_source run: frames, end-to-end and model-only frames/s."""
    from silhouette.edge.pipeline import obfuscate_source

    rep = obfuscate_source(str(video), runner, out, size=SIZE, progress=False, batch=batch)
    return {"frames": rep.frames, "seconds": rep.seconds, "fps": rep.fps, "model_fps": rep.model_fps}


def time_setting(video: Path, runner, out: Path, batch: int, repeats: int) -> dict:  # noqa: ANN001 - Runner
    """One untimed warm-up run (ORT allocates and picks kernels on its first calls), then `repeats` timed runs."""
    time_run(video, runner, out, batch)
    runs = [time_run(video, runner, out, batch) for _ in range(repeats)]
    return {
        "frames": runs[0]["frames"],
        "fps_median": round(statistics.median(r["fps"] for r in runs), 2),
        "model_fps_median": round(statistics.median(r["model_fps"] for r in runs), 2),
        "meets_target": statistics.median(r["fps"] for r in runs) >= TARGET_FPS,
        "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    """Time the pipeline for each checkpoint and batch size; print a markdown table and write JSON."""
    from silhouette.edge.export import cached_onnx
    from silhouette.edge.runtime import OnnxRunner
    from silhouette.paths import DEFAULT_CHECKPOINT
    from silhouette.fileio import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="PATH", help="extra checkpoint (.pt or .onnx) to time; repeatable")
    parser.add_argument("--no-default", action="store_true", help="skip the shipped default checkpoint")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to time (default 1 4)")
    parser.add_argument("--frames", type=int, default=300, help="frames in the test video (default 300)")
    parser.add_argument("--unique", type=int, default=60, help="distinct PETS frames looped to make it (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="ONNX Runtime threads (default: all cores)")
    parser.add_argument(
        "--spinning", choices=["off", "on", "both"], default="both",
        help="ORT intra-op spinning: off (what silhouette obfuscate uses), on (ORT's default) or both (default)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results file (default {RESULTS.name} in results/benchmarks/)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long plumbing check; writes to a temp file unless --out")
    args = parser.parse_args(argv)
    if args.smoke:  # a 8-frame video, batch 1, one timed run
        args.frames, args.unique, args.batch, args.repeats = 8, 4, [1], 1
    args.out = results_path(args.out, args.smoke, RESULTS)

    checkpoints: list[tuple[str, str | None]] = [] if args.no_default else [("default (shipped)", None)]
    checkpoints += [(str(c), c) for c in args.checkpoint]
    if not checkpoints:
        parser.error("nothing to time: give --checkpoint or drop --no-default")
    if not args.no_default and not DEFAULT_CHECKPOINT.is_file():
        parser.error(f"no shipped default checkpoint at {DEFAULT_CHECKPOINT}; pass --no-default --checkpoint PATH")

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "pets_320x200.mp4", args.frames, args.unique)
        spins = {"off": [False], "on": [True], "both": [False, True]}[args.spinning]
        settings = [(label, ckpt, spin, batch) for label, ckpt in checkpoints for spin in spins for batch in args.batch]
        runners: dict[tuple[str, bool], OnnxRunner] = {}
        for label, ckpt, spin, batch in settings:
            if (label, spin) not in runners:
                # spinning off is what load_runner (silhouette obfuscate) uses; on is ORT's default
                runners[label, spin] = OnnxRunner(cached_onnx(ckpt), args.threads, spinning=spin)
            rows.append(time_setting(video, runners[label, spin], Path(tmp) / f"out_b{batch}.mp4", batch, args.repeats))
            rows[-1] = {"checkpoint": label, "batch": batch, "threads": args.threads, "spinning": spin, **rows[-1]}
            r = rows[-1]
            print(f"{label} batch {batch} spinning {'on' if spin else 'off'}: {r['fps_median']:.1f} fps end to end, "
                  f"{r['model_fps_median']:.1f} fps model only", flush=True)

    table = _markdown(rows)
    met = [f"{r['checkpoint']} batch {r['batch']}" for r in rows if r["meets_target"] and not r["spinning"]]
    verdict = f"Target (>= {TARGET_FPS:.0f} frames/s end to end, as silhouette obfuscate runs: spinning off): " + (f"met by {', '.join(met)}." if met else "not met.")
    print_report(table, verdict)
    write_json(
        args.out,
        {
            **run_info(load_before, versions=versions("python", "torch", "onnxruntime", "opencv", "numpy")),
            "settings": {
                "video": f"{args.frames} frames, {SIZE[0]}x{SIZE[1]}, mp4v, {args.unique} distinct PETS-2009 frames looped",
                "pipeline": "obfuscate_source: reader thread (decode, resize) -> ONNX Runtime fp32 batches -> writer thread (encode, .mp4)",
                "backend": "onnx fp32", "threads": args.threads, "spinning": args.spinning, "repeats": args.repeats, "warmup_runs": 1,
                "target_fps": TARGET_FPS,
            },
            "rows": rows,
            "target_met": bool(met),
            "verdict": verdict,
            "table_markdown": table,
        },
    )
    print(f"\nwrote {args.out}")
    return 0


def _markdown(rows: list[dict]) -> str:
    """One line per checkpoint and batch size."""
    lines = [
        "| checkpoint | batch | threads | ORT spinning | frames | end-to-end fps (median) | model-only fps (median) | >= 30 fps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['checkpoint']} | {r['batch']} | {r['threads']} | {'on' if r['spinning'] else 'off (shipped)'} | {r['frames']} | {r['fps_median']:.1f} | "
            f"{r['model_fps_median']:.1f} | {'yes' if r['meets_target'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
