"""The detector-agnostic pseudo-label loss: assignment rule, ordering, empty frames, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from silhouette.detectors.base import Candidates, Detections
from silhouette.detectors.loss import IGNORE, NEGATIVE, assign, pseudo_label_loss
from silhouette.imaging import read_image
from silhouette.paths import weights_dir

torch.set_num_threads(2)

TARGETS = torch.tensor([[40.0, 30.0, 80.0, 130.0], [200.0, 50.0, 240.0, 150.0]])
BACKGROUND = torch.tensor([[250.0, 160.0, 300.0, 195.0], [0.0, 0.0, 30.0, 20.0], [120.0, 100.0, 160.0, 140.0]])


def _persons(boxes: torch.Tensor) -> Detections:
    return Detections(boxes, torch.ones(len(boxes)), torch.zeros(len(boxes), dtype=torch.int64))


def _cands(boxes: torch.Tensor, scores: torch.Tensor) -> Candidates:
    return Candidates(boxes[None].clone().requires_grad_(True), scores[None].clone().requires_grad_(True))


def test_assignment_rule() -> None:
    target = torch.tensor([[100.0, 100.0, 200.0, 200.0]])
    boxes = torch.tensor(
        [
            [100.0, 100.0, 200.0, 200.0],  # IoU 1 -> positive
            [100.0, 100.0, 200.0, 145.0],  # IoU 0.45 -> ignored (centre inside, but outranked in top-1)
            [400.0, 400.0, 450.0, 450.0],  # no overlap -> negative
            [100.0, 100.0, 200.0, 200.0],  # padding -> ignored whatever it overlaps
        ]
    )
    valid = torch.tensor([True, True, True, False])
    got = assign(boxes, target, valid, topk=1)
    assert got.tolist() == [0, IGNORE, NEGATIVE, IGNORE]
    # A poor candidate centred in the target becomes positive through the top-k clause alone.
    poor = torch.tensor([[140.0, 140.0, 165.0, 165.0], [60.0, 60.0, 110.0, 110.0]])
    assert assign(poor, target, topk=1).tolist() == [0, NEGATIVE]
    # No targets: everything valid is negative.
    assert assign(boxes, torch.zeros((0, 4)), valid).tolist() == [NEGATIVE, NEGATIVE, NEGATIVE, IGNORE]


# Probes of the thresholds: candidate [0, 0, 100, h] against the target [0, 0, 100, 100] has IoU h/100 exactly and
# its centre inside the target. FILLERS (IoU 0.96-1.0) take the target's top-5 claims, so a probe's fate below is
# decided by the IoU thresholds alone.
UNIT = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
FILLERS = torch.tensor([[0.0, 0.0, 100.0, h] for h in (100.0, 99.0, 98.0, 97.0, 96.0)])


def _strip(h: float) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, 100.0, h]])


@pytest.mark.parametrize(
    "iou, expected",
    [(0.51, 0), (0.50, 0), (0.49, IGNORE), (0.41, IGNORE), (0.40, IGNORE), (0.39, NEGATIVE), (0.05, NEGATIVE)],
)
def test_default_iou_thresholds(iou: float, expected: int) -> None:
    """Default rule: positive at IoU >= 0.5, ignored in [0.4, 0.5), negative below 0.4 (once top-5 is taken)."""
    boxes = torch.cat([FILLERS, _strip(iou * 100)])
    got = assign(boxes, UNIT)
    assert got[:5].tolist() == [0] * 5
    assert got[5].item() == expected


@pytest.mark.parametrize("iou, positive", [(0.51, True), (0.49, False)])
def test_pseudo_label_loss_uses_the_half_iou_threshold(iou: float, positive: bool) -> None:
    """Through the loss the detectors call: a probe just above 0.5 IoU gets a box loss, one just below none."""
    boxes = torch.cat([FILLERS, _strip(iou * 100)])
    loss = pseudo_label_loss(_cands(boxes, torch.full((6,), 0.5)), [_persons(UNIT)])
    # the five fillers reach GIoU 0.96-1.0; the probe at ~0.5 alone would add ~0.5 / 6
    fillers_only = sum(1 - h / 100 for h in (100.0, 99.0, 98.0, 97.0, 96.0))
    if positive:
        assert loss["loss_box"].item() == pytest.approx((fillers_only + 1 - iou) / 6, abs=1e-4)
    else:
        assert loss["loss_box"].item() == pytest.approx(fillers_only / 5, abs=1e-4)


@pytest.mark.parametrize("iou, counted", [(0.39, True), (0.41, False)])
def test_pseudo_label_loss_pushes_down_only_clear_negatives(iou: float, counted: bool) -> None:
    """A confident probe below 0.4 IoU raises the classification loss; one in the ignored band leaves it unchanged."""
    scores = torch.tensor([0.9] * 5 + [0.9])
    with_probe = pseudo_label_loss(_cands(torch.cat([FILLERS, _strip(iou * 100)]), scores), [_persons(UNIT)])
    without = pseudo_label_loss(_cands(FILLERS, scores[:5]), [_persons(UNIT)])
    # focal BCE of a negative at p=0.9: 0.75 * 0.9^2 * -log(0.1) = 1.40, over 5 positives
    extra = with_probe["loss_cls"].item() - without["loss_cls"].item()
    assert extra == pytest.approx(0.75 * 0.81 * -math.log(0.1) / 5 if counted else 0.0, abs=1e-4)


def test_each_target_claims_its_five_best_centred_candidates() -> None:
    """Six poor candidates centred in the target (IoU 0.30 ... 0.05 < 0.4): the best five are positive, not the sixth."""
    poor = torch.cat([_strip(h) for h in (30.0, 25.0, 20.0, 15.0, 10.0, 5.0)])
    assert assign(poor, UNIT).tolist() == [0, 0, 0, 0, 0, NEGATIVE]
    # the claim is a rank, not a threshold: with fewer candidates the weakest one is claimed too
    assert assign(poor[3:], UNIT).tolist() == [0, 0, 0]
    # candidates already positive by IoU fill the top five, so the poor ones are left to the IoU rule
    assert assign(torch.cat([FILLERS, poor[:1]]), UNIT).tolist() == [0] * 5 + [NEGATIVE]


def test_only_candidates_centred_inside_are_claimed() -> None:
    """Overlap alone is not a claim: a candidate whose centre lies outside the target stays negative."""
    outside = torch.tensor([[0.0, 80.0, 100.0, 200.0]])  # IoU 0.1, centre (50, 140) below the target
    inside = torch.tensor([[0.0, 0.0, 100.0, 10.0]])  # IoU 0.1, centre (50, 5) inside it
    assert assign(outside, UNIT).tolist() == [NEGATIVE]
    assert assign(inside, UNIT).tolist() == [0]
    assert assign(torch.tensor([[200.0, 200.0, 300.0, 300.0]]), UNIT).tolist() == [NEGATIVE]  # no overlap at all


def test_a_candidate_claimed_by_two_targets_goes_to_the_higher_iou() -> None:
    targets = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 20.0, 100.0, 220.0]])
    # centre (50, 35) lies in both; IoU 0.3 with the first, 30/200 = 0.15 with the second
    cand = torch.tensor([[0.0, 20.0, 100.0, 50.0]])
    assert assign(cand, targets).tolist() == [0]
    assert assign(cand, targets.flip(0)).tolist() == [1]


def test_exact_candidates_beat_shifted_ones() -> None:
    scores = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.1])
    exact = pseudo_label_loss(_cands(torch.cat([TARGETS, BACKGROUND]), scores), [_persons(TARGETS)])
    shifted_boxes = torch.cat([TARGETS + torch.tensor([12.0, 15.0, 12.0, 15.0]), BACKGROUND])
    shifted = pseudo_label_loss(_cands(shifted_boxes, scores), [_persons(TARGETS)])
    assert exact["loss_box"].item() == pytest.approx(0.0, abs=1e-6)
    assert exact["loss"].item() < shifted["loss"].item()
    assert exact["loss_box"].item() < shifted["loss_box"].item()
    # Confident persons on the targets and quiet background beat the reverse.
    flipped = pseudo_label_loss(_cands(torch.cat([TARGETS, BACKGROUND]), 1 - scores), [_persons(TARGETS)])
    assert exact["loss_cls"].item() < flipped["loss_cls"].item()


def test_gradients_reach_boxes_and_scores() -> None:
    cand = _cands(torch.cat([TARGETS + 5.0, BACKGROUND]), torch.tensor([0.6, 0.7, 0.2, 0.3, 0.4]))
    pseudo_label_loss(cand, [_persons(TARGETS)])["loss"].backward()
    assert cand.boxes.grad[0, :2].abs().sum().item() > 0  # matched boxes are pulled onto their targets
    assert cand.boxes.grad[0, 2:].abs().sum().item() == 0  # unmatched boxes get no box loss
    assert bool((cand.person_scores.grad[0, :2] < 0).all())  # raise person scores on positives
    assert bool((cand.person_scores.grad[0, 2:] > 0).all())  # lower them on negatives


def test_zero_targets_make_every_candidate_negative() -> None:
    high = pseudo_label_loss(_cands(TARGETS, torch.tensor([0.8, 0.9])), [Detections.empty()])
    low = pseudo_label_loss(_cands(TARGETS, torch.tensor([0.1, 0.2])), [Detections.empty()])
    assert high["loss_box"].item() == 0.0 and low["loss"].item() < high["loss"].item()
    cand = _cands(TARGETS, torch.tensor([0.8, 0.9]))
    pseudo_label_loss(cand, [Detections.empty()])["loss"].backward()
    assert bool((cand.person_scores.grad > 0).all())
    # Non-person pseudo-labels are not targets either.
    car = Detections(TARGETS.clone(), torch.ones(2), torch.full((2,), 2, dtype=torch.int64))
    as_car = pseudo_label_loss(_cands(TARGETS, torch.tensor([0.8, 0.9])), [car])
    assert as_car["loss"].item() == pytest.approx(high["loss"].item())


@pytest.fixture(scope="module")
def fastestdet():  # noqa: ANN201
    from silhouette.detectors.registry import create_detector

    return create_detector("fastestdet")


def test_real_fastestdet_candidates_on_a_pets_frame(fastestdet) -> None:  # noqa: ANN001
    frame = read_image(weights_dir() / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png")[None]
    (own,) = fastestdet.predict(frame)
    assert len(own.persons()) > 0
    x = frame.clone().requires_grad_(True)
    cand = fastestdet.candidates(x)
    cand.boxes.retain_grad()
    cand.person_scores.retain_grad()
    matched = pseudo_label_loss(cand, [own])
    moved = Detections(own.boxes + torch.tensor([30.0, 20.0, 30.0, 20.0]), own.scores, own.labels)
    off = pseudo_label_loss(cand, [moved])
    empty = pseudo_label_loss(cand, [Detections.empty()])
    assert all(torch.isfinite(v) for d in (matched, off, empty) for v in d.values())
    assert matched["loss"].item() < off["loss"].item()
    assert empty["loss_box"].item() == 0.0
    matched["loss"].backward()
    assert cand.boxes.grad.abs().sum().item() > 0 and cand.person_scores.grad.abs().sum().item() > 0
    assert x.grad.abs().sum().item() > 0
