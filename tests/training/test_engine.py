"""One real optimisation step on real PETS frames: what changes, what must not, and divergence handling."""

from __future__ import annotations

import pytest
import torch

from silhouette.detectors.base import Detections
from silhouette.errors import SilhouetteError
from silhouette.training.engine import AdversarialEngine, TrainingDiverged, warmup_target

from .conftest import TEST_DETECTOR


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters only: BatchNorm running statistics change on any train-mode forward, a step or not."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def setup(pets_frames: dict[str, torch.Tensor]):  # noqa: ANN201
    """Two real 320x200 frames, their detector pseudo-labels, and a fresh small obfuscator/deobfuscator pair."""
    from silhouette.detectors import create_detector
    from silhouette.models import build_deobfuscator, build_obfuscator

    torch.manual_seed(0)
    det = create_detector(TEST_DETECTOR)
    x = torch.stack([pets_frames["pets_f0000"], pets_frames["pets_f0794"]])[..., :96, :160].contiguous()
    targets = [d.persons(0.3) for d in det.predict(x)]
    assert sum(len(t) for t in targets) > 0, "the frames should hold detectable persons"
    obf, deobf = build_obfuscator("obf_w025"), build_deobfuscator("deobf_small", width=0.25)
    return det, x, targets, obf, deobf


def _engine(det, obf, deobf, **kw) -> AdversarialEngine:  # noqa: ANN001
    return AdversarialEngine(
        obf, deobf, det, torch.optim.AdamW(obf.parameters(), lr=1e-2), torch.optim.AdamW(deobf.parameters(), lr=1e-2), **kw
    )


def test_deobfuscator_step_lowers_its_loss_and_touches_only_it(setup) -> None:  # noqa: ANN001
    det, x, _, obf, deobf = setup
    engine = _engine(det, obf, deobf)
    obf_before, deobf_weights = _snapshot(obf), _weights(deobf)
    with torch.no_grad():
        o = obf.eval()(x)
    deobf.eval()
    before = float(torch.mean((deobf(o).detach() - x) ** 2))
    for _ in range(3):
        engine.deobfuscator_step(x, o)
    deobf.eval()
    after = float(torch.mean((deobf(o).detach() - x) ** 2))
    assert after < before
    assert _same(obf_before, _snapshot(obf))
    assert not _same(deobf_weights, _weights(deobf))


def test_obfuscator_step_touches_only_the_obfuscator_and_detector_stays_frozen(setup) -> None:  # noqa: ANN001
    det, x, targets, obf, deobf = setup
    engine = _engine(det, obf, deobf)
    net = det.torch_model()
    det_before, deobf_before, obf_weights = _snapshot(net), _snapshot(deobf), _weights(obf)
    for p in deobf.parameters():
        p.grad = None
    stats, out = engine.obfuscator_step(x, targets, lam=1.0)
    assert stats.loss_obf == pytest.approx(stats.loss_det - stats.mse_obf, rel=1e-5)
    assert out.shape == x.shape and not out.requires_grad
    assert not _same(obf_weights, _weights(obf))
    # deobfuscator weights AND its BN running statistics are untouched by the obfuscator's step
    assert _same(deobf_before, _snapshot(deobf))
    assert all(p.grad is None for p in deobf.parameters())
    assert _same(det_before, _snapshot(net))
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_detection_loss_drops_when_the_obfuscator_trains_on_it(setup) -> None:  # noqa: ANN001
    det, x, targets, _, deobf = setup
    from silhouette.models import build_obfuscator

    torch.manual_seed(1)
    obf = build_obfuscator("obf_w025")
    engine = _engine(det, obf, deobf)
    first = engine.obfuscator_step(x, targets, lam=0.0)[0].loss_det
    for _ in range(4):
        last = engine.obfuscator_step(x, targets, lam=0.0)[0].loss_det
    assert last < first


def test_blank_weight_pulls_the_output_towards_flat_grey(setup) -> None:  # noqa: ANN001
    """The silhouette prior alone (no detector, no adversary term) makes the frame flatter: mean |obf - 0.5| drops."""
    det, x, targets, _, deobf = setup
    from silhouette.models import build_obfuscator

    torch.manual_seed(2)
    obf = build_obfuscator("obf_w025")
    engine = _engine(det, obf, deobf, det_weight=0.0, blank_weight=1.0)
    obf.eval()
    with torch.no_grad():
        before = float((obf(x) - 0.5).abs().mean())
    for _ in range(5):
        stats, _ = engine.obfuscator_step(x, targets, lam=0.0)
    obf.eval()
    with torch.no_grad():
        after = float((obf(x) - 0.5).abs().mean())
    assert after < 0.8 * before
    assert stats.loss_obf > 0  # the prior is part of the logged obfuscator loss


def test_train_batch_runs_both_updates(setup) -> None:  # noqa: ANN001
    det, x, targets, obf, deobf = setup
    engine = _engine(det, obf, deobf)
    before = _weights(obf), _weights(deobf)
    stats = engine.train_batch(x, targets, lam=1.0, deobf_steps=2)
    assert all(v == v for v in (stats.loss_obf, stats.loss_det, stats.mse_obf, stats.loss_deobf))  # no NaN
    assert not _same(before[0], _weights(obf)) and not _same(before[1], _weights(deobf))
    only_deobf = _snapshot(obf)
    engine.train_batch(x, targets, lam=1.0, update_obf=False)
    assert _same(only_deobf, _snapshot(obf))


def test_nan_and_exploding_losses_stop_with_a_clear_message(setup) -> None:  # noqa: ANN001
    det, x, targets, _, deobf = setup
    from silhouette.models import build_obfuscator

    obf = build_obfuscator("obf_w025")
    engine = _engine(det, obf, deobf, max_loss=1e-9)
    before = _weights(obf)
    with pytest.raises(TrainingDiverged, match="exploded past train.max_loss"):
        engine.obfuscator_step(x, targets, lam=1.0)
    assert _same(before, _weights(obf)), "a diverged step must not update weights"
    with torch.no_grad():
        next(obf.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="became nan"):
        _engine(det, obf, deobf).obfuscator_step(x, targets, lam=1.0)


def test_warmup_targets() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert torch.equal(warmup_target(x, "identity"), x)
    assert torch.equal(warmup_target(x, "fold")[0, 0, 0], torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0]))
    # the form the shipped checkpoints were warm-started on, to the bit (1 - |2x - 1| differs below 0.25)
    r = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(warmup_target(r, "fold"), 2.0 * torch.minimum(r, 1.0 - r))
    with pytest.raises(SilhouetteError, match="choose identity or fold"):
        warmup_target(x, "solarize")


def test_empty_targets_still_train(setup) -> None:  # noqa: ANN001
    """Frames without persons are all negatives: the detection loss alone moves the obfuscator and quiets the detector."""
    det, x, _, _, deobf = setup
    from silhouette.models import build_obfuscator

    torch.manual_seed(3)
    obf = build_obfuscator("obf_w025")
    # no weight decay: only a real gradient of the detection loss can move a weight
    engine = AdversarialEngine(obf, deobf, det, torch.optim.AdamW(obf.parameters(), lr=1e-2, weight_decay=0.0),
                               torch.optim.AdamW(deobf.parameters(), lr=1e-2))
    empty = [Detections.empty(), Detections.empty()]
    before = _weights(obf)
    first, _ = engine.obfuscator_step(x, empty, lam=0.0)
    assert first.loss_det > 0 and first.loss_det == first.loss_det
    assert not _same(before, _weights(obf)), "the step must move the obfuscator's weights"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obf.parameters())
    for _ in range(2):
        last, _ = engine.obfuscator_step(x, empty, lam=0.0)
    assert last.loss_det < first.loss_det
