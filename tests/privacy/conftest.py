"""Shared fixtures: a few real frames of the shared footage, read by path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from silhouette.paths import data_dir


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # the CI machine has 2 cores shared with other jobs
    torch.set_num_threads(1)


def _read_frames(path: Path, indices: list[int], size: tuple[int, int] | None) -> list[torch.Tensor]:
    import cv2

    from silhouette.data.sources import iter_frames
    from silhouette.imaging import bgr_to_tensor

    wanted = set(indices)
    out = {}
    for fr in iter_frames(str(path)):
        if fr.index in wanted:
            img = fr.image if size is None else cv2.resize(fr.image, size, interpolation=cv2.INTER_AREA)
            out[fr.index] = bgr_to_tensor(img)
        if fr.index >= max(indices):
            break
    return [out[i] for i in indices]


@pytest.fixture(scope="session")
def pets_video() -> Path:
    path = data_dir() / "pets2009" / "vtest.avi"
    if not path.is_file():
        pytest.fail(f"shared footage missing: {path}")
    return path


@pytest.fixture(scope="session")
def face_gif() -> Path:
    path = data_dir() / "intel" / "face-demographics-walking.gif"
    if not path.is_file():
        pytest.fail(f"shared footage missing: {path}")
    return path


@pytest.fixture(scope="session")
def pets_small(pets_video: Path) -> list[torch.Tensor]:
    """Eight PETS frames at 160x120."""
    return _read_frames(pets_video, list(range(0, 80, 10)), (160, 120))


@pytest.fixture(scope="session")
def read_frames():  # noqa: ANN201
    return _read_frames


@pytest.fixture(scope="session")
def pets_items(pets_video: Path) -> list[dict]:
    """Every 3rd PETS frame of 0-400 at 320x200 with rescaled GT boxes and identity ids (FrameDataset-style items)."""
    import cv2

    from silhouette.data.pets import PETS_SIZE, parse_pets_xml, scale_boxes
    from silhouette.data.sources import iter_frames
    from silhouette.imaging import bgr_to_tensor

    ann = parse_pets_xml(pets_video.parent / "PETS2009-S2L1.xml")
    items = []
    for fr in iter_frames(str(pets_video)):
        if fr.index > 400:
            break
        if fr.index % 3:
            continue
        boxes, ids = scale_boxes(*ann.get(fr.index, ([], [])), PETS_SIZE, (320, 200))
        items.append({"image": bgr_to_tensor(cv2.resize(fr.image, (320, 200), interpolation=cv2.INTER_AREA)),
                      "gt_boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      "gt_ids": torch.tensor(ids, dtype=torch.long), "frame_index": fr.index})
    return items


@pytest.fixture(scope="session")
def tiny_pets_factory(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a factory
    """Prepared 160x100 PETS datasets (every N-th frame), made once per N for the whole session."""
    made: dict[int, Path] = {}

    def make(every: int) -> Path:
        if every not in made:
            from silhouette.data.datasets import prepare_dataset

            out = tmp_path_factory.mktemp(f"pets_tiny_every{every}")
            prepare_dataset("pets2009", out, size=(160, 100), every=every, progress=False)
            made[every] = out
        return made[every]

    return make
