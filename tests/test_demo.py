"""`silhouette demo` on its success path: both modes counted on real PETS frames, pictures and counts written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

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
    expected = _reference_counts(data, 3)
    for col in ("frame_index", "gt", "clean", "compatible"):
        assert [int(r[col]) for r in rows] == expected[col], col
    assert all(g > 0 for g in expected["gt"]) and sum(expected["clean"]) > 0
    # plausible: the shipped obfuscator keeps the people the detector finds on the original frames
    assert all(abs(a - b) <= 2 for a, b in zip(expected["compatible"], expected["clean"])), expected
    assert all(int(r["private"]) >= 0 for r in rows)  # a one-epoch pair: a count, not a good one
    mae = sum(abs(a - b) for a, b in zip(expected["clean"], expected["gt"])) / 3
    assert f"     clean vs ground truth: count MAE {mae:.2f} persons/frame" in out
    for name in ("side_by_side.png", "counts.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 10_000
    with Image.open(tmp_path / "demo" / "side_by_side.png") as picture:
        assert picture.width > 3 * picture.height  # three panels: original, compatible, private


def _reference_counts(data: Path, n: int) -> dict[str, list[int]]:
    """The demo's columns computed here from its parts: GT, YOLOX-Nano on clean and on shipped-obfuscated frames."""
    import torch

    from silhouette.data import FrameDataset
    from silhouette.detectors import create_detector
    from silhouette.models.checkpoint import load_obfuscator

    ds = FrameDataset(data, split="test")
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    detector, obf = create_detector("yolox_nano"), load_obfuscator(None)
    with torch.no_grad():
        obfuscated = obf(images)
    return {
        "frame_index": [int(it["frame_index"]) for it in items],
        "gt": [len(it["gt_boxes"]) for it in items],
        "clean": [len(d.persons(0.3)) for d in detector.predict(images)],
        "compatible": [len(d.persons(0.3)) for d in detector.predict(obfuscated)],
    }


def test_demo_private_mode_defaults_to_the_shipped_silhouette_pair(pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    """Without --pair the private column is the shipped silhouette pair, counted exactly as its parts count."""
    import torch

    from silhouette.data import FrameDataset
    from silhouette.detectors.adapt import pair_detector
    from silhouette.evaluation.silhouettes import make_transform
    from silhouette.paths import ASSETS_DIR

    data = tmp_path / "pets"
    shutil.copytree(pets_every(40), data)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--data", str(data), "--max-frames", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "demo" / "counts.csv")))
    ds = FrameDataset(data, split="test")
    images = torch.stack([ds[i]["image"] for i in range(3)])
    sil, det = make_transform("bgsub:mask", data), pair_detector(ASSETS_DIR / "silhouette_pair.json")
    with torch.no_grad():
        expected = [len(d.persons(0.3)) for d in det.predict(sil(images))]
    assert [int(r["private"]) for r in rows] == expected and sum(expected) > 0
