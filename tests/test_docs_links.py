"""Every relative link in the README, ARCHITECTURE.md, docs/, results/ and checkpoints/ resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from silhouette.paths import REPO_ROOT


def test_no_broken_links() -> None:
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "check_links.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# t\n[ok](docs/a.md) [gone](docs/missing.md) [bad anchor](docs/a.md#nope)\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n")
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "check_links.py"), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "missing.md" in out.stdout + out.stderr and "nope" in out.stdout + out.stderr
