"""Detection service efficiency, throughput and p50/p95 latency on loopback: the local backend vs Ray Serve replicas.

Run: .venv/bin/python benchmarks/service.py            (writes results/benchmarks/service.json; ~5 minutes)
     .venv/bin/python benchmarks/service.py --smoke    (local backend, 1 and 2 clients, ~1 s windows: the test's run)

Each backend is `silhouette serve` in its own process (1 uvicorn worker, 127.0.0.1, API key from a file, a SQLite
count store in a temporary folder): `local` runs the detector in the server process (ONNX Runtime, torch and OpenCV
limited to --threads), `ray_N` on N Ray Serve replicas of --threads each on a private local Ray instance the server
starts. Clients post 320x200 PETS frames as JPEG q90 to POST /v1/detect for --seconds per setting after a warm-up.

Efficiency: the serving CPU seconds per frame are read from /proc (utime + stime) of the server process and all its
descendants (for Ray: GCS, raylet, agents and the replica workers) over the timed window; the clients' CPU is left
out. The raw detector's CPU seconds per frame are measured in this process right before each server starts: the same
frames, decoded, through the service's own predictor at batch 1, with the same thread settings. efficiency = raw
detector CPU / serving CPU per frame (1.0: serving costs nothing beyond the detector).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "service.json"
TARGETS = {"efficiency_min": 0.8, "p95_ms_max_at_4_clients": 250.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    """An ephemeral port that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process from /proc/<pid>/stat; None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name in (...) may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK  # ppid, utime, stime (fields 4, 14, 15)


def _cmdline(pid: int) -> str:
    """The command line of a process ('' once it has exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_snapshot(root: int) -> dict[int, tuple[str, float]]:
    """{pid: (role, CPU seconds so far)} of `root` and every descendant; role: server, replica or ray (the rest)."""
    stats = {int(p.name): s for p in Path("/proc").iterdir() if p.name.isdigit() and (s := _stat(int(p.name)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            role = "server" if pid == root else "replica" if "ServeReplica" in _cmdline(pid) else "ray"
            out[pid] = (role, stats[pid][1])
            todo.extend(children.get(pid, []))
    return out


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process new in `after` counts from zero)."""
    used = {"server": 0.0, "replica": 0.0, "ray": 0.0}
    for pid, (role, cpu) in after.items():
        used[role] += cpu - before.get(pid, (role, 0.0))[1]
    return used


def load_frames() -> list[np.ndarray]:
    """The PETS 320x200 test frames of the weights zoo, BGR as OpenCV reads them."""
    import cv2

    from silhouette.paths import weights_dir

    paths = sorted((weights_dir() / "testdata").glob("pets2009_*_320x200.png"))
    if not paths:
        raise SystemExit(f"no PETS test frames in {weights_dir() / 'testdata'}; set SILHOUETTE_SHARED")
    return [cv2.imread(str(p)) for p in paths]


def raw_detector_cpu(detector: str, bodies: list[bytes], threads: int, seconds: float) -> dict[str, float]:
    """CPU seconds per frame of the detector alone: the decoded frames through the service's predictor, batch 1."""
    import cv2
    import torch

    from silhouette.detectors import create_detector
    from silhouette.serve.batching import predictor
    from silhouette.imaging import decode_frame

    frames = [decode_frame(b) for b in bodies]  # the pixels the server detects on (JPEG-decoded BGR)
    saved = torch.get_num_threads(), cv2.getNumThreads()
    # the thread settings of the server under test: --threads each for onnxruntime, torch and OpenCV
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        predict = predictor(create_detector(detector, num_threads=threads))
        predict(frames[:1])  # warm-up: the session loads
        n, c0, t0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 5:
            predict([frames[n % len(frames)]])
            n += 1
        return {"frames": n, "cpu_s_per_frame": (time.process_time() - c0) / n, "wall_s_per_frame": (time.perf_counter() - t0) / n}
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def start_server(name: str, args: argparse.Namespace, batch: int, tmp: Path, port: int) -> subprocess.Popen:
    """`silhouette serve` for backend `name` (local or ray_N), healthy; its log goes to a file in `tmp`."""
    import httpx

    cmd = [sys.executable, "-m", "silhouette", "serve", "--detector", args.detector, "--host", "127.0.0.1",
           "--port", str(port), "--batch-size", str(batch), "--threads", str(args.threads),
           "--api-key-file", str(tmp / "key"), "--db", f"sqlite:///{tmp / f'counts-{name}-b{batch}.sqlite'}"]
    if name.startswith("ray_"):
        cmd += ["--backend", "ray", "--replicas", name.removeprefix("ray_")]
    log = (tmp / f"{name}-b{batch}.log").open("w")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {name} exited: {(tmp / f'{name}-b{batch}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"server {name} did not become healthy within {args.start_timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn's graceful shutdown also stops the server's Ray instance), SIGKILL after 60 s."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def drive(url: str, key: str, bodies: list[bytes], clients: int, seconds: float, warmup_s: float,
                server_pid: int) -> dict[str, Any]:
    """`clients` keep-alive connections posting frames back to back: a warm-up, then a timed window whose requests,
    latencies and serving CPU are measured."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []  # of the warm-up and the timed window: any error fails the run

    async def client(c: httpx.AsyncClient, k: int, deadline: float, timed: bool) -> None:
        """One connection posting frames k, k + clients, ... until the deadline."""
        i = k
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/detect", content=bodies[i % len(bodies)], headers={"content-type": "image/jpeg"})
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}")
            elif timed:
                latencies.append(time.perf_counter() - t0)
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers={"X-API-Key": key}) as c:
        warm_end = time.perf_counter() + warmup_s
        await asyncio.gather(*(client(c, k, warm_end, False) for k in range(clients)))
        before, t0 = cpu_snapshot(server_pid), time.perf_counter()
        await asyncio.gather(*(client(c, k, t0 + seconds, True) for k in range(clients)))
        wall, after = time.perf_counter() - t0, cpu_snapshot(server_pid)
    return summarize(latencies, errors, wall, cpu_used(before, after))


def summarize(latencies: list[float], errors: list[str], wall: float, cpu: dict[str, float]) -> dict[str, Any]:
    """One setting's row: requests/s, latency percentiles and serving CPU per frame (split by process role)."""
    n = len(latencies)
    lat = np.array(latencies) * 1000

    def ms(x: float) -> float | None:
        """CPU seconds over the window -> ms per answered frame."""
        return round(x / n * 1000, 2) if n else None

    return {
        "requests": n, "errors": len(errors), "error_kinds": sorted(set(errors)), "seconds": round(wall, 2),
        "requests_per_s": round(n / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if n else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if n else None,
        "serving_cpu_ms_per_frame": ms(sum(cpu.values())),
        "cpu_ms_per_frame_by_process": {"server": ms(cpu["server"]), "replicas": ms(cpu["replica"]), "ray_other": ms(cpu["ray"])},
    }


def run_backend(name: str, batch: int, args: argparse.Namespace, bodies: list[bytes], tmp: Path, key: str) -> list[dict[str, Any]]:
    """One server: the raw detector's CPU right before it starts, then every client count against it."""
    raw = raw_detector_cpu(args.detector, bodies, args.threads, args.raw_seconds)
    port = _free_port()
    t0 = time.perf_counter()
    proc = start_server(name, args, batch, tmp, port)
    started = round(time.perf_counter() - t0, 1)
    rows = []
    try:
        for clients in args.clients:
            res = asyncio.run(drive(f"http://127.0.0.1:{port}", key, bodies, clients, args.seconds, args.warmup_seconds, proc.pid))
            raw_ms = raw["cpu_s_per_frame"] * 1000
            eff = round(raw_ms / res["serving_cpu_ms_per_frame"], 3) if res["serving_cpu_ms_per_frame"] else None
            row = {"backend": name, "batch_size": batch, "clients": clients, **res, "raw_detector_cpu_ms_per_frame": round(raw_ms, 2),
                   "efficiency": eff, "server_start_s": started}
            rows.append(row)
            print(f"{name:6s} batch {batch} clients {clients:2d}: {res['requests_per_s']:6.1f} req/s  p50 {res['p50_ms']} ms  "
                  f"p95 {res['p95_ms']} ms  serving {res['serving_cpu_ms_per_frame']} ms/frame  raw {raw_ms:.1f}  "
                  f"eff {eff}  errors {res['errors']}", flush=True)
    finally:
        stop_server(proc)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of every setting."""
    lines = ["| backend | batch | clients | req/s | p50 ms | p95 ms | serving CPU ms/frame (server + replicas + other Ray) "
             "| raw detector CPU ms/frame | efficiency | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by = r["cpu_ms_per_frame_by_process"]
        split = f"{by['server']}" + (f" + {by['replicas']} + {by['ray_other']}" if r["backend"] != "local" else "")
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['serving_cpu_ms_per_frame']} ({split}) | {r['raw_detector_cpu_ms_per_frame']} | "
                     f"{r['efficiency']} | {r['errors']} |")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Each server against the targets: efficiency >= 0.8 (at every client count) and p95 < 250 ms at 4 clients."""
    out = []
    for key in dict.fromkeys((r["backend"], r["batch_size"]) for r in rows):
        mine = [r for r in rows if (r["backend"], r["batch_size"]) == key]
        effs = [r["efficiency"] for r in mine if r["efficiency"] is not None]
        at4 = next((r for r in mine if r["clients"] == 4), None)
        eff_ok = bool(effs) and min(effs) >= TARGETS["efficiency_min"]
        p95 = "" if at4 is None else (f"; p95 at 4 clients {at4['p95_ms']} ms "
                                      f"({'met' if at4['p95_ms'] is not None and at4['p95_ms'] < TARGETS['p95_ms_max_at_4_clients'] else 'MISSED'})")
        out.append(f"{key[0]} batch {key[1]}: efficiency {min(effs, default=0):.2f}-{max(effs, default=0):.2f} "
                   f"({'met' if eff_ok else 'MISSED'}){p95}")
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (--smoke: a seconds-long run of the local backend, for the test)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", default="yolox_nano", help="detector the server runs")
    p.add_argument("--backends", nargs="+", default=["local", "ray_1", "ray_2"], help="local and/or ray_N (N replicas)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="server --batch-size values (one server each)")
    p.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16], help="concurrent client counts")
    p.add_argument("--seconds", type=float, default=8.0, help="timed window per setting")
    p.add_argument("--warmup-seconds", type=float, default=1.5, help="untimed load before each window")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="raw-detector reference before each server")
    p.add_argument("--threads", type=int, default=1, help="server --threads: per process (local) or per replica (ray)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server (and its Ray replicas) may take to start")
    p.add_argument("--smoke", action="store_true", help="local backend, batch 1, 1 and 2 clients, 1 s windows")
    p.add_argument("--out", type=Path, help="JSON results file (default results/benchmarks/service.json; --smoke: a temp file)")
    args = p.parse_args(argv)
    if args.smoke:
        args.backends, args.batch_sizes, args.clients = ["local"], [1], [1, 2]
        args.seconds, args.warmup_seconds, args.raw_seconds = 1.0, 0.3, 0.5
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "silhouette_service_smoke.json" if args.smoke else RESULTS
    bad = [b for b in args.backends if b != "local" and not (b.startswith("ray_") and b[4:].isdigit() and int(b[4:]) >= 1)]
    if bad:
        p.error(f"unknown backends {bad}: use local and/or ray_N")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every (backend, batch size) server, print the table and verdicts, write the JSON; exit 1 on any error."""
    import cv2

    from _common import exe
    from silhouette.fileio import write_json
    from silhouette.provenance import provenance

    args = parse(argv)
    command = [exe(), sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    bodies = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in load_frames()]
    key, load_before, rows = "bench-" + os.urandom(8).hex(), os.getloadavg(), []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "key").write_text(key + "\n")
        for name in args.backends:
            for batch in args.batch_sizes:
                rows += run_backend(name, batch, args, bodies, Path(tmp), key)
    md, lines = table(rows), verdicts(rows)
    print("\n" + md + "\n\n" + "\n".join(lines))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(args.out, {
        **provenance(command), "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "note": "clients, server and Ray share this machine's cores over loopback; the clients' CPU is not counted",
        "settings": {**settings, "endpoint": "POST /v1/detect (raw image/jpeg body)", "payload": "weights/testdata PETS 320x200 frames as JPEG q90, cycled"},
        "targets": TARGETS, "results": rows, "verdicts": lines, "table_markdown": md,
    })
    print(f"\nwrote {args.out}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
