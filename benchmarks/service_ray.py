"""Ray Serve detector replicas (1 and 2) vs the local single-process detector: requests/s and CPU seconds per frame.

Run: .venv/bin/python benchmarks/service_ray.py   (writes results/benchmarks/service_ray.json; a few minutes)

Every backend is driven through the same async interface the service awaits (`await predict(HxWx3 uint8 BGR)`) by
--clients concurrent coroutines for --seconds, after a warm-up; no HTTP (the lead adds that layer). Backends:
  local        the service's in-process Batcher + detector (onnxruntime default threads = all cores), as `serve` runs today
  local_1t     the same with 1 onnxruntime thread (one replica's configuration, in-process)
  ray_1, ray_2 start_ray_detector with 1 / 2 replicas (1 thread each) on a private local Ray instance
CPU: the raw detector's CPU seconds per frame (1 thread each for onnxruntime/torch/OpenCV, batches of --max-batch, no
serving) is measured right before each backend; serving CPU is this process's CPU (local), or that of every Ray process
plus this driver (ray; the replicas' share reported apart), over the timed window. efficiency = raw CPU / serving CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from _common import REPO_ROOT, results_path, run_info, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "service_ray.json"
Predict = Callable[[np.ndarray], Awaitable[Any]]


def git_state() -> dict[str, Any]:
    """Commit of the checkout and whether it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def load_frames() -> list[np.ndarray]:
    """The PETS 320x200 test frames of the weights zoo as HxWx3 uint8 BGR frames."""
    from silhouette.imaging import decode_image_file
    from silhouette.paths import weights_dir

    return [decode_image_file(path) for path in sorted((weights_dir() / "testdata").glob("pets2009_*_320x200.png"))]


def raw_detector_cpu(detector: str, frames: list[np.ndarray], batch: int, seconds: float) -> dict[str, float]:
    """CPU seconds per frame of the bare detector on batches of `batch` frames, no serving, threads as in a replica."""
    import cv2
    import torch

    from silhouette.detectors import create_detector
    from silhouette.imaging import bgr_batch_to_tensor

    det = create_detector(detector, num_threads=1)
    images = bgr_batch_to_tensor([frames[i % len(frames)] for i in range(batch)])
    saved = torch.get_num_threads(), cv2.getNumThreads()
    # one thread each for onnxruntime, torch and OpenCV, as a replica pins them: torch's default pool spins on the
    # main thread and measured 2.5x the CPU per frame on this machine
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        det.predict(images)  # warm-up: session load
        n, c0, t0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            with torch.inference_mode():
                det.predict(images)
            n += batch
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
    return {"frames": n, "cpu_s_per_frame": (time.process_time() - c0) / n, "wall_s_per_frame": (time.perf_counter() - t0) / n}


class CpuMeter:
    """CPU seconds (user + system) of a set of processes between start() and stop(); processes may come and go."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self.pids = pids
        self.before: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float | None:
        import ray  # noqa: F401  # Ray ships psutil in ray/thirdparty_files and puts it on sys.path on import
        import psutil

        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return t.user + t.system

    def start(self) -> None:
        """Note each process's CPU seconds so far."""
        self.before = {p: c for p in self.pids() if (c := self._cpu(p)) is not None}

    def stop(self) -> float:
        """CPU seconds used since start() by the processes alive now (new ones count from zero)."""
        return sum(c - self.before.get(p, 0.0) for p in self.pids() if (c := self._cpu(p)) is not None)


async def drive(predict: Predict, frames: list[np.ndarray], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` coroutines calling predict in a loop for `seconds`; throughput and latency percentiles."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await predict(frames[i % len(frames)])
            latencies.append(time.perf_counter() - t0)
            i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"frames": len(latencies), "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1)}


def _local_batcher(detector: str, threads: int | None, max_batch: int, wait_s: float) -> Any:
    """The service's own in-process Batcher around a local detector (its module moved from deploy/ to serve/)."""
    from silhouette.detectors import create_detector

    try:
        from silhouette.serve.batching import Batcher, predictor
    except ImportError:
        from silhouette.deploy.service import Batcher, _predictor as predictor  # type: ignore[no-redef]
    sizes: list[int] = []
    det = create_detector(detector, **({"num_threads": threads} if threads else {}))
    batcher = Batcher(predictor(det), max_batch, wait_s, sizes.append)
    batcher.sizes = sizes  # type: ignore[attr-defined]  # kept for the report: mean batch size
    return batcher


def bench_local(args: argparse.Namespace, frames: list[np.ndarray], threads: int | None) -> dict[str, Any]:
    """The local single-process backend: requests/s and this process's CPU per frame."""
    batcher = _local_batcher(args.detector, threads, args.max_batch, args.batch_wait_ms / 1000)
    meter = CpuMeter(lambda: {os.getpid()})

    async def run() -> dict[str, Any]:
        await batcher.start()
        try:
            await drive(batcher.submit, frames, args.clients, args.warmup_seconds)
            batcher.sizes.clear()
            meter.start()
            res = await drive(batcher.submit, frames, args.clients, args.seconds)
            res["cpu_s_per_frame"] = meter.stop() / res["frames"]
            return res
        finally:
            await batcher.stop()

    res = asyncio.run(run())
    res["mean_batch"] = round(sum(batcher.sizes) / max(1, len(batcher.sizes)), 2)
    return res


def bench_ray(args: argparse.Namespace, frames: list[np.ndarray], replicas: int) -> dict[str, Any]:
    """Ray Serve replicas: requests/s, CPU per frame of the replicas, of all Ray processes and of this driver."""
    from silhouette.serve.ray_backend import start_ray_detector  # imports ray, which puts its psutil on sys.path

    import psutil

    t0 = time.perf_counter()
    handle = start_ray_detector(args.detector, replicas=replicas, max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000)
    started = time.perf_counter() - t0
    me = psutil.Process()
    replica_cpu = CpuMeter(lambda: set(handle.frames_by_pid))
    ray_cpu = CpuMeter(lambda: {p.pid for p in me.children(recursive=True)})  # a local instance: all Ray processes
    driver_cpu = CpuMeter(lambda: {me.pid})
    try:
        asyncio.run(drive(handle.predict, frames, args.clients, args.warmup_seconds))
        handle.batch_sizes.clear()
        for m in (replica_cpu, ray_cpu, driver_cpu):
            m.start()
        res = asyncio.run(drive(handle.predict, frames, args.clients, args.seconds))
        cpu = {"replicas": replica_cpu.stop(), "ray_all": ray_cpu.stop(), "driver": driver_cpu.stop()}
        sizes = handle.batch_sizes
        res.update(
            start_s=round(started, 1), replicas_answering=len(handle.replica_pids()),
            mean_batch=round(sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values())), 2),
            replica_cpu_s_per_frame=cpu["replicas"] / res["frames"],
            cpu_s_per_frame=(cpu["ray_all"] + cpu["driver"]) / res["frames"],
            driver_cpu_s_per_frame=cpu["driver"] / res["frames"],
        )
    finally:
        handle.shutdown()
    return res


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", default="yolox_nano")
    p.add_argument("--clients", type=int, default=16, help="concurrent callers of predict")
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per backend")
    p.add_argument("--warmup-seconds", type=float, default=4.0, help="untimed load before each window")
    p.add_argument("--max-batch", type=int, default=8, help="detector batch size limit (Batcher and replicas)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--raw-seconds", type=float, default=4.0, help="raw-detector reference before each backend")
    p.add_argument("--backends", nargs="+", default=["local", "local_1t", "ray_1", "ray_2"])
    p.add_argument("--out", type=Path, default=None, help=f"JSON results file (default {RESULTS.name} in results/benchmarks/)")
    p.add_argument("--smoke", action="store_true", help="a seconds-long plumbing check; writes to a temp file unless --out")
    return p.parse_args(argv)


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the backends."""
    lines = ["| backend | req/s | p50 ms | p95 ms | mean batch | raw detector CPU ms/frame | serving CPU ms/frame "
             "| replica CPU ms/frame | efficiency (replicas) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rep = r.get("replica_cpu_s_per_frame")
        eff = f"{r['efficiency']:.2f}" + ("" if rep is None else f" ({r['replica_efficiency']:.2f})")
        lines.append(f"| {name} | {r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_batch']} | "
                     f"{r['raw_cpu_s_per_frame'] * 1000:.1f} | {r['cpu_s_per_frame'] * 1000:.1f} | "
                     f"{'' if rep is None else f'{rep * 1000:.1f}'} | {eff} |")
    return "\n".join(lines)


def run_backends(args: argparse.Namespace, frames: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Each backend right after its own raw-detector reference (the shared machine's load drifts between them)."""
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "local": lambda: bench_local(args, frames, None), "local_1t": lambda: bench_local(args, frames, 1),
        "ray_1": lambda: bench_ray(args, frames, 1), "ray_2": lambda: bench_ray(args, frames, 2),
    }
    rows: dict[str, dict[str, Any]] = {}
    for name in args.backends:
        raw = raw_detector_cpu(args.detector, frames, args.max_batch, args.raw_seconds)["cpu_s_per_frame"]
        row = rows[name] = runners[name]()
        row["raw_cpu_s_per_frame"] = raw
        row["efficiency"] = round(raw / row["cpu_s_per_frame"], 3)
        if "replica_cpu_s_per_frame" in row:
            row["replica_efficiency"] = round(raw / row["replica_cpu_s_per_frame"], 3)
        print(f"{name}: {row}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the backends, print the table, write the JSON."""
    from silhouette.fileio import write_json

    args = parse(argv)
    if args.smoke:  # the in-process backend only, 1 s windows
        args.backends, args.clients, args.seconds, args.warmup_seconds, args.raw_seconds = ["local"], 2, 1.0, 0.5, 0.5
    args.out = results_path(args.out, args.smoke, RESULTS)
    frames, load_before = load_frames(), os.getloadavg()
    raw = {f"batch_{b}": raw_detector_cpu(args.detector, frames, b, args.raw_seconds) for b in sorted({1, args.max_batch})}
    print(f"raw detector: {raw}", flush=True)
    rows = run_backends(args, frames)
    md = table(rows)
    print("\n" + md)
    import ray

    info = run_info(load_before, note="shared 2-core machine (other jobs running); clients, driver and replicas on the same cores",
                    versions={**versions("python", "numpy", "onnxruntime", "torch"), "ray": ray.__version__})
    write_json(args.out, {
        **info, "git": git_state(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "raw_detector": raw, "results": rows, "table_markdown": md,
    })
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
