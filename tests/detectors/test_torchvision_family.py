"""torchvision family: random-init models (no downloads) on a real PETS frame at small internal sizes."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn

from silhouette.detectors.base import Detections
from silhouette.detectors.torchvision_family import COCO91_TO_80, MODELS, TorchvisionDetector
from silhouette.errors import SilhouetteError
from silhouette.imaging import read_image
from silhouette.paths import weights_dir

torch.set_num_threads(2)

# Internal resize small enough for seconds on CPU; SSDlite's 320x320 input is fixed.
SMALL = {name: ({} if kind == "ssd" else {"min_size": 128, "max_size": 208}) for name, kind in MODELS.items()}


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    """A real 320x200 PETS2009 frame, [1, 3, 200, 320]."""
    return read_image(weights_dir() / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png")[None]


def _build(name: str, **kw: object) -> TorchvisionDetector:
    torch.manual_seed(0)
    return TorchvisionDetector(name, weights=None, **{**SMALL[name], **kw})


def test_coco91_to_80_mapping() -> None:
    assert int((COCO91_TO_80 >= 0).sum()) == 80
    assert COCO91_TO_80[1] == 0  # person
    assert COCO91_TO_80[3] == 2  # car
    assert COCO91_TO_80[12] == -1  # an "N/A" gap in COCO-91
    assert COCO91_TO_80[90] == 79  # toothbrush
    assert COCO91_TO_80[0] == -1  # background


@pytest.mark.parametrize("name", list(MODELS))
def test_builds_and_predicts(name: str, frame: torch.Tensor) -> None:
    det = _build(name, conf_threshold=0.2)
    (dets,) = det.predict(frame)
    assert dets.boxes.shape == (len(dets), 4) and dets.labels.dtype == torch.int64
    assert bool(((dets.labels >= 0) & (dets.labels < 80)).all())
    assert bool((dets.scores >= 0.2).all())
    assert bool((dets.boxes[:, 2:] <= torch.tensor([320.0, 200.0]) + 1e-3).all())
    info = det.info()
    assert info.name == name and info.family == "torchvision" and not info.weights_present


# One model per read-out path: R-CNN box head, RetinaNet (sigmoid), SSD (softmax).
@pytest.mark.parametrize(
    "name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]
)
def test_candidates_are_differentiable(name: str, frame: torch.Tensor) -> None:
    det = _build(name)
    x = frame.clone().requires_grad_(True)
    cand = det.candidates(x)
    assert cand.boxes.shape[:2] == cand.person_scores.shape and cand.boxes.shape[0] == 1
    assert cand.person_scores.shape[1] > 0 and bool(cand.extras["valid"].any())
    assert bool(((cand.person_scores >= 0) & (cand.person_scores <= 1)).all())
    assert bool((cand.boxes[..., 2:] <= torch.tensor([320.0, 200.0]) + 1e-3).all())
    (cand.person_scores.sum() + cand.boxes.sum()).backward()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn"])
def test_native_loss_is_frozen_and_reaches_the_image(name: str, frame: torch.Tensor) -> None:
    det = _build(name)
    assert any(type(m) is nn.BatchNorm2d for m in det.model.modules())  # random init uses live BatchNorm
    before = {k: v.clone() for k, v in det.model.state_dict().items()}
    targets = Detections(
        torch.tensor([[60.0, 40.0, 95.0, 150.0], [200.0, 60.0, 232.0, 140.0], [10.0, 10.0, 40.0, 30.0]]),
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([0, 0, 2]),  # the car box is not a person pseudo-label and must be ignored
    )
    for tgt in (targets, Detections.empty()):
        x = frame.clone().requires_grad_(True)
        losses = det.loss(x, [tgt])
        assert "loss" in losses and len(losses) > 1
        assert all(torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()
        assert float(x.grad.abs().sum()) > 0
    after = det.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats untouched
    assert not det.model.training
    assert all(p.grad is None for p in det.model.parameters())


def test_default_weights_without_network_names_the_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("network disabled for this test")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # empty cache, so a download would be needed
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(SilhouetteError, match=f"place the file at {tmp_path}/checkpoints/ssdlite320") as exc:
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights="DEFAULT")
    assert "--weights" not in str(exc.value)  # no command has such an option
    with pytest.raises(SilhouetteError, match="COCO_V1"):
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights="NOT_A_WEIGHTS_NAME")


def test_local_weights_roundtrip(tmp_path: Path, frame: torch.Tensor) -> None:
    ref = _build("ssdlite320_mobilenet_v3_large", conf_threshold=0.01)
    path = tmp_path / "ssd.pth"
    torch.save(ref.model.state_dict(), path)
    torch.manual_seed(123)  # a different random init that the file must overwrite
    loaded = TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights=path, conf_threshold=0.01)
    (a,), (b,) = ref.predict(frame), loaded.predict(frame)
    assert len(a) > 0
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
    info = loaded.info()
    assert info.weights_present and info.weights == str(path)


def test_bad_weight_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(SilhouetteError, match="nope.pth.*not found"):
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights=missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SilhouetteError, match="corrupt.pth.*not a readable"):
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights=corrupt)
    other = tmp_path / "ssd.pth"
    torch.save(_build("ssdlite320_mobilenet_v3_large").model.state_dict(), other)
    with pytest.raises(SilhouetteError, match="ssd.pth.*does not fit"):
        TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=other)
