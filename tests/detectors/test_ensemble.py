"""Ensembles built from specs: weighted loss, first-member predictions, concatenated candidates."""

from __future__ import annotations

import pytest
import torch

from silhouette.detectors.ensemble import EnsembleDetector
from silhouette.detectors.registry import create_detector
from silhouette.errors import SilhouetteError
from silhouette.imaging import read_image
from silhouette.paths import weights_dir

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    """A real 320x200 PETS2009 frame."""
    return read_image(weights_dir() / "testdata" / "pets2009_s2l1_v1_f0400_320x200.png")[None]


def test_spec_gives_weighted_sum_of_member_losses(frame: torch.Tensor) -> None:
    ens = create_detector("fastestdet+yolo_fastest_xl*0.5")
    assert isinstance(ens, EnsembleDetector) and ens.name == "fastestdet+yolo_fastest_xl"
    assert ens.weights == [1.0, 0.5]
    first, second = create_detector("fastestdet"), create_detector("yolo_fastest_xl")
    targets = first.predict(frame)
    assert len(targets[0].persons()) > 0
    with torch.no_grad():
        got = ens.loss(frame, targets)
        a, b = first.loss(frame, targets), second.loss(frame, targets)
    assert torch.allclose(got["loss"], a["loss"] + 0.5 * b["loss"], rtol=1e-5)
    assert torch.allclose(got["fastestdet/loss_box"], a["loss_box"])
    assert torch.allclose(got["yolo_fastest_xl/loss_cls"], b["loss_cls"])
    assert not torch.allclose(a["loss"], b["loss"])  # the weighting is actually exercised
    # Predictions are the first member's; candidates are both members' stacked along N.
    (p,) = ens.predict(frame)
    assert torch.equal(p.boxes, targets[0].boxes) and torch.equal(p.scores, targets[0].scores)
    x = frame.clone().requires_grad_(True)
    cand = ens.candidates(x)
    assert cand.boxes.shape[1] == first.candidates(frame).boxes.shape[1] + second.candidates(frame).boxes.shape[1]
    cand.person_scores.sum().backward()
    assert x.grad.abs().sum().item() > 0


def test_repeated_member_and_bad_weights() -> None:
    ens = create_detector("fastestdet*2+fastestdet")
    assert ens.keys == ["fastestdet#0", "fastestdet#1"] and ens.weights == [2.0, 1.0]
    with pytest.raises(SilhouetteError, match="weight"):
        EnsembleDetector([create_detector("fastestdet")], [1.0, 2.0])
    with pytest.raises(SilhouetteError, match="not a number"):
        create_detector("fastestdet*abc+yolo_fastest_xl")
