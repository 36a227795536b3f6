"""Fixtures of the training tests: a sparse prepared PETS dataset and the tiny config pointed at it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from silhouette.training.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
TEST_DETECTOR = "fastestdet"  # the cheapest zoo model keeps every training test to seconds


@pytest.fixture(autouse=True)
def _two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pets_train(pets_every: Callable[[int], Path]) -> Path:
    """Every 40th PETS frame (20 frames: 14 train, 2 val, 4 test), 320x200 with GT."""
    return pets_every(40)


@pytest.fixture()
def tiny_config(pets_train: Path) -> Callable[..., Config]:
    """configs/tiny.yaml on the sparse dataset, with optional --set style overrides."""

    def make(*overrides: str) -> Config:
        base = [f"data.root={pets_train}", f"detector.spec={TEST_DETECTOR}", "data.crop=[64, 96]", "data.frame_stride=1"]
        return load_config(REPO / "configs" / "tiny.yaml", base + list(overrides))

    return make
