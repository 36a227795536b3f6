"""Face exposure: detectors find real faces on clean frames; the found-again fraction is computed right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.privacy.faces import (
    FACE_DETECTORS,
    box_iou,
    build_face_detector,
    face_exposure,
    refound,
    run_face_attack,
)


@pytest.fixture(scope="module")
def face_frames(face_gif: Path, read_frames) -> list[torch.Tensor]:  # noqa: ANN001
    """Frames 20 and 30 of the corridor clip at native 480x270: two people facing the camera."""
    return read_frames(face_gif, [20, 30], None)


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
def test_detector_finds_face_on_clean_frame(name: str, face_frames: list[torch.Tensor]) -> None:
    det = build_face_detector(name)  # a missing MTCNN or Haar fails here, with the install hint in its message
    boxes = det.detect(face_frames[1])
    assert boxes.shape[1] == 4 and len(boxes) >= 1
    # the faces are in the upper half of the corridor frame, about 20-35 px wide
    centres_y = (boxes[:, 1] + boxes[:, 3]) / 2
    widths = boxes[:, 2] - boxes[:, 0]
    assert ((centres_y < 160) & (widths > 12) & (widths < 60)).any(), boxes


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
def test_fraction_clean_vs_clean_and_blank(name: str, face_frames: list[torch.Tensor]) -> None:
    det = build_face_detector(name)  # a missing MTCNN or Haar fails here, with the install hint in its message
    blank = [torch.full_like(f, 0.5) for f in face_frames]
    res = face_exposure(det, face_frames, {"clean": face_frames, "blank": blank})
    assert res["reference_faces"] >= 2
    assert res["clean"]["fraction"] == 1.0
    assert res["blank"]["fraction"] == 0.0 and res["blank"]["found_again"] == 0


def test_refound_iou_rule() -> None:
    ref = [np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)]
    # IoU of [0,0,10,10] with [5,0,15,10] is 1/3 >= 0.3; with [7,0,17,10] it is 3/17 < 0.3
    found = [np.array([[5, 0, 15, 10]], np.float32), np.array([[7, 0, 17, 10], [50, 50, 60, 60]], np.float32)]
    assert abs(float(box_iou(ref[0], found[0])[0, 0]) - 1 / 3) < 1e-6
    r = refound(ref, found)
    assert r["reference_faces"] == 3 and r["found_again"] == 2 and abs(r["fraction"] - 2 / 3) < 1e-9
    assert np.isnan(refound([np.zeros((0, 4))], [np.zeros((0, 4))])["fraction"])


def test_run_face_attack_blur_hides_faces(face_frames: list[torch.Tensor]) -> None:
    from silhouette.evaluation.baselines import gaussian_blur

    usable = [build_face_detector(name) for name in ("haar", "mtcnn")]
    assert {d.name for d in usable} <= set(FACE_DETECTORS.names())
    res = run_face_attack(usable, {"clip": face_frames}, lambda x: gaussian_blur(x, 8.0), reconstructor=lambda x: x)
    assert res["resolution"] == "480x270"
    for d in usable:
        assert res[d.name]["obfuscated"]["fraction"] < 0.5
        assert res[d.name]["reconstructed"]["fraction"] == res[d.name]["obfuscated"]["fraction"]


def test_unknown_detector_is_a_clear_error() -> None:
    with pytest.raises(SilhouetteError, match="unknown face detector"):
        build_face_detector("dlib")


def test_haar_cascades_from_env_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    face_frames: list[torch.Tensor]) -> None:
    """OpenCV 5 ships no cascade files: a copy named by SILHOUETTE_HAAR_DIR is used, and its absence is explained."""
    import shutil

    import cv2

    from silhouette.privacy import faces

    assert hasattr(cv2, "CascadeClassifier"), f"OpenCV {cv2.__version__} has no CascadeClassifier: install opencv<5"
    sources = [faces._cascade_path(n) for n in faces.HAAR_CASCADES]  # the cascade files OpenCV 4 ships
    for src in sources:
        shutil.copy(src, tmp_path / src.name)
    # hide every built-in location, as on an OpenCV 5 install
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path / "none"), raising=False)
    monkeypatch.setattr(faces, "_CASCADE_DIRS", ())
    monkeypatch.delenv(faces.ENV_HAAR_DIR, raising=False)
    with pytest.raises(SilhouetteError, match=faces.ENV_HAAR_DIR):
        build_face_detector("haar")
    monkeypatch.setenv(faces.ENV_HAAR_DIR, str(tmp_path))
    det = build_face_detector("haar")
    assert len(det.detect(face_frames[1])) >= 1
