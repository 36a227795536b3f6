"""The face attack on the user's own footage (`attack --clips`), and Haar boxes of one face counted once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from silhouette.cli import main
from silhouette.paths import data_dir
from silhouette.privacy.faces import FACE_CLIPS, box_iou, build_face_detector, dedupe_boxes, resolve_footage

HEAD_POSE = FACE_CLIPS[1]  # two people side by side, facing the camera in the first frames


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory: pytest.TempPathFactory, read_frames) -> Path:  # noqa: ANN001
    """Frames 0-3 of the head-pose clip written as a PNG image folder, as a user's camera would leave them."""
    import cv2

    from silhouette.imaging import tensor_to_bgr

    folder = tmp_path_factory.mktemp("my_camera")
    for i, frame in enumerate(read_frames(data_dir() / "intel" / HEAD_POSE, [0, 1, 2, 3], None)):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), tensor_to_bgr(frame))
    return folder


@pytest.mark.parametrize("clip, indices", [(HEAD_POSE, [0]), (FACE_CLIPS[0], [20, 23, 24, 26])])
def test_haar_counts_each_visible_face_once(clip: str, indices: list[int], read_frames) -> None:  # noqa: ANN001
    """Both cascades fire on each face: without merging, these two-person frames gave 3-4 'faces' each."""
    det = build_face_detector("haar")
    for i, frame in zip(indices, read_frames(data_dir() / "intel" / clip, indices, None)):
        boxes = det.detect(frame)
        assert 1 <= len(boxes) <= 2, (clip, i, boxes)  # two people are visible in each of these frames
        iou = box_iou(boxes, boxes)
        assert (iou[~np.eye(len(boxes), dtype=bool)] <= 0.3).all()


def test_dedupe_keeps_the_first_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [0, 0, 10, 10]], np.float32)
    kept = dedupe_boxes(boxes)
    assert kept.tolist() == [[0, 0, 10, 10], [20, 0, 30, 10]]
    assert dedupe_boxes(np.zeros((0, 4))).shape == (0, 4)


def test_attack_faces_on_own_clips_names_them(tmp_path: Path, face_folder: Path, tiny_pets_factory,  # noqa: ANN001
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--clips takes a video, an image folder and a prepared dataset; JSON and markdown say which were used."""
    build_face_detector("haar")  # a missing Haar cascade fails here with its own message, before the attack runs
    data = tiny_pets_factory(40)
    gif = data_dir() / "intel" / FACE_CLIPS[0]
    out = tmp_path / "attack"
    rc = main(["attack", "--data", str(data), "--methods", "clean,blur:3", "--attacks", "faces", "--face-detectors",
               "haar", "--clips", f"{gif},{face_folder}", "--clips", str(data), "--no-progress", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    card = json.loads((out / "scorecard.json").read_text())
    footage = {f["kind"]: f for f in card["meta"]["faces"]["footage"]}
    assert footage["video"]["path"] == str(gif.resolve()) and footage["video"]["frames"] == 35
    assert footage["images"]["path"] == str(face_folder.resolve()) and footage["images"]["frames"] == 4
    test_frames = sum(r["split"] == "test" for r in json.loads((data / "manifest.json").read_text())["frames"])
    assert footage["prepared"]["split"] == "test" and footage["prepared"]["frames"] == test_frames
    assert footage["prepared"]["resolution"] == "160x100" and footage["video"]["resolution"] == "480x270"
    md = (out / "scorecard.md").read_text()
    for path in (gif, face_folder, data):
        assert str(path) in md
    clean = next(r for r in card["results"] if r["method"] == "clean")
    assert clean["faces"]["haar"]["obfuscated"]["fraction"] == 1.0 and clean["faces"]["haar"]["reference_faces"] > 0
    assert str(face_folder) in capsys.readouterr().out
    # other footage into the same --out: the cached face results of the first run are not reused
    assert main(["attack", "--data", str(data), "--methods", "clean", "--attacks", "faces", "--face-detectors", "haar",
                 "--clips", str(face_folder), "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    again = json.loads((out / "scorecard.json").read_text())
    assert again["results"][0]["faces"]["clips"] == [str(face_folder)] and again["results"][0]["faces"]["haar"]["frames"] == 4


@pytest.mark.parametrize("clips, attacks, message", [
    ("{tmp}/nope.mp4", "faces", "not found"),
    ("{tmp}/empty", "faces", "folder holds no images and no manifest.json"),
    ("{tmp}/notes.txt", "faces", "unknown file type .txt"),
    ("{tmp}/broken.mp4", "faces", "--clips"),
    ("{gif},{gif}", "faces", "given twice"),
    ("{gif}", "reconstruction", "add faces to --attacks"),
])
def test_bad_clips_are_one_line_errors(clips: str, attacks: str, message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "broken.mp4").write_bytes(b"\0" * 64)
    spec = clips.format(tmp=tmp_path, gif=data_dir() / "intel" / FACE_CLIPS[0])
    rc = main(["attack", "--data", str(tmp_path), "--methods", "clean", "--attacks", attacks, "--clips", spec,
               "--device", "cpu", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_default_footage_is_the_shared_intel_face_clips() -> None:
    footage = resolve_footage(None)
    assert [f.label for f in footage] == list(FACE_CLIPS) and all(f.kind == "video" for f in footage)


def test_resolution_of_mixed_frames() -> None:
    from silhouette.privacy.faces import frame_sizes

    assert frame_sizes([torch.zeros(3, 270, 480), torch.zeros(3, 100, 160), torch.zeros(3, 270, 480)]) == "480x270, 160x100"
