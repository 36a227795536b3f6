"""The ONNX zoo on the real shared files: golden detections, onnx2torch vs onnxruntime, gradients, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, nms

from silhouette.detectors.base import PERSON, Detector
from silhouette.detectors.onnx_zoo import OnnxZooDetector, zoo_names
from silhouette.detectors.registry import DETECTORS
from silhouette.errors import SilhouetteError

NAMES = zoo_names()
BOX_TOL = 0.05  # README §6.3, same preprocessing path (golden boxes are rounded to 0.01 px)
SCORE_TOL = 1e-3
BORDERLINE = 0.01  # a recall-table score this close to 0.30 may flip the detection count by one


@pytest.fixture(scope="module")
def golden(shared: Path) -> dict:
    return json.loads((shared / "weights" / "golden.json").read_text())


@pytest.fixture(scope="module")
def images(pets_frames: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Astronaut plus the PETS frames, float RGB [3, H, W], keyed as in golden.json."""
    import skimage.data

    astro = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255.0
    return {"astronaut": astro, **pets_frames}


@pytest.fixture(scope="module")
def zoo(shared: Path) -> dict[str, OnnxZooDetector]:
    """One detector per zoo model; sessions and onnx2torch conversions are cached once per process."""
    dets = {name: DETECTORS.create(name) for name in NAMES}
    assert all(isinstance(d, OnnxZooDetector) for d in dets.values())
    return dets


def test_zoo_names_registered(zoo: dict[str, OnnxZooDetector]) -> None:
    assert NAMES == ["yolox_nano", "nanodet_m", "yolov5n", "yolo_fastest_xl", "fastestdet", "yolo_fastest_body"]
    assert set(NAMES) <= set(DETECTORS.names())
    for name, det in zoo.items():
        info = det.info()
        assert info.name == name and info.family == "onnx_zoo" and info.weights_present
        assert Path(info.weights).name == f"{name}.onnx" and info.license and info.source


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_golden_thresholds(name: str, zoo: dict[str, OnnxZooDetector], golden: dict) -> None:
    m = golden["models"][name]
    assert zoo[name].conf_threshold == m["golden_conf"] and zoo[name].nms_iou == m["nms_iou"]
    assert zoo[name].info().input_size == f"{m['input_size']}x{m['input_size']}"


@pytest.mark.parametrize("name", NAMES)
def test_input_tensor_checksums(name: str, zoo: dict[str, OnnxZooDetector], images: dict, golden: dict) -> None:
    for key, img in images.items():
        ref = golden["models"][name]["per_image"][key]["input_tensor"]
        batch, _ = zoo[name].preprocess_exact(img[None])
        assert list(batch.shape) == ref["shape"], key
        assert batch.sum(dtype=np.float64) == pytest.approx(ref["sum"], rel=1e-7, abs=5e-3), key
        assert batch.mean(dtype=np.float64) == pytest.approx(ref["mean"], rel=1e-6, abs=1e-6), key


def _assert_dets(dets, boxes: list, scores: list, what: str) -> None:
    assert len(dets) == len(scores), f"{what}: {len(dets)} detections, golden has {len(scores)}"
    assert (dets.labels == PERSON).all()
    np.testing.assert_allclose(dets.scores.numpy(), scores, atol=SCORE_TOL, err_msg=what)
    np.testing.assert_allclose(dets.boxes.numpy(), np.asarray(boxes).reshape(-1, 4), atol=BOX_TOL, err_msg=what)


@pytest.mark.parametrize("name", NAMES)
def test_predict_reproduces_golden(name: str, zoo: dict[str, OnnxZooDetector], images: dict, golden: dict) -> None:
    per_image = golden["models"][name]["per_image"]
    pets = [k for k in images if k.startswith("pets_")]
    # The PETS frames go through as one batch; golden values were computed one frame at a time.
    preds = dict(zip(pets, zoo[name].predict(torch.stack([images[k] for k in pets]))))
    preds["astronaut"] = zoo[name].predict(images["astronaut"][None])[0]
    for key, dets in preds.items():
        ref = per_image[key]["golden"]
        _assert_dets(dets, ref["boxes_xyxy"], ref["scores"], f"{name} {key}")


def _gt_matched(boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor, iou: float = 0.5) -> int:
    """GT boxes matched one-to-one, detections taken greedily by score, each to its best free GT at IoU >= iou."""
    ious = box_iou(boxes[scores.argsort(descending=True)], gt)
    free = torch.ones(len(gt), dtype=torch.bool)
    for row in ious:
        row = torch.where(free, row, torch.full_like(row, -1.0))
        j = int(row.argmax()) if len(row) else -1
        if j >= 0 and row[j] >= iou:
            free[j] = False
    return int((~free).sum())


@pytest.mark.parametrize("name", NAMES)
def test_recall_table(name: str, images: dict, golden: dict) -> None:
    det = DETECTORS.create(name, conf_threshold=0.30)
    pets = [k for k in images if k.startswith("pets_")]
    for key, dets in zip(pets, det.predict(torch.stack([images[k] for k in pets]))):
        ref = golden["models"][name]["per_image"][key]["recall_at_0.30"]
        gt = torch.tensor(golden["images"][key]["gt_person_boxes_xyxy"])
        margin = ref["threshold_margin"]
        borderline = margin["lowest_kept_score"] - 0.30 < BORDERLINE or (
            margin["highest_score_below_0.30"] is not None and 0.30 - margin["highest_score_below_0.30"] < BORDERLINE
        )
        assert abs(len(dets) - ref["n_det"]) <= (1 if borderline else 0), f"{name} {key}: {len(dets)} vs {ref['n_det']}"
        assert _gt_matched(dets.boxes, dets.scores, gt) == ref["gt_matched_iou0.5"], f"{name} {key}"
        if len(dets) == ref["n_det"]:
            _assert_dets(dets, ref["boxes_xyxy"], ref["scores"], f"{name} {key} @0.30")


# Person-score channels must agree to 1e-3; box channels too, except yolov5n whose in-graph decode gives
# pixels up to 640 (README §5: float32 noise up to 1.85e-3 px).
def _raw_channels(name: str, outs: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, float]]:
    if name == "yolov5n":
        return {"xywh_px": (outs[0][..., :4], 1e-2), "obj_person": (outs[0][..., 4:6], 1e-3)}
    if name == "yolox_nano":
        return {"box_raw": (outs[0][..., :4], 1e-3), "obj_person": (outs[0][..., 4:6], 1e-3)}
    if name == "nanodet_m":
        return {**{f"cls{i}": (o[..., 0], 1e-3) for i, o in enumerate(outs[:3])},
                **{f"dfl{i}": (o, 1e-3) for i, o in enumerate(outs[3:])}}
    return {f"out{i}": (o, 1e-3) for i, o in enumerate(outs)}  # darknet logits, FastestDet maps


@pytest.mark.parametrize("name", NAMES)
def test_onnx2torch_matches_onnxruntime(name: str, zoo: dict[str, OnnxZooDetector], images: dict) -> None:
    det = zoo[name]
    batch, _ = det.preprocess_exact(torch.stack([images["pets_f0000"], images["pets_f0794"]]))
    ort = [torch.from_numpy(o) for o in det.forward_ort(batch)]
    with torch.no_grad():
        pt = det.forward_torch(torch.from_numpy(batch))
    assert [tuple(o.shape) for o in ort] == [tuple(o.shape) for o in pt]
    ref, got = _raw_channels(name, ort), _raw_channels(name, pt)
    for ch, (a, tol) in ref.items():
        err = (a - got[ch][0]).abs().max().item()
        assert err <= tol, f"{name} {ch}: onnx2torch differs from onnxruntime by {err:.3g} > {tol}"


def _params(det: OnnxZooDetector) -> list[torch.Tensor]:
    return [p.detach().clone() for p in det.torch_model().state_dict().values()]


@pytest.mark.parametrize("name", NAMES)
def test_candidates_gradient_reaches_input_and_weights_stay_frozen(
    name: str, zoo: dict[str, OnnxZooDetector], images: dict
) -> None:
    det = zoo[name]
    before = _params(det)
    x = images["pets_f0400"][None].clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.1)
    cand = det.candidates(x)
    n = cand.person_scores.shape[1]
    assert cand.boxes.shape == (1, n, 4) and n > 100
    assert ((cand.person_scores >= 0) & (cand.person_scores <= 1)).all()
    loss = cand.person_scores.topk(10, dim=1).values.sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in det.torch_model().parameters())
    after = _params(det)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    # Under no_grad the caller gets plain tensors; the weights are the same either way.
    with torch.no_grad():
        cand2 = det.candidates(x)
    assert not cand2.person_scores.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, _params(det)))


@pytest.mark.parametrize("name", NAMES)
def test_candidates_agree_with_predict(name: str, zoo: dict[str, OnnxZooDetector], images: dict) -> None:
    det = zoo[name]
    batch = images["pets_f0794"][None]
    with torch.no_grad():
        cand = det.candidates(batch)
    for i, (dets, dets_t) in enumerate(zip(det.predict(batch), det.predict_torch(batch))):
        keep = nms(cand.boxes[i], cand.person_scores[i], det.nms_iou)
        top_box, top_score = cand.boxes[i, keep[0]], cand.person_scores[i, keep[0]]
        assert len(dets) > 0 and len(dets_t) > 0
        # torch bilinear on floats vs cv2 on uint8: README's "another resize" tolerance.
        assert abs(top_score.item() - dets.scores[0].item()) < 0.02, f"{name} frame {i}"
        assert box_iou(top_box[None], dets.boxes[:1]).item() > 0.9, f"{name} frame {i}"
        assert abs(dets_t.scores[0].item() - dets.scores[0].item()) < 0.02, f"{name} frame {i}"
        assert box_iou(dets_t.boxes[:1], dets.boxes[:1]).item() > 0.9, f"{name} frame {i}"
        assert (cand.boxes[i, :, 0::2] <= 320).all() and (cand.boxes[i, :, 1::2] <= 200).all()


def test_missing_weights_names_path_and_shared_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "yolox_nano.onnx"
    det = DETECTORS.create("yolox_nano", weights=missing)
    assert det.info().weights_present is False
    for call in (det.predict, det.candidates):
        with pytest.raises(SilhouetteError, match="set SILHOUETTE_SHARED to the folder whose weights/ holds") as exc:
            call(torch.rand(1, 3, 64, 64))
        assert str(missing) in str(exc.value)


def test_corrupt_onnx_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "fastestdet.onnx"
    bad.write_text("this is not an onnx model\n")
    det = DETECTORS.create("fastestdet", weights=bad)
    for call in (det.predict, det.candidates):
        with pytest.raises(SilhouetteError, match="not a loadable ONNX model") as exc:
            call(torch.rand(1, 3, 64, 64))
        assert str(bad) in str(exc.value)


@pytest.mark.parametrize(
    "name,file", [("nanodet_m", "yolox_nano"), ("yolov5n", "yolox_nano"), ("yolo_fastest_body", "yolo_fastest_xl")]
)
def test_weights_of_another_detector_are_refused(name: str, file: str, shared: Path) -> None:
    det = DETECTORS.create(name, weights=shared / "weights" / f"{file}.onnx")
    for call in (det.predict, det.candidates):
        with pytest.raises(SilhouetteError, match="another detector"):
            call(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
        torch.rand(3, 32, 32),
        torch.rand(1, 1, 32, 32),
        np.zeros((1, 3, 8, 8)),
    ],
    ids=["uint8", "no-batch", "gray", "numpy"],
)
def test_bad_images_rejected(bad: object, zoo: dict[str, OnnxZooDetector]) -> None:
    det: Detector = zoo["yolo_fastest_body"]
    for call in (det.predict, det.candidates):
        with pytest.raises(SilhouetteError, match="expected"):
            call(bad)  # type: ignore[arg-type]


def test_bad_thresholds_rejected() -> None:
    with pytest.raises(SilhouetteError, match="conf_threshold"):
        DETECTORS.create("yolov5n", conf_threshold=1.5)


def test_predict_any_size_and_empty_batch(zoo: dict[str, OnnxZooDetector], images: dict) -> None:
    det = zoo["yolo_fastest_xl"]
    assert det.predict(torch.zeros(0, 3, 100, 100)) == []
    # A crop of frame 0 at a non-model size still finds the three walkers, in the crop's pixels.
    full = det.predict(images["pets_f0000"][None])[0].persons(0.8)
    (crop,) = det.predict(images["pets_f0000"][None, :, 40:180, 90:300])
    crop = crop.persons(0.5)
    assert len(full) == 3 and len(crop) >= 3
    shifted = full.boxes - torch.tensor([90.0, 40.0, 90.0, 40.0])
    assert (box_iou(shifted, crop.boxes).max(dim=1).values > 0.7).all()
