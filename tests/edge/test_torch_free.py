"""A camera without torch: `pip install .` (core only) into a fresh venv runs `silhouette obfuscate` and `silhouette edge`
against a live service started from the full venv, and torch-only requests fail in one line.

The core venv is built once per session from a copy of this checkout (about 35 s on 2 cores, most of it unpacking
onnxruntime, OpenCV and PyAV); pip reads the same index and local wheels as any other install on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# runs the CLI in-process, then fails if a heavy package was imported along the way (with torch installed or not)
RUN_CLI = (
    "import sys\n"
    "from silhouette.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "leaked = sorted(m for m in ('torch', 'torchvision', 'onnx', 'fastapi', 'uvicorn') if m in sys.modules)\n"
    "if leaked:\n"
    "    sys.exit(f'imported {leaked}')\n"
    "sys.exit(rc)\n"
)


def _env(tmp: Path) -> dict[str, str]:
    """The test's environment, without a PYTHONPATH that could reach the checkout, and a private export cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SILHOUETTE_CACHE"] = str(tmp / "cache")
    return env


@pytest.fixture(scope="session")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a fresh venv holding only `pip install .` of this checkout (the core dependencies, no extras)."""
    root = tmp_path_factory.mktemp("core")
    pkg = root / "checkout"  # a copy: the build writes build/ and *.egg-info next to the sources it reads
    shutil.copytree(REPO / "src", pkg / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, pkg / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(pkg)],
                         capture_output=True, text=True, timeout=480)
    if pip.returncode != 0:
        pytest.fail(f"pip install . (core) failed:\n{pip.stderr[-3000:]}", pytrace=False)
    return venv / "bin" / "python"


def _free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`silhouette serve` from the full venv (loopback, no auth, 1 thread) in its own process; its base URL."""
    import httpx

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    port = _free_port()
    cmd = [sys.executable, "-m", "silhouette", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    with open(log, "wb") as out:
        # in its own folder: a service without --db keeps its counts in a SQLite file in the working directory
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(log.parent), cwd=log.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # the detector loads in a few seconds; a busy CI core can be slower
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"silhouette serve did not start:\n{log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _cli(python: Path, tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`silhouette ARGV` run by `python` through RUN_CLI, in `tmp`."""
    return subprocess.run([str(python), "-c", RUN_CLI, *argv], capture_output=True, text=True, timeout=300, cwd=tmp,
                          env=_env(tmp))


def _frame(shared: Path) -> str:
    """A 320x200 PETS frame with several people."""
    return str(shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png")


def test_core_install_has_no_torch(core_python: Path) -> None:
    """The core install is really torch-free (and service-free), so the CLI runs below prove something."""
    code = "import importlib.util as u; print([m for m in ('torch', 'fastapi', 'onnx') if u.find_spec(m)])"
    out = subprocess.run([str(core_python), "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("venv", ["core", "full"])
def test_obfuscate_and_edge_never_import_torch(venv: str, core_python: Path, service: str, shared: Path,
                                               tmp_path: Path) -> None:
    """The shipped ONNX obfuscator end to end: video and image out, frames to a live service; torch never imported."""
    python = core_python if venv == "core" else Path(sys.executable)
    video = str(shared / "data" / "pets2009" / "vtest.avi")
    done = _cli(python, tmp_path, "obfuscate", video, "--max-frames", "3", "--out", str(tmp_path / "out.mp4"))
    assert done.returncode == 0, done.stderr
    assert "obfuscated 3 frame(s)" in done.stdout and (tmp_path / "out.mp4").stat().st_size > 0
    done = _cli(python, tmp_path, "obfuscate", _frame(shared), "--out", str(tmp_path / "one.png"))
    assert done.returncode == 0 and (tmp_path / "one.png").is_file(), done.stderr
    report = tmp_path / "edge.json"
    done = _cli(python, tmp_path, "edge", "--source", video, "--max-frames", "2", "--server", service,
                "--camera-id", f"torch-free-{venv}", "--report", str(report), "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads(report.read_text())
    assert summary["sent"] == 2 and summary["failed"] == 0 and summary["people_total"] > 0


@pytest.mark.parametrize(("argv", "needs"), [
    (["obfuscate", "IMAGE", "--backend", "torch"], "silhouette[train]"),
    (["obfuscate", "IMAGE", "--checkpoint", "PT"], "silhouette[train]"),
    (["edge", "--source", "IMAGE", "--server", "http://127.0.0.1:9", "--checkpoint", "PT"], "silhouette[train]"),
    (["export", "--out", "x.onnx"], "silhouette[train]"),
    (["serve", "--no-auth"], "silhouette[serve]"),
])
def test_what_needs_an_extra_says_so_in_one_line(argv: list[str], needs: str, core_python: Path, shared: Path,
                                                 tmp_path: Path) -> None:
    """A .pt model, --backend torch, export and serve name the extra to install (and the .onnx way out)."""
    from silhouette.paths import DEFAULT_CHECKPOINT

    argv = [{"IMAGE": _frame(shared), "PT": str(DEFAULT_CHECKPOINT)}.get(a, a) for a in argv]
    done = _cli(core_python, tmp_path, *argv)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]  # edge warns: no API key
    assert len(lines) == 1 and needs in lines[0], done.stderr
    if argv[0] != "serve" and argv[0] != "export":
        assert ".onnx" in lines[0]  # the way out without installing torch: the shipped ONNX obfuscator
