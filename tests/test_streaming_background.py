"""The camera's silhouette runner: it learns the scene live, sends nothing before it knows it, then only people."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from silhouette.silhouettes import StreamingBackground, foreground_masks, median_background


def _sequence(root: Path, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `n` train frames of a prepared PETS dataset, in time order, with their human boxes."""
    from silhouette.data.torch_dataset import FrameDataset

    ds = FrameDataset(root, split="train")
    items = [ds[i] for i in range(n)]
    return np.stack([it["image"].numpy() for it in items]), [it["gt_boxes"].reshape(-1, 4).numpy() for it in items]


def test_streaming_background_sends_nothing_first_then_people(pets_every: Callable[[int], Path]) -> None:
    frames, boxes = _sequence(pets_every(5), 40)  # 40 frames 0.5 s apart: people walk through the scene
    runner = StreamingBackground(history=10, sample_every=2)
    out = np.concatenate([runner(frames[i : i + 4]) for i in range(0, len(frames), 4)])
    assert out.shape == frames.shape and set(np.unique(out).tolist()) <= {0.0, 1.0}
    assert not out[0].any()  # the first frame is its own background: nothing of it is sent
    inside = np.zeros(out.shape[:1] + out.shape[2:], dtype=bool)
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1 in np.round(b).astype(int):
            inside[i, y0:y1, x0:x1] = True
    late = slice(20, None)  # once the scene is learnt, the foreground is people and little else
    fg = out[late, 0] > 0
    assert fg[inside[late]].mean() > 0.3 and fg[~inside[late]].mean() < 0.03


def test_streaming_background_starts_over_on_a_new_frame_size() -> None:
    runner = StreamingBackground()
    runner(np.random.default_rng(0).random((2, 3, 20, 30), dtype=np.float32))
    out = runner(np.random.default_rng(1).random((1, 3, 10, 16), dtype=np.float32))
    assert out.shape == (1, 3, 10, 16) and not out.any() and runner.background.shape == (3, 10, 16)


def test_masks_against_the_median_match_where_frames_differ() -> None:
    scene = np.full((5, 3, 12, 12), 0.5, dtype=np.float32)
    scene[2, :, 3:9, 3:9] = 0.9  # a square "person" in one frame only
    bg = median_background(scene)
    assert np.allclose(bg, 0.5)
    masks = foreground_masks(scene, bg[None])
    assert masks[2, 0, 4:8, 4:8].all()  # its inside (the opening only rounds the corners)
    assert masks.sum() == masks[2, 0, 3:9, 3:9].sum() >= 30  # and nothing outside it, in any frame


def test_a_pair_runner_sends_its_pairs_cells_and_refuses_a_scene_pair(tmp_path: Path,
                                                                       pets_every: Callable[[int], Path]) -> None:
    """The camera reads the cell size from pair.json; a pair trained on scene silhouettes cannot run on a camera."""
    import json

    import pytest

    from silhouette.silhouettes import pair_runner

    frames, _ = _sequence(pets_every(5), 24)
    for spec, block in (("bgsub:mask", 1), ("bgsub:mask:4", 4)):
        (tmp_path / "pair.json").write_text(json.dumps({"baseline": spec, "detector": "yolox_nano"}))
        runner = pair_runner(tmp_path / "pair.json")
        out = np.concatenate([runner(frames[i : i + 4]) for i in range(0, len(frames), 4)])[:, 0]
        assert runner.block == block and out[12:].any()
        cells = out[:, : 200 // block * block, :].reshape(len(out), 200 // block, block, 320 // block, block)
        assert (cells.max(axis=(2, 4)) == cells.min(axis=(2, 4))).all()
    (tmp_path / "pair.json").write_text(json.dumps({"baseline": "bgsub:scene", "detector": "yolox_nano"}))
    with pytest.raises(ValueError, match="a camera sends bgsub:mask silhouettes"):
        pair_runner(tmp_path / "pair.json")
