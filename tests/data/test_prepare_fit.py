"""`prepare --fit`: footage of another aspect ratio is letterboxed (or cropped) instead of squashed, boxes follow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from silhouette.cli import main
from silhouette.data.sources import LETTERBOX_FILL, plan_fit
from silhouette.errors import SilhouetteError
from silhouette.paths import data_dir

WALKING = data_dir() / "intel" / "face-demographics-walking.gif"  # 480x270, 16:9


def _frame(root: Path, rec: dict) -> np.ndarray:
    import cv2

    return cv2.imread(str(root / rec["file"]), cv2.IMREAD_COLOR)


def _first_frame(path: Path) -> np.ndarray:
    from silhouette.data.sources import iter_frames

    return next(iter(iter_frames(str(path)))).image


def test_own_16_9_footage_is_letterboxed_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    out = tmp_path / "mine"
    assert main(["prepare", "video", "--source", str(WALKING), "--out", str(out), "--size", "160x100", "--every", "5",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "resize: 480x270 -> 160x100 letterbox (picture 160x90, grey bars 5+5 px top+bottom), 7 frames" in lines
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["created_with"]["fit"] == "letterbox" and manifest["size"] == [160, 100]
    img = _frame(out, manifest["frames"][0])
    assert img.shape == (100, 160, 3)
    assert (img[:5] == LETTERBOX_FILL).all() and (img[95:] == LETTERBOX_FILL).all()
    # the picture itself is the whole source frame at 16:9, not squashed into 16:10
    expected = cv2.resize(_first_frame(WALKING), (160, 90), interpolation=cv2.INTER_AREA)
    assert np.array_equal(img[5:95], expected)


def test_crop_fills_the_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    out = tmp_path / "square"
    assert main(["prepare", "video", "--source", str(WALKING), "--out", str(out), "--size", "100x100", "--every", "10",
                 "--fit", "crop", "--no-progress"]) == 0
    assert "resize: 480x270 -> 100x100 crop (scaled to 178x100, 78 px of width cut, centred)" in capsys.readouterr().out
    img = _frame(out, json.loads((out / "manifest.json").read_text())["frames"][0])
    full = cv2.resize(_first_frame(WALKING), (178, 100), interpolation=cv2.INTER_AREA)
    assert np.array_equal(img, full[:, 39:139])


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
def test_pets_gt_boxes_move_with_the_pixels(fit: str, tmp_path: Path) -> None:
    """768x576 (4:3) into 160x100: every GT box lands where its person's pixels went, inside the picture."""
    from silhouette.data import prepare_dataset
    from silhouette.data.pets import parse_pets_xml

    out = prepare_dataset("pets2009", tmp_path / fit, size=(160, 100), every=80, fit=fit, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["created_with"]["fit"] == fit
    ann = parse_pets_xml(data_dir() / "pets2009" / "PETS2009-S2L1.xml")
    # letterbox: picture 133x100 from x = 13; crop: picture 160x120 from y = -10
    sx, sy, ox, oy, lo_x, hi_x, lo_y, hi_y = ((133 / 768, 100 / 576, 13, 0, 13, 146, 0, 100) if fit == "letterbox"
                                              else (160 / 768, 120 / 576, 0, -10, 0, 160, 0, 100))
    checked = 0
    for rec in manifest["frames"]:
        boxes, ids = ann.get(rec["frame_index"], ([], []))
        expected = {}
        for (x1, y1, x2, y2), pid in zip(boxes, ids):
            b = [min(max(x1 * sx + ox, lo_x), hi_x), min(max(y1 * sy + oy, lo_y), hi_y),
                 min(max(x2 * sx + ox, lo_x), hi_x), min(max(y2 * sy + oy, lo_y), hi_y)]
            if b[2] > b[0] and b[3] > b[1]:
                expected[pid] = b
        assert sorted(rec["gt_ids"]) == sorted(expected)
        for pid, box in zip(rec["gt_ids"], rec["gt_boxes"]):
            assert box == pytest.approx(expected[pid], abs=1e-3)
            assert lo_x <= box[0] < box[2] <= hi_x and lo_y <= box[1] < box[3] <= hi_y
            checked += 1
    assert checked > 20
    if fit == "letterbox":  # the bars are the neutral fill, never picture
        img = _frame(out, manifest["frames"][0])
        assert (img[:, :13] == LETTERBOX_FILL).all() and (img[:, 146:] == LETTERBOX_FILL).all()


def test_pets_keeps_its_registered_stretch_and_old_outputs_stay_valid(tmp_path: Path) -> None:
    """pets2009 stays the paper's squashed 320x200 recipe; a folder prepared before --fit existed is reused as is."""
    from silhouette.data import prepare_dataset
    from silhouette.data.pets import PETS_SIZE, parse_pets_xml, scale_boxes

    out = prepare_dataset("pets2009", tmp_path / "pets", size=(96, 60), every=100, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["created_with"]["fit"] == "stretch"
    assert manifest["fit"][0]["description"] == "768x576 -> 96x60 stretch (aspect ratio 1.33 -> 1.60, not kept)"
    ann = parse_pets_xml(data_dir() / "pets2009" / "PETS2009-S2L1.xml")
    for rec in manifest["frames"]:
        assert (rec["gt_boxes"], rec["gt_ids"]) == scale_boxes(*ann[rec["frame_index"]], PETS_SIZE, (96, 60))
    for name in ("manifest.json", ".prepare-options.json"):  # as written before this option existed
        data = json.loads((out / name).read_text())
        (data["created_with"] if name == "manifest.json" else data).pop("fit")
        (out / name).write_text(json.dumps(data))
    prepare_dataset("pets2009", out, size=(96, 60), every=100, progress=False)
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["written"] == 0 and stats["skipped"] == len(manifest["frames"])
    with pytest.raises(SilhouetteError, match="other options \\(fit\\)"):
        prepare_dataset("pets2009", out, size=(96, 60), every=100, fit="letterbox", progress=False)
    with pytest.raises(SilhouetteError, match="--fit 'squash': choose letterbox, stretch, crop"):
        prepare_dataset("pets2009", tmp_path / "x", size=(96, 60), every=100, fit="squash", progress=False)


def test_fit_plans_for_common_shapes() -> None:
    hd, portrait = plan_fit((1920, 1080), (320, 200)), plan_fit((1080, 1920), (320, 200))
    assert (hd.scaled, hd.offset) == ((320, 180), (0, 10)) and (portrait.scaled, portrait.offset) == ((112, 200), (104, 0))
    crop = plan_fit((1920, 1080), (320, 200), "crop")
    assert (crop.scaled, crop.offset) == ((356, 200), (-18, 0))
    # a box wholly in the cut-off margin disappears, one across the edge is clipped to it
    assert crop.boxes([[0, 0, 90, 100], [0, 0, 300, 540]], [1, 2]) == ([[0.0, 0.0, 37.625, 100.0]], [2])  # 300 * 356/1920 - 18
    same = plan_fit((640, 400), (320, 200))
    assert same.describe() == "640x400 -> 320x200 letterbox (same aspect ratio)" and same.offset == (0, 0)
