"""Classic obfuscation baselines on real PETS frames, and the AP-matching tuner with a real zoo detector."""

from __future__ import annotations

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.evaluation.baselines import (
    BASELINES,
    apply_baseline,
    fold,
    get_baseline,
    predict_all,
    tune_baseline,
)
from silhouette.evaluation.metrics import person_ap, similarity

# parameters of the classic baselines ordered from weak to strong obfuscation ('fold' has no untouched setting)
SWEEPS = {
    "blur": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
    "noise": [0.0, 0.01, 0.03, 0.1, 0.3],
    "quantize": [256, 64, 16, 6, 3, 2],
    "pixelate": [1, 2, 4, 8, 16],
    "downscale": [1.0, 2.0, 4.0, 8.0, 16.0],
}


def test_every_baseline_has_a_sweep() -> None:
    assert set(SWEEPS) | {"fold", "greypix"} == set(BASELINES)


def test_one_fold_is_the_warm_start_map_and_folds_collide_dark_with_bright(pets_frames: dict[str, torch.Tensor]) -> None:
    from silhouette.training.engine import warmup_target

    frame = pets_frames["pets_f0400"][None]
    assert torch.equal(apply_baseline("fold", frame, 1), warmup_target(frame, "fold"))
    ssims = {}
    for k in (1, 4, 16):
        out = fold(frame, k)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # x and 1 - x land on the same value: the map cannot be inverted pointwise
        assert torch.allclose(out, fold(1.0 - frame, k), atol=1e-5)
        ssims[k] = similarity(frame[0], out[0])["ssim"]
    assert ssims[1] > ssims[4] > ssims[16], ssims
    ramp = torch.linspace(0, 1, 1001).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert float(fold(ramp, 3).diff(dim=-1).abs().max()) < 0.01  # continuous across fold boundaries
    with pytest.raises(SilhouetteError, match="fold"):
        apply_baseline("fold", frame, 0)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_baseline_ssim_falls_as_obfuscation_grows(name: str, pets_frames: dict[str, torch.Tensor]) -> None:
    frame = pets_frames["pets_f0400"][None]
    ssims = []
    for p in SWEEPS[name]:
        out = apply_baseline(name, frame, p)
        assert out.shape == frame.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        ssims.append(similarity(frame[0], out[0])["ssim"])
    assert ssims[0] > 0.99  # the weakest setting leaves the frame (nearly) untouched
    assert all(a > b for a, b in zip(ssims, ssims[1:])), ssims
    base = get_baseline(name)
    # the registry's direction flag agrees with the sweep
    assert (SWEEPS[name][-1] > SWEEPS[name][0]) == base.increasing


def test_grey_pixelation_drops_colour_and_resolution(pets_frames: dict[str, torch.Tensor]) -> None:
    frame = pets_frames["pets_f0400"][None]
    out = apply_baseline("greypix", frame, 4)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.equal(out[..., :4, :4], out[..., :1, :1].expand_as(out[..., :4, :4]))
    ssims = [similarity(frame[0], apply_baseline("greypix", frame, b)[0])["ssim"] for b in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(ssims, ssims[1:])), ssims
    with pytest.raises(SilhouetteError, match="pixelation block"):
        apply_baseline("greypix", frame, 0)


def test_baselines_are_deterministic_and_reject_bad_parameters(pets_frames: dict[str, torch.Tensor]) -> None:
    frame = pets_frames["pets_f0000"][None]
    assert torch.equal(apply_baseline("noise", frame, 0.1), apply_baseline("noise", frame, 0.1))
    q = apply_baseline("quantize", frame, 4)
    assert len(torch.unique(q)) <= 4
    px = apply_baseline("pixelate", frame, 8)
    assert torch.equal(px[..., :8, :8], px[..., :1, :1].expand_as(px[..., :8, :8]))
    for name, bad in (("quantize", 1), ("pixelate", 0), ("blur", -1.0), ("noise", -0.1), ("downscale", 0.5)):
        with pytest.raises(SilhouetteError):
            apply_baseline(name, frame, bad)
    with pytest.raises(SilhouetteError, match="unknown baseline"):
        get_baseline("sepia")


@pytest.fixture(scope="module")
def tuner_setup(pets_eval):  # noqa: ANN001, ANN201
    """8 real PETS test frames, fastestdet, and its clean-frame pseudo-labels at its operating threshold."""
    from silhouette.detectors import create_detector
    from silhouette.evaluation.evaluate import FrameSelection, load_selection, prediction_threshold

    frames, _, _ = load_selection(FrameSelection(pets_eval, "test"))
    det = create_detector("fastestdet")
    with prediction_threshold(det, 0.05) as operating:
        pseudo = [d.persons(operating) for d in predict_all(det, frames)]
    assert sum(len(p) for p in pseudo) >= 10, "fastestdet should find people on the PETS test frames"
    return frames, det, pseudo


@pytest.mark.parametrize("method", ["noise", "blur"])
def test_tuner_reaches_target_ap(method: str, tuner_setup) -> None:  # noqa: ANN001
    from silhouette.evaluation.evaluate import prediction_threshold

    frames, det, pseudo = tuner_setup
    target, tol = 0.5, 0.08
    with prediction_threshold(det, 0.05):
        res = tune_baseline(method, frames, det, target, pseudo, tol=tol, max_evals=14)
        assert res.reached, res.history
        assert abs(res.ap50 - target) <= tol
        # an independent evaluation at the returned parameter gives the reported AP
        check = person_ap(predict_all(det, apply_baseline(method, frames, res.param)), pseudo)
    assert check["ap50"] == pytest.approx(res.ap50)
    assert len(res.history) <= 14
    weak_ap = dict(res.history)[get_baseline(method).weakest()]
    assert weak_ap > target + tol  # the search started above the target and moved down to it


def test_tuner_on_integer_parameter_returns_closest_grid_value(tuner_setup) -> None:  # noqa: ANN001
    frames, det, pseudo = tuner_setup
    res = tune_baseline("pixelate", frames, det, 0.5, pseudo, tol=0.0, max_evals=20)
    assert res.param == int(res.param) and 1 <= res.param <= 64
    errors = {p: abs(a - 0.5) for p, a in res.history}
    assert errors[res.param] == min(errors.values())
    # the bisection narrows to adjacent grid values rather than scanning all 64
    assert len(res.history) <= 9


def test_tuner_reports_unreachable_targets(tuner_setup) -> None:  # noqa: ANN001
    frames, det, pseudo = tuner_setup
    res = tune_baseline("quantize", frames, det, 0.0, pseudo, tol=0.0)
    # even 2 colour levels leave some people detectable: the strongest setting is returned, flagged
    assert res.param == 2 and not res.reached and res.ap50 > 0
    with pytest.raises(SilhouetteError, match="target AP"):
        tune_baseline("blur", frames, det, 1.5, pseudo)
    with pytest.raises(SilhouetteError, match="reference"):
        tune_baseline("blur", frames, det, 0.5, pseudo[:2])
