"""Where a result came from: git commit (and whether the tree was dirty), command, date, machine, package versions.

Every result file the project writes carries this block, so a number in the docs can be traced to the code and the
machine that made it. Torch-free: the camera writes reports too.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

COMMAND: list[str] | None = None  # set by `silhouette.cli.main` to the command being run
PACKAGES = ("silhouette", "torch", "torchvision", "onnxruntime", "onnx", "onnx2torch", "numpy", "opencv-python-headless",
            "scikit-image", "torchmetrics", "faster-coco-eval", "facenet-pytorch", "fastapi", "uvicorn", "sqlalchemy", "ray")


def git_state(repo: str | Path | None = None) -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout holding this package (None when it is not a git checkout)."""
    from silhouette.paths import REPO_ROOT

    root = Path(repo) if repo is not None else REPO_ROOT

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # tracked files only, outside results/: run folders, caches and the result files a rerun rewrites on its way do
    # not make a result irreproducible; a change to the code, configs or weights does
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": bool(status)}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name if torch is already loaded and sees one; never imports torch itself."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not break a report
        return None


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out), plus Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """The provenance block of a result file, taken now."""
    argv = command or COMMAND or [Path(sys.argv[0]).name or "python", *sys.argv[1:]]
    return {
        **git_state(),
        "command": shlex.join(argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name()},
        "versions": versions(),
    }
