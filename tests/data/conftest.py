"""Shared prepared datasets for the data tests: decoded once per session, read by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from silhouette.paths import data_dir, weights_dir


def _need_shared() -> None:
    if not (data_dir() / "pets2009" / "vtest.avi").is_file():
        pytest.fail(f"shared footage missing under {data_dir()}; set SILHOUETTE_SHARED")


@pytest.fixture(scope="session")
def pets_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 795 PETS frames at 320x200 PNG with GT (the paper's recipe); ~20 s on a busy 2-core box."""
    from silhouette.data import prepare_dataset

    _need_shared()
    return prepare_dataset("pets2009", tmp_path_factory.mktemp("pets_full") / "pets", progress=False)


@pytest.fixture(scope="session")
def pets_sparse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 40th PETS frame (20 frames): enough for pseudo-label and CLI tests."""
    from silhouette.data import prepare_dataset

    _need_shared()
    return prepare_dataset("pets2009", tmp_path_factory.mktemp("pets_sparse") / "pets", every=40, progress=False)


@pytest.fixture(scope="session")
def golden() -> dict:
    """The shared weights' golden.json."""
    import json

    return json.loads((weights_dir() / "golden.json").read_text())
