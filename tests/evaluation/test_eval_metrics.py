"""Person AP, count error and similarity metrics on hand-built cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from silhouette.detectors.base import Detections
from silhouette.evaluation.metrics import boxes_found, count_error, mean_similarity, person_ap, similarity


def dets(boxes: list[list[float]], scores: list[float] | None = None, labels: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      torch.tensor(scores if scores is not None else [0.9] * n, dtype=torch.float32),
                      torch.tensor(labels if labels is not None else [0] * n, dtype=torch.int64))


GT = [dets([[10, 20, 40, 100], [100, 30, 130, 110]]), dets([[50, 50, 80, 140]])]


def test_perfect_predictions_score_one() -> None:
    r = person_ap(GT, GT)
    assert r["ap50"] == pytest.approx(1.0)
    assert r["ap"] == pytest.approx(1.0)


def test_shifted_boxes_lower_ap_and_ap50_beats_strict_ap() -> None:
    # shifted by 6 px horizontally: IoU ~0.6 for 30-px-wide boxes, so AP50 holds but AP50:95 drops
    shifted = [dets((d.boxes + torch.tensor([6.0, 0.0, 6.0, 0.0])).tolist()) for d in GT]
    r = person_ap(shifted, GT)
    assert r["ap50"] == pytest.approx(1.0)
    assert r["ap"] < 0.5
    far = [dets((d.boxes + torch.tensor([25.0, 0.0, 25.0, 0.0])).tolist()) for d in GT]
    assert person_ap(far, GT)["ap50"] == pytest.approx(0.0)


def test_missing_one_person_and_false_positives() -> None:
    partial = [dets([[10, 20, 40, 100]]), GT[1]]  # 2 of 3 found, no false positive
    assert person_ap(partial, GT)["ap50"] == pytest.approx(2 / 3, abs=0.02)
    # a false positive with a higher score than every true positive lowers AP
    fp_first = [dets([[200, 0, 230, 80]] + GT[0].boxes.tolist(), [0.99, 0.9, 0.9]), GT[1]]
    assert person_ap(fp_first, GT)["ap50"] < 1.0


def test_empty_predictions_give_zero_and_non_persons_are_ignored() -> None:
    empty = [Detections.empty(), Detections.empty()]
    assert person_ap(empty, GT)["ap50"] == 0.0
    cars = [dets(d.boxes.tolist(), labels=[2] * len(d)) for d in GT]
    assert person_ap(cars, GT)["ap50"] == 0.0


def test_no_ground_truth_is_undefined_not_zero() -> None:
    r = person_ap([dets([[0, 0, 10, 10]])], [Detections.empty()])
    assert math.isnan(r["ap50"]) and math.isnan(r["ap"])
    with pytest.raises(ValueError):
        person_ap(GT, GT[:1])


def test_count_error() -> None:
    preds = [dets([[0, 0, 1, 1]] * 3, [0.9, 0.9, 0.1]), Detections.empty()]
    targets = [dets([[0, 0, 1, 1]] * 2), dets([[0, 0, 1, 1]])]
    assert count_error(preds, targets) == {"mae": 1.0, "bias": 0.0}  # +1 and -1
    assert count_error(preds, targets, min_score=0.5) == {"mae": 0.5, "bias": -0.5}


def test_boxes_found_matches_one_to_one_above_threshold() -> None:
    targets = [dets([[0, 0, 10, 10], [20, 20, 30, 30]]), dets([[0, 0, 10, 10]])]
    preds = [
        # two predictions on the first person (only one may count), none on the second
        dets([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.9]),
        dets([[0, 0, 10, 10]], [0.2]),  # right place, below the threshold below
    ]
    assert boxes_found(preds, targets) == 2
    assert boxes_found(preds, targets, min_score=0.5) == 1
    shifted = [dets([[6, 6, 16, 16]], [0.9]), Detections.empty()]  # IoU 16/184 with the first box
    assert boxes_found(shifted, targets) == 0


def test_similarity_of_identical_images() -> None:
    img = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    s = similarity(img, img)
    assert s["ssim"] == pytest.approx(1.0)
    assert s["mse"] == 0.0
    assert s["psnr"] == math.inf
    assert s["nmi"] == pytest.approx(2.0)  # Studholme NMI of an image with itself


def test_similarity_of_known_offset_and_noise() -> None:
    # a textured image in [0.2, 0.8], so neither an offset of 0.1 nor mild noise clips
    grey = 0.2 + 0.6 * torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(2))
    s = similarity(grey, grey + 0.1)  # every pixel off by exactly 0.1
    assert s["mse"] == pytest.approx(0.01, rel=1e-6)
    assert s["psnr"] == pytest.approx(20.0, abs=1e-4)
    noisy = grey + 0.05 * torch.randn(grey.shape, generator=torch.Generator().manual_seed(1))
    s = similarity(grey, noisy)
    assert s["mse"] == pytest.approx(0.0025, rel=0.05)
    assert s["psnr"] == pytest.approx(10 * math.log10(1 / s["mse"]), abs=1e-6)
    assert s["ssim"] < 1.0
    m = mean_similarity([grey, grey], [grey + 0.1, grey + 0.2])
    assert m["mse"] == pytest.approx((0.01 + 0.04) / 2, rel=1e-5)
