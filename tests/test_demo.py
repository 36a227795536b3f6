"""`silhouette demo` on its success path: both modes counted on real PETS frames, pictures and counts written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Callable

import pytest

from silhouette.cli import main

@pytest.fixture(scope="module")
def pair(tiny_pair: Callable[..., Path]) -> Path:
    """A one-epoch private pair (the shipped one is not what this test checks)."""
    return tiny_pair()


def test_demo_shows_both_modes(pair: Path, pets_every: Callable[[int], Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pets"
    shutil.copytree(pets_every(40), data)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--data", str(data), "--pair", str(pair), "--max-frames", "3"]) == 0
    out = capsys.readouterr().out
    for col in ("clean", "compatible", "private"):
        assert f"{col:>10} vs ground truth" in out
    rows = list(csv.DictReader(open(tmp_path / "demo" / "counts.csv")))
    assert len(rows) == 3 and set(rows[0]) == {"frame_index", "gt", "clean", "compatible", "private"}
    assert all(int(r["gt"]) > 0 for r in rows)
    for name in ("side_by_side.png", "counts.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 10_000
