"""Fixtures of the evaluation tests: a sparse prepared PETS dataset and freshly built (untrained) checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The CI box has 2 shared cores; evaluation tests run single-threaded and restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pets_eval(pets_every: Callable[[int], Path]) -> Path:
    """Every 20th PETS frame (40 frames; the test split holds 8, all with human GT)."""
    return pets_every(20)


def make_checkpoint(path: Path, obfuscator: str = "obf_paper", detector: str = "fastestdet", deobfuscator: bool = True,
                    seed: int = 0, data_root: Path | None = None) -> Path:
    """A freshly built, seeded, untrained checkpoint in the training package's format."""
    from silhouette.models import build_deobfuscator, build_obfuscator, save_checkpoint

    torch.manual_seed(seed)
    obf = build_obfuscator(obfuscator)
    kwargs = {}
    if deobfuscator:
        kwargs = {"deobfuscator": build_deobfuscator("deobf_small"),
                  "deobfuscator_spec": {"name": "deobf_small", "kwargs": {}}}
    return save_checkpoint(path, obfuscator=obf, obfuscator_spec={"name": obfuscator, "kwargs": {}},
                           config={"detector": {"spec": detector, "score_threshold": 0.5},
                                   "data": {"root": str(data_root) if data_root else ""}}, **kwargs)


@pytest.fixture(scope="session")
def checkpoint_factory() -> Callable[..., Path]:
    """`make_checkpoint` for tests that need more than the default checkpoint."""
    return make_checkpoint


@pytest.fixture(scope="session")
def fresh_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained paper-size obfuscator + deobfuscator, recorded as trained against fastestdet."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "obf_paper.pt")
