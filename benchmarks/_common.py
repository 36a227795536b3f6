"""Pieces every benchmark script shares: machine and version info for the JSON, and a wall/CPU timer.

`python benchmarks/X.py` puts this folder on sys.path, so `import _common` works; scripts in experiments/ and
tools/ add this folder to sys.path first.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def exe() -> str:
    """The interpreter as typed from the checkout (relative when inside it)."""
    rel = os.path.relpath(sys.executable)
    return sys.executable if rel.startswith("..") else rel


def _version(name: str) -> str:
    """Version string of one package as the benchmarks report it (imported lazily: some are heavy)."""
    if name == "python":
        return platform.python_version()
    if name == "opencv":
        import cv2

        return cv2.__version__
    if name == "onnx2torch":
        from importlib.metadata import version

        return version("onnx2torch")
    import importlib

    return importlib.import_module(name).__version__


def versions(*names: str) -> dict[str, str]:
    """Versions of `names` (python, torch, onnxruntime, onnx, onnx2torch, opencv, numpy), in that given order."""
    return {name: _version(name) for name in names}


def run_info(load_before: tuple[float, float, float], note: str | None = None,
             versions: dict[str, str] | None = None) -> dict:
    """The provenance block of a results JSON (commit, dirty, command, date, machine, versions), taken now.

    The same block `silhouette` commands write, with the load average around the run in `machine`: timings on a
    shared machine mean little without it.
    """
    from silhouette.provenance import provenance

    info = provenance([exe(), *sys.argv])
    info["machine"].update(loadavg_before=[round(x, 2) for x in load_before],
                           loadavg_after=[round(x, 2) for x in os.getloadavg()])
    if note is not None:
        info["machine"]["note"] = note
    if versions is not None:
        info["versions"] = {**info["versions"], **versions}
    return info


def results_path(out: Path | None, smoke: bool, default: Path) -> Path:
    """Where a script writes its JSON: --out, else a temp file for --smoke (a plumbing check replaces no result)."""
    if out is not None:
        return out
    return Path(tempfile.gettempdir()) / f"silhouette_smoke_{default.name}" if smoke else default


def sample(fn: Callable[[], object], warmup: int, min_repeats: int,
           min_seconds: float = 0.0) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per call, after `warmup` untimed calls, for at least `min_repeats` calls and `min_seconds`.

    CPU time is kept too because the benchmark machine may be shared: with one thread it tracks wall time on an
    idle machine and is far less inflated by other processes.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < min_repeats or time.perf_counter() - start < min_seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def median_ms(fn: Callable[[], object], warmup: int, min_repeats: int, min_seconds: float = 0.0) -> dict[str, float]:
    """Median wall and process-CPU ms per call (unrounded) and the number of timed calls, as `sample` measures them."""
    wall, cpu = sample(fn, warmup, min_repeats, min_seconds)
    return {"wall_ms": statistics.median(wall) * 1000, "cpu_ms": statistics.median(cpu) * 1000, "repeats": len(wall)}


def print_report(table: str, verdict: str) -> None:
    """Print a benchmark's markdown table and its one-line verdict, separated by blank lines."""
    print()
    print(table)
    print()
    print(verdict)


def log(msg: str) -> None:
    """Timestamped line on stdout (the device tool returns the tail)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def silhouette(args: list[str], logfile: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start `python -m silhouette ARGS` with output to logfile."""
    cmd = [sys.executable, "-m", "silhouette", *args]
    log("$ " + shlex.join(cmd))
    logfile.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=logfile.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


def wait_all(procs: dict[str, tuple[subprocess.Popen, float]], deadline: float) -> dict[str, dict]:
    """Wait for every process until the deadline; terminate the rest. Returns rc and seconds per job."""
    out: dict[str, dict] = {}
    while procs:
        for name, (p, t0) in list(procs.items()):
            if p.poll() is not None:
                out[name] = {"rc": p.returncode, "seconds": round(time.time() - t0, 1)}
                log(f"done {name}: rc={p.returncode} in {out[name]['seconds']} s")
                del procs[name]
        if procs and time.time() > deadline:
            for name, (p, t0) in procs.items():
                p.terminate()
                out[name] = {"rc": "stopped at deadline", "seconds": round(time.time() - t0, 1)}
                log(f"stopped {name} at the deadline")
            for p, _ in procs.values():
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(1)
    return out
