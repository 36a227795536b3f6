"""Detection service throughput and p50/p95 latency on loopback: 1, 4 and 16 concurrent clients, batch 1 and 8.

Run: .venv/bin/python benchmarks/service.py   (writes benchmarks/results/service.json)

For each --batch-size the service is started as its own process (`silhouette serve`, 1 worker, 127.0.0.1, an
ephemeral port, API key from a file); clients post 320x200 PETS JPEG frames to POST /v1/detect with a bounded
number of requests per setting. Any error fails the run. Clients and server share this machine's cores.
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

import numpy as np

from _common import run_info

RESULTS = Path(__file__).resolve().parent / "results" / "service.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(detector: str, batch: int, key_file: Path, port: int, threads: int | None) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "silhouette", "serve", "--detector", detector, "--host", "127.0.0.1", "--port", str(port),
           "--batch-size", str(batch), "--api-key-file", str(key_file)] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not become healthy within 120 s")


async def _load(url: str, key: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    """`requests` POSTs spread over `clients` concurrent connections; latency per request."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    async def client(c: httpx.AsyncClient, counter) -> None:  # noqa: ANN001 - shared iterator of request ids
        for i in counter:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/detect", content=bodies[i % len(bodies)], headers={"X-API-Key": key, "content-type": "image/jpeg"})
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        warm = iter(range(clients))
        await asyncio.gather(*(client(c, warm) for _ in range(clients)))  # warm-up: one request per client, untimed
        latencies.clear()
        errors.clear()
        todo = iter(range(requests))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, todo) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": requests, "ok": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "seconds": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print a table, write JSON; exit 1 if any request failed."""
    import cv2

    from silhouette.fileio import write_json
    from silhouette.paths import weights_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="yolox_nano", help="detector the server runs")
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16], help="concurrent client counts")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="server batch sizes (one server each)")
    parser.add_argument("--requests", type=int, default=64, help="requests per (batch, clients) setting")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the server (0 = its default, all cores)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)

    frames = [cv2.imread(str(p)) for p in sorted((weights_dir() / "testdata").glob("pets2009_*_320x200.png"))]
    bodies = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    key = "bench-" + os.urandom(8).hex()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key"
        key_file.write_text(key + "\n")
        for batch in args.batch_sizes:
            port = _free_port()
            proc = _start_server(args.detector, batch, key_file, port, args.threads or None)
            try:
                for clients in args.clients:
                    res = asyncio.run(_load(f"http://127.0.0.1:{port}", key, bodies, clients, args.requests))
                    rows.append({"batch_size": batch, "clients": clients, **res})
                    print(f"batch {batch:2d} clients {clients:2d}: {res['throughput_rps']:6.1f} req/s  p50 {res['p50_ms']} ms  "
                          f"p95 {res['p95_ms']} ms  errors {res['errors']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    table = "\n".join(
        ["| batch size | clients | requests | req/s | p50 ms | p95 ms | errors |", "|---|---|---|---|---|---|---|"]
        + [f"| {r['batch_size']} | {r['clients']} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['errors']} |" for r in rows]
    )
    print()
    print(table)
    write_json(
        args.out,
        {
            **run_info(load_before, note="shared 2-core machine; server and clients on the same cores over loopback"),
            "settings": {
                "detector": args.detector, "workers": 1, "server_ort_threads": args.threads or "default (all cores)", "endpoint": "POST /v1/detect (raw image/jpeg body)",
                "payload": "weights/testdata PETS 320x200 frames as JPEG q90 (~20 KB), cycled",
                "requests_per_setting": args.requests, "warmup": "one untimed request per client before timing",
            },
            "results": rows,
            "table_markdown": table,
        },
    )
    print(f"\nwrote {args.out}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
