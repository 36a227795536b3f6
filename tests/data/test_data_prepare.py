"""`prepare_dataset` on real footage: PETS frames + GT, Intel camera splits, idempotence, FrameDataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from silhouette.data import (
    FrameDataset,
    collate_frames,
    load_manifest,
    prepare_dataset,
    split_by_camera,
    split_by_time,
)
from silhouette.errors import SilhouetteError
from silhouette.paths import data_dir, weights_dir


def test_pets_795_frames_320x200_temporal_split(pets_full: Path) -> None:
    m = load_manifest(pets_full)
    frames = m["frames"]
    assert m["dataset"] == "pets2009" and m["size"] == [320, 200] and len(frames) == 795
    assert [r["frame_index"] for r in frames] == list(range(795))
    splits = [r["split"] for r in frames]
    # first 70% train, next 10% val, last 20% test, in time order
    assert splits == ["train"] * 556 + ["val"] * 80 + ["test"] * 159
    ts = [r["timestamp"] for r in frames]
    assert ts[0] == 0.0 and ts[1] == pytest.approx(0.1) and all(b > a for a, b in zip(ts, ts[1:]))
    files = sorted((pets_full / "frames" / "view001").iterdir())
    assert len(files) == 795 and files[0].name == "000000.png" and files[-1].name == "000794.png"
    for k in (0, 123, 794):
        assert cv2.imread(str(pets_full / frames[k]["file"])).shape == (200, 320, 3)
    assert sum(len(r["gt_boxes"]) for r in frames) == 4650
    assert len({i for r in frames for i in r["gt_ids"]}) == 19


@pytest.mark.parametrize("k", [0, 400, 794])
def test_pets_frames_bit_identical_to_testdata(pets_full: Path, k: int) -> None:
    ours = cv2.imread(str(pets_full / "frames" / "view001" / f"{k:06d}.png"), cv2.IMREAD_UNCHANGED)
    ref = cv2.imread(str(weights_dir() / "testdata" / f"pets2009_s2l1_v1_f{k:04d}_320x200.png"), cv2.IMREAD_UNCHANGED)
    assert ours.dtype == ref.dtype == np.uint8
    assert np.array_equal(ours, ref)


def test_pets_gt_matches_golden(pets_full: Path, golden: dict) -> None:
    frames = load_manifest(pets_full)["frames"]
    for k in (0, 400, 794):
        ref = golden["images"][f"pets_f{k:04d}"]["gt_person_boxes_xyxy"]
        ours = frames[k]["gt_boxes"]
        assert len(ours) == len(ref) == len(frames[k]["gt_ids"])
        assert np.allclose(ours, ref, atol=0.011)


def test_pets_gt_lines_up_with_detected_people(pets_full: Path) -> None:
    from silhouette.detectors.registry import create_detector

    det = create_detector("yolo_fastest_xl", conf_threshold=0.3)
    ds = FrameDataset(pets_full)
    picks = [0, 130, 260, 390, 520, 650, 780]
    batch = collate_frames([ds[i] for i in picks])
    preds = det.predict(batch["image"])
    matched = shifted_matched = total = 0
    for gt, p in zip(batch["gt_boxes"], preds):
        assert len(p) > 0
        total += len(gt)
        matched += int((box_iou(gt, p.boxes).max(1).values >= 0.5).sum())
        # control: the same boxes moved sideways by ~2 person widths must NOT line up
        moved = gt + torch.tensor([25.0, 0.0, 25.0, 0.0])
        shifted_matched += int((box_iou(moved, p.boxes).max(1).values >= 0.5).sum())
    assert total >= 30
    assert matched / total >= 0.75, (matched, total)
    assert shifted_matched / total <= 0.25


def test_manifest_csv_mirrors_json(pets_full: Path) -> None:
    m = load_manifest(pets_full)
    with open(pets_full / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(m["frames"])
    for row, rec in zip(rows[::97], m["frames"][::97]):
        assert row["file"] == rec["file"] and row["split"] == rec["split"] and row["camera"] == rec["camera"]
        assert int(row["frame_index"]) == rec["frame_index"] and int(row["gt_count"]) == len(rec["gt_boxes"])


def test_frame_dataset_items_and_collate(pets_full: Path) -> None:
    val = FrameDataset(pets_full, split="val")
    assert len(val) == 80 and len(FrameDataset(pets_full, split="test", cameras=["view001"])) == 159
    item = val[0]
    assert item["frame_index"] == 556 and item["camera"] == "view001" and item["index"] == 0
    img = item["image"]
    assert img.shape == (3, 200, 320) and img.dtype == torch.float32 and 0.0 <= img.min() and img.max() <= 1.0
    bgr = cv2.imread(str(pets_full / item["file"]))
    assert torch.equal(img, torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0)
    assert item["gt_boxes"].dtype == torch.float32 and item["gt_boxes"].shape[1] == 4
    assert item["gt_ids"].dtype == torch.long and len(item["gt_ids"]) == len(item["gt_boxes"])
    batch = next(iter(DataLoader(val, batch_size=4, collate_fn=collate_frames)))
    assert batch["image"].shape == (4, 3, 200, 320)
    assert batch["frame_index"].tolist() == [556, 557, 558, 559]
    assert isinstance(batch["gt_boxes"], list) and len(batch["gt_boxes"]) == 4
    flipped = FrameDataset(pets_full, split="val", transform=lambda t: t.flip(-1))
    assert torch.equal(flipped[0]["image"], img.flip(-1))
    with pytest.raises(SilhouetteError, match="present splits"):
        FrameDataset(pets_full, split="nope")
    with pytest.raises(SilhouetteError, match="unknown camera"):
        FrameDataset(pets_full, cameras=["cam9"])


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(SilhouetteError, match="not found"):
        load_manifest(tmp_path / "nowhere")
    with pytest.raises(SilhouetteError, match="silhouette prepare"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{ truncated")
    with pytest.raises(SilhouetteError, match="corrupt"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "x", "size": [320, 200], "created_with": {}, "frames": [{"file": "a"}]}))
    with pytest.raises(SilhouetteError, match="lacks"):
        load_manifest(tmp_path)


def test_intel_split_by_camera_and_by_time(tmp_path: Path) -> None:
    out = prepare_dataset("intel", tmp_path / "intel", every=10, progress=False)
    frames = load_manifest(out)["frames"]
    by_cam: dict[str, set[str]] = {}
    for r in frames:
        by_cam.setdefault(r["camera"], set()).add(r["split"])
    stems = sorted(p.stem for p in (data_dir() / "intel").iterdir() if p.suffix in (".gif", ".mp4"))
    assert sorted(by_cam) == stems
    assert all(len(s) == 1 for s in by_cam.values()), by_cam  # no camera leaks across splits
    assert by_cam["face-demographics-walking"] == {"test"} and by_cam["people-detection"] == {"test"}
    assert {s for v in by_cam.values() for s in v} == {"train", "val", "test"}
    mp4 = [r for r in frames if r["camera"] == "one-by-one-person-detection"]
    assert len(mp4) == 140 and all(r["frame_index"] % 10 == 0 for r in mp4)
    assert all(r["gt_boxes"] is None for r in frames)
    assert cv2.imread(str(out / mp4[0]["file"])).shape == (200, 320, 3)

    # the same records split by time instead: every camera spans train -> val -> test in order
    split_by_time(frames, (0.6, 0.2, 0.2))
    for cam in ("one-by-one-person-detection", "worker-zone-detection"):
        seq = [r["split"] for r in sorted(frames, key=lambda r: r["frame_index"]) if r["camera"] == cam]
        assert seq == sorted(seq, key=["train", "val", "test"].index) and set(seq) == {"train", "val", "test"}


def test_split_helpers_errors() -> None:
    recs = [{"camera": c, "frame_index": i, "split": None} for c in ("a", "b") for i in range(10)]
    split_by_camera(recs, {"a": "test", "*": "train"})
    assert {r["split"] for r in recs if r["camera"] == "a"} == {"test"}
    with pytest.raises(SilhouetteError, match="camera-split"):
        split_by_camera(recs, {"a": "test"})
    with pytest.raises(SilhouetteError, match="split-fractions"):
        split_by_time(recs, (0.5, 0.5, 0.5))
    split_by_time(recs, (0.7, 0.1, 0.2))
    assert [r["split"] for r in recs if r["camera"] == "b"] == ["train"] * 7 + ["val"] + ["test"] * 2


def test_prepare_idempotent_force_and_option_change(tmp_path: Path) -> None:
    gif = data_dir() / "intel" / "people-detection.gif"
    out = tmp_path / "own"
    prepare_dataset("video", out, sources=[str(gif)], image_format="jpg", progress=False)
    m1 = load_manifest(out)
    n = len(m1["frames"])
    assert n == 23 and m1["stats"]["written"] == n and m1["frames"][0]["file"].endswith(".jpg")
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "frames").rglob("*.jpg")}
    assert len(mtimes) == n

    prepare_dataset("video", out, sources=[str(gif)], image_format="jpg", progress=False)
    m2 = load_manifest(out)
    assert m2["stats"] == {"written": 0, "skipped": n, "frames": n}
    assert m2["frames"] == m1["frames"]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # an interrupted run (no manifest yet, some frames missing) resumes: only the missing frames are written
    (out / "manifest.json").unlink()
    for p in sorted(mtimes)[:3]:
        p.unlink()
    prepare_dataset("video", out, sources=[str(gif)], image_format="jpg", progress=False)
    assert load_manifest(out)["stats"] == {"written": 3, "skipped": n - 3, "frames": n}

    with pytest.raises(SilhouetteError, match=r"size.*--force"):
        prepare_dataset("video", out, size=(160, 100), sources=[str(gif)], image_format="jpg", progress=False)
    assert load_manifest(out)["size"] == [320, 200]  # refused run changed nothing

    prepare_dataset("video", out, size=(160, 100), sources=[str(gif)], image_format="png", force=True, progress=False)
    m3 = load_manifest(out)
    assert m3["stats"]["written"] == n and m3["size"] == [160, 100]
    assert not list((out / "frames").rglob("*.jpg"))  # old frames were removed
    assert cv2.imread(str(out / m3["frames"][0]["file"])).shape == (100, 160, 3)


def test_video_dataset_camera_pattern_groups_files(tmp_path: Path) -> None:
    # two "segments" of one camera and one of another, named like a recorder would
    src = tmp_path / "rec"
    src.mkdir()
    gif = data_dir() / "intel" / "people-detection.gif"
    for name in ("camA_part1.gif", "camA_part2.gif", "camB_part1.gif"):
        (src / name).symlink_to(gif)
    out = prepare_dataset("video", tmp_path / "ds", sources=[str(src)], camera_pattern=r"(?P<camera>cam[A-Z])_",
                          split_by="camera", camera_splits=["camB=test", "*=train"], every=2, progress=False)
    frames = load_manifest(out)["frames"]
    cam_a = [r for r in frames if r["camera"] == "camA"]
    assert len(cam_a) == 24 and len([r for r in frames if r["camera"] == "camB"]) == 12
    idx = [r["frame_index"] for r in cam_a]
    assert idx == sorted(idx) and len(set(idx)) == 24 and idx[12] == 23  # part 2 continues after part 1's 23 frames
    ts = [r["timestamp"] for r in cam_a]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert {r["split"] for r in frames if r["camera"] == "camB"} == {"test"}
    with pytest.raises(SilhouetteError, match="camera-pattern"):
        prepare_dataset("video", tmp_path / "ds2", sources=[str(src)], camera_pattern=r"cam(\d)", progress=False)


def test_folder_dataset_and_option_errors(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for cam in ("north", "south"):
        for i in range(5):
            cv2.imwrite(str(src / f"{cam}-{i}.png"), np.full((40, 60, 3), i * 40, np.uint8))
    out = prepare_dataset("folder", tmp_path / "ds", sources=[str(src)], camera_pattern=r"^([a-z]+)-",
                          split_fractions=(0.6, 0.2, 0.2), progress=False)
    frames = load_manifest(out)["frames"]
    assert sorted({r["camera"] for r in frames}) == ["north", "south"]
    assert [r["split"] for r in frames if r["camera"] == "south"] == ["train"] * 3 + ["val", "test"]
    assert frames[0]["source"].endswith("north-0.png")
    with pytest.raises(SilhouetteError, match="does not take --camera-pattern"):
        prepare_dataset("pets2009", tmp_path / "p", camera_pattern="x", progress=False)
    with pytest.raises(SilhouetteError, match="needs footage"):
        prepare_dataset("folder", tmp_path / "f", progress=False)
    with pytest.raises(SilhouetteError, match="did you mean"):
        prepare_dataset("pets2010", tmp_path / "p", progress=False)
