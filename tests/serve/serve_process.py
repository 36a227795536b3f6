"""`silhouette serve` as the tests' subprocess: its own session, $TMPDIR and working directory, a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`silhouette serve` in a subprocess (its own session, $TMPDIR and working directory), stopped with SIGTERM."""

    def __init__(self, workdir: Path, db: str, api_key: str, workers: int = 1, *extra: str) -> None:
        self.cwd, self.tmpdir, self.log_path = workdir / "cwd", workdir / "tmp", workdir / "serve.log"
        self.cwd.mkdir(parents=True)
        self.tmpdir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SILHOUETTE_API_KEY": api_key, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "silhouette", "serve", "--port", str(self.port), "--workers", str(workers),
                "--threads", "1", "--db", db, *extra]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pids = self.wait_for_workers(workers)

    def wait_for_workers(self, workers: int, timeout: float = 180.0) -> set[int]:
        """The worker pids, once `workers` different ones answered /healthz (each loads its own detector)."""
        pids: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(pids) < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"silhouette serve did not start {workers} workers:\n{self.log()[-3000:]}")
            try:
                pids.add(httpx.get(self.url + "/healthz", headers={"Connection": "close"}, timeout=5).json()["worker_pid"])
            except httpx.TransportError:
                time.sleep(0.3)
        return pids

    def log(self) -> str:
        """Everything the service printed so far."""
        return self.log_path.read_text(errors="replace")

    def open_files_under(self, folder: Path) -> list[str]:
        """Paths of the service's open descriptors (parent and workers) that lie in `folder`, deleted files included."""
        return open_files_in({self.proc.pid, *self.pids}, folder)

    def stop(self) -> None:
        """SIGTERM to the service's process group (uvicorn stops its workers), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def open_files_in(pids: set[int] | list[int], folder: Path) -> list[str]:
    """Paths of the open descriptors of `pids` that lie in `folder` (deleted temporary files included)."""
    found = []
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed while listing
            if target.startswith(str(folder)):
                found.append(target)
    return found
