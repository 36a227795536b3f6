"""Edge cost: obfuscator frames/s per CPU core (1 thread, 320x200) in torch, ONNX fp32 and ONNX int8, beside every zoo detector.

Run: .venv/bin/python benchmarks/edge.py   (writes results/benchmarks/edge.json)

The question it answers: is obfuscating on the camera cheaper than detecting there? Each obfuscator variant is
timed with random (seeded) weights -- cost does not depend on the weights -- and, when shipped, the trained default.
Detectors run end to end through onnxruntime on one thread (their preprocessing, network, decode and NMS).
Per-core throughput is 1 / median process-CPU seconds per frame (robust on a shared machine); wall-clock medians
are stored too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from _common import median_ms, print_report, results_path, run_info, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "edge.json"
VARIANTS = ["obf_fused", "obf_paper", "obf_fast", "obf_w050", "obf_w025", "obf_edge"]
GOAL_RATIO_VS_YOLOX = 3.0
GOAL_INT8_FPS = 60.0
RUNTIMES = ("torch", "onnx_fp32", "onnx_int8", "numpy")  # numpy: the silhouette runner, no network at all


def _best(row: dict) -> float:
    """A row's fastest camera path in frames/s per core (ONNX fp32/int8, or NumPy for the silhouette runner)."""
    return max(row[rt]["fps_per_core"] for rt in ("onnx_fp32", "onnx_int8", "numpy") if rt in row)


def _silhouette_row(frames: "object", timing: dict) -> dict:
    """The shipped silhouette pair's camera side: background subtraction on a stream of test frames (NumPy/OpenCV)."""
    import itertools

    from silhouette.silhouettes import StreamingBackground

    runner = StreamingBackground()
    stream = itertools.cycle([f[None] for f in frames])  # consecutive calls see a moving scene, the background updates
    row: dict = {"variant": "silhouette (shipped pair)", "macs": 0, "params": 0,
                 "numpy": _time(lambda: runner(next(stream)), **timing)}
    row["wire_bytes_png"] = _wire_bytes(StreamingBackground(), frames)
    print(f"{row['variant']:18s} {row['wire_bytes_png'] / 1024:6.1f} KiB/frame  no network  "
          f"numpy {row['numpy']['fps_per_core']:7.1f} fps/core", flush=True)
    return row


def _time(fn: Callable[[], object], warmup: int, min_repeats: int, min_seconds: float) -> dict[str, float]:
    """Median wall and process-CPU ms per call, repeating at least `min_repeats` times and `min_seconds` seconds."""
    t = median_ms(fn, warmup, min_repeats, min_seconds)
    w, c = t["wall_ms"], t["cpu_ms"]
    return {
        "wall_ms": round(w, 3), "cpu_ms": round(c, 3), "repeats": t["repeats"],
        "fps_per_core": round(1000.0 / c, 2) if c > 0 else float("inf"), "fps_wall": round(1000.0 / w, 2),
    }


def _wire_bytes(runner: Callable, frames: "object") -> float:
    """Mean bytes a frame of the obfuscator's output costs on the wire, as PNG (the edge client's default encoding)."""
    from silhouette.imaging import batch_to_bgr, encode_frame

    sizes = [len(encode_frame(img, "png")) for img in batch_to_bgr(runner(frames))]
    return round(sum(sizes) / len(sizes), 1)


def main(argv: list[str] | None = None) -> int:
    """Time every obfuscator variant and zoo detector on one core; print a table and write JSON."""
    from silhouette.edge.export import CALIB_RANGE, export_onnx, pets_frames, quantize_int8
    from silhouette.edge.runtime import OnnxRunner, TorchRunner
    from silhouette.imaging import bgr_batch
    from silhouette.paths import DEFAULT_CHECKPOINT
    from silhouette.detectors import create_detector
    from silhouette.detectors.onnx_zoo import zoo_names
    from silhouette.fileio import write_json
    from silhouette.imaging import bgr_to_tensor
    from silhouette.models import build_obfuscator, count_macs, count_params, load_obfuscator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, help="registered obfuscator variants to time")
    parser.add_argument("--detectors", nargs="+", default=zoo_names(), help="zoo detectors to time")
    parser.add_argument("--min-repeats", type=int, default=20, help="timed calls per measurement, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="seconds per measurement, at least")
    parser.add_argument("--calib-frames", type=int, default=16, help="PETS frames for int8 calibration")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results file (default {RESULTS.name} in results/benchmarks/)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long plumbing check; writes to a temp file unless --out")
    args = parser.parse_args(argv)
    if args.smoke:  # the smallest variant and detector, one timed call each
        args.variants, args.detectors = ["obf_edge"], ["fastestdet"]
        args.min_repeats, args.min_seconds, args.calib_frames = 1, 0.0, 2
    args.out = results_path(args.out, args.smoke, RESULTS)

    torch.set_num_threads(1)
    frame = pets_frames(600, 601, 1)[0]  # a 320x200 PETS test frame (BGR)
    batch = bgr_batch([frame])
    calib = pets_frames(*CALIB_RANGE, count=args.calib_frames)
    load_before = os.getloadavg()
    timing = dict(warmup=3, min_repeats=args.min_repeats, min_seconds=args.min_seconds)

    models: dict[str, torch.nn.Module] = {}
    for name in args.variants:
        torch.manual_seed(0)
        models[name] = build_obfuscator(name).eval()
    if DEFAULT_CHECKPOINT.is_file() and not args.smoke:
        models["default (shipped)"] = load_obfuscator(None)
    private = DEFAULT_CHECKPOINT.with_name("obfuscator_private.pt")
    if private.is_file() and not args.smoke:
        from silhouette.models.checkpoint import build_from_entry, read_checkpoint

        models["private (shipped)"] = build_from_entry(read_checkpoint(private)["obfuscator"], private).eval()
    wire_frames = bgr_batch(pets_frames(600, 680, 8))  # 8 test frames: what the camera sends, encoded as `edge` does

    obf_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            fp32 = Path(tmp) / f"{len(obf_rows)}.onnx"
            int8 = Path(tmp) / f"{len(obf_rows)}-int8.onnx"
            export_onnx(model, fp32)
            quantize_int8(fp32, int8, calib)
            row: dict = {
                "variant": name, "macs": int(count_macs(model)), "params": int(count_params(model)),
            }
            torch_run = TorchRunner(model)
            row["torch"] = _time(lambda: torch_run(batch), **timing)
            fp32_run, int8_run = OnnxRunner(fp32, threads=1), OnnxRunner(int8, threads=1)
            row["onnx_fp32"] = _time(lambda: fp32_run(batch), **timing)
            row["onnx_int8"] = _time(lambda: int8_run(batch), **timing)
            full = OnnxRunner(fp32, threads=os.cpu_count())
            row["onnx_fp32_all_cores"] = _time(lambda: full(batch), **timing)
            row["wire_bytes_png"] = _wire_bytes(fp32_run, wire_frames)
            obf_rows.append(row)
            print(
                f"{name:18s} {row['wire_bytes_png'] / 1024:6.1f} KiB/frame  {row['macs'] / 1e9:6.3f} GMAC  torch {row['torch']['fps_per_core']:7.1f}  "
                f"onnx {row['onnx_fp32']['fps_per_core']:7.1f}  int8 {row['onnx_int8']['fps_per_core']:7.1f} fps/core  "
                f"(onnx, {os.cpu_count()} threads: {row['onnx_fp32_all_cores']['fps_wall']:.1f} fps wall)",
                flush=True,
            )

    obf_rows.append(_silhouette_row(wire_frames, timing))  # cheap: in --smoke too

    det_rows = []
    image = bgr_to_tensor(frame).unsqueeze(0)
    for name in args.detectors:
        det = create_detector(name, num_threads=1)
        with torch.no_grad():
            t = _time(lambda: det.predict(image), **timing)
        det_rows.append({"detector": name, "input": det.info().input_size, **t})
        print(f"{name:18s} detector end to end {t['fps_per_core']:7.1f} fps/core ({t['cpu_ms']:.1f} ms cpu)", flush=True)

    det_fps = {d["detector"]: d["fps_per_core"] for d in det_rows}
    for row in obf_rows:
        row["ratio_vs_detectors"] = {
            rt: {d: round(row[rt]["fps_per_core"] / f, 2) for d, f in det_fps.items()} for rt in RUNTIMES if rt in row
        }
        best = _best(row)
        row["cheaper_than_every_detector"] = all(best > f for f in det_fps.values())
        if "yolox_nano" in det_fps:
            fastest_camera_path = row["onnx_int8"]["fps_per_core"] if "onnx_int8" in row else best
            row["meets_goal"] = bool(fastest_camera_path >= GOAL_INT8_FPS and best / det_fps["yolox_nano"] >= GOAL_RATIO_VS_YOLOX)

    table = _markdown(obf_rows, det_rows)
    verdict = _verdict(obf_rows, det_fps)
    print_report(table, verdict)
    write_json(
        args.out,
        {
            **run_info(
                load_before,
                note="shared 2-core machine; per-core figures use process CPU time, which other load inflates far less than wall time",
                versions=versions("python", "torch", "onnxruntime", "numpy"),
            ),
            "settings": {
                "size": "320x200", "batch": 1, "threads": 1, "warmup": 3, "min_repeats": args.min_repeats, "min_seconds": args.min_seconds,
                "int8": f"static QDQ, per-channel weights, MinMax calibration on {args.calib_frames} PETS frames {CALIB_RANGE[0]}-{CALIB_RANGE[1] - 1}",
                "detectors": "onnxruntime 1 thread, Detector.predict end to end (preprocess, network, decode, NMS)",
                "weights": "variants: seeded random weights (cost is weight-independent); 'default (shipped)' when the asset exists",
                "goal": f"a shipped variant with >= {GOAL_RATIO_VS_YOLOX}x YOLOX-Nano throughput and >= {GOAL_INT8_FPS} fps/core as int8",
            },
            "obfuscators": obf_rows,
            "detectors": det_rows,
            "verdict": verdict,
            "table_markdown": table,
        },
    )
    print(f"\nwrote {args.out}")
    return 0


def _markdown(obf_rows: list[dict], det_rows: list[dict]) -> str:
    """Obfuscators then detectors, frames/s per core; obfuscator rows also give the best ratio vs YOLOX-Nano."""
    yolox = next((d["fps_per_core"] for d in det_rows if d["detector"] == "yolox_nano"), None)
    lines = [
        "| model | GMAC | torch fps/core | ONNX fp32 fps/core | ONNX int8 fps/core | best / YOLOX-Nano |",
        "|---|---|---|---|---|---|",
    ]
    for r in obf_rows:
        best = _best(r)
        ratio = f"{best / yolox:.2f}x" if yolox else "-"
        if "numpy" in r:
            lines.append(f"| obfuscator {r['variant']} | 0 | - | {r['numpy']['fps_per_core']:.1f} (NumPy/OpenCV) | - | {ratio} |")
            continue
        lines.append(
            f"| obfuscator {r['variant']} | {r['macs'] / 1e9:.3f} | {r['torch']['fps_per_core']:.1f} | "
            f"{r['onnx_fp32']['fps_per_core']:.1f} | {r['onnx_int8']['fps_per_core']:.1f} | {ratio} |"
        )
    for d in det_rows:
        lines.append(f"| detector {d['detector']} ({d['input']}) | - | - | {d['fps_per_core']:.1f} (ORT, end to end) | - | "
                     f"{d['fps_per_core'] / yolox:.2f}x |" if yolox else f"| detector {d['detector']} | - | - | {d['fps_per_core']:.1f} | - | - |")
    return "\n".join(lines)


def _verdict(obf_rows: list[dict], det_fps: dict[str, float]) -> str:
    """Plain statement: which variants are cheaper than detecting, and whether the goal is met."""
    slowest_det = min(det_fps, key=det_fps.get) if det_fps else None
    fastest_det = max(det_fps, key=det_fps.get) if det_fps else None
    parts = []
    for r in obf_rows:
        best = _best(r)
        beats = [d for d, f in det_fps.items() if best > f]
        if r["cheaper_than_every_detector"]:
            parts.append(f"{r['variant']}: obfuscating ({best:.0f} fps/core) IS cheaper than running any zoo detector on the camera (fastest: {fastest_det} {det_fps[fastest_det]:.0f} fps/core).")
        elif beats:
            parts.append(f"{r['variant']}: obfuscating ({best:.0f} fps/core) is cheaper than {', '.join(beats)} but NOT than {', '.join(d for d in det_fps if d not in beats)}.")
        else:
            parts.append(f"{r['variant']}: obfuscating ({best:.0f} fps/core) is NOT cheaper than detecting (slowest detector {slowest_det} {det_fps[slowest_det]:.0f} fps/core).")
    met = [r["variant"] for r in obf_rows if r.get("meets_goal")]
    parts.append(
        f"Goal (>= {GOAL_RATIO_VS_YOLOX:.0f}x YOLOX-Nano and >= {GOAL_INT8_FPS:.0f} fps/core int8): "
        + (f"met by {', '.join(met)}." if met else "not met by any variant.")
    )
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
