"""Pseudo-label cache on real PETS frames with a real zoo detector: build, load, staleness, COCO validity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from silhouette.data import FrameDataset, build_pseudo_labels, ensure_pseudo_labels, load_manifest, load_pseudo_labels
from silhouette.data.labels import PseudoLabelsMissing, PseudoLabelsStale, labels_path
from silhouette.errors import SilhouetteError

DET = "yolo_fastest_xl"


@pytest.fixture(scope="module")
def labelled(pets_sparse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the sparse PETS set with yolo_fastest_xl@0.3 pseudo-labels built once."""
    root = tmp_path_factory.mktemp("labelled") / "pets"
    shutil.copytree(pets_sparse, root)
    build_pseudo_labels(root, DET, 0.3, progress=False)
    return root


def test_build_then_load_matches_golden(labelled: Path, golden: dict) -> None:
    path = labels_path(labelled, DET, 0.3)
    assert path == labelled / "labels" / "yolo_fastest_xl_0.3.json"
    labels = load_pseudo_labels(labelled, DET, 0.3)
    files = [r["file"] for r in load_manifest(labelled)["frames"]]
    assert sorted(labels) == sorted(files) and len(files) == 20
    for k in (0, 400):
        ref = golden["models"][DET]["per_image"][f"pets_f{k:04d}"]["recall_at_0.30"]
        det = labels[f"frames/view001/{k:06d}.png"]
        assert det.boxes.shape == (ref["n_det"], 4) and bool((det.labels == 0).all())
        assert np.allclose(det.boxes.numpy(), ref["boxes_xyxy"], atol=0.05)
        assert np.allclose(det.scores.numpy(), ref["scores"], atol=1e-3)
        assert bool((det.scores >= 0.3).all())


def test_coco_json_loads_in_faster_coco_eval(labelled: Path) -> None:
    from faster_coco_eval import COCO

    path = labels_path(labelled, DET, 0.3)
    data = json.loads(path.read_text())
    info = data["info"]
    assert info["detector"] == DET and info["score_threshold"] == 0.3 and len(info["frames_digest"]) == 64
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 20 and coco.getCatIds() == [1]
    anns = coco.loadAnns(coco.getAnnIds())
    total = sum(len(d) for d in load_pseudo_labels(labelled, DET, 0.3).values())
    assert len(anns) == total > 20
    assert all(a["category_id"] == 1 and a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], rel=1e-3) for a in anns)
    img = coco.loadImgs([1])[0]
    assert (img["width"], img["height"]) == (320, 200) and img["file_name"].startswith("frames/")
    res = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in anns])
    assert len(res.getAnnIds()) == len(anns)


def test_stale_after_touch_and_other_detector_or_threshold(labelled: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(labelled, root)
    load_pseudo_labels(root, DET, 0.3)  # fresh copy is valid (copytree keeps mtimes)
    with pytest.raises(PseudoLabelsMissing, match="silhouette label"):
        load_pseudo_labels(root, "yolox_nano", 0.3)
    with pytest.raises(PseudoLabelsMissing, match="--threshold 0.5"):
        load_pseudo_labels(root, DET, 0.5)
    with pytest.raises(PseudoLabelsStale, match="threshold"):
        load_pseudo_labels(root, DET, 0.3000001)  # same file name, different threshold inside
    frame = root / "frames" / "view001" / "000040.png"
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(PseudoLabelsStale, match="stale"):
        load_pseudo_labels(root, DET, 0.3)
    with pytest.raises(SilhouetteError, match="silhouette label"):
        FrameDataset(root, pseudo_labels=load_pseudo_labels(root, DET, 0.3))
    labels = ensure_pseudo_labels(root, DET, 0.3, progress=False)  # rebuilds
    assert len(labels) == 20
    load_pseudo_labels(root, DET, 0.3)


def test_split_labels_and_dataset_targets(labelled: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(labelled, root)
    # the all-frames file serves any split
    test_labels = load_pseudo_labels(root, DET, 0.3, split="test")
    test_files = {r["file"] for r in load_manifest(root)["frames"] if r["split"] == "test"}
    assert set(test_labels) == test_files
    path = build_pseudo_labels(root, DET, 0.3, split="test", progress=False)
    assert path.name == "yolo_fastest_xl_0.3_test.json"
    assert len(json.loads(path.read_text())["images"]) == len(test_files)
    again = load_pseudo_labels(root, DET, 0.3, split="test")
    for f in test_files:
        assert torch.allclose(again[f].boxes, test_labels[f].boxes)
    ds = FrameDataset(root, split="test", pseudo_labels=again)
    item = ds[0]
    assert torch.equal(item["target_boxes"], again[item["file"]].boxes)
    assert item["target_scores"].shape == (len(again[item["file"]]),)
