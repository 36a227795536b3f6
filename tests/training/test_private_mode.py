"""Private mode: the detector trains with the obfuscator, the face adversary reaches it, and the pair stays a pair."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.training.config import Config, config_from_dict
from silhouette.training.engine import AdversarialEngine


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def frames(pets_frames: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    """Two real PETS crops and the unmodified YOLOX-Nano's person boxes on them."""
    from silhouette.detectors import create_detector

    x = torch.stack([pets_frames["pets_f0000"], pets_frames["pets_f0794"]])[..., :128, :192].contiguous()
    targets = [d.persons(0.3) for d in create_detector("yolox_nano").predict(x)]
    assert sum(len(t) for t in targets) > 0
    return x, targets


def _engine(detector, private: bool, **kw) -> tuple[AdversarialEngine, torch.nn.Module]:  # noqa: ANN001
    from silhouette.models import build_deobfuscator, build_obfuscator

    torch.manual_seed(0)
    obf, deobf = build_obfuscator("obf_w025"), build_deobfuscator("deobf_small", width=0.25)
    opt_det = torch.optim.AdamW(detector.torch_model().parameters(), lr=1e-3) if private else None
    engine = AdversarialEngine(obf, deobf, detector, torch.optim.AdamW(obf.parameters(), lr=1e-2),
                               torch.optim.AdamW(deobf.parameters(), lr=1e-2), opt_det=opt_det, **kw)
    return engine, obf


def test_detector_weights_move_in_private_mode(frames) -> None:  # noqa: ANN001
    from silhouette.detectors.adapt import trainable_detector

    x, targets = frames
    det = trainable_detector("yolox_nano")
    engine, _ = _engine(det, private=True)
    before = _snapshot(det.torch_model())
    stats = engine.train_batch(x, targets, lam=1.0)
    after = _snapshot(det.torch_model())
    assert stats.loss_det_cloud == stats.loss_det_cloud  # a number, not NaN
    assert any(not torch.equal(before[k], after[k]) for k in before), "private mode must train the detector"


def test_detector_stays_frozen_in_compatible_mode(frames) -> None:  # noqa: ANN001
    from silhouette.detectors import create_detector

    x, targets = frames
    det = create_detector("yolox_nano")
    engine, _ = _engine(det, private=False)
    before = _snapshot(det.torch_model())
    stats = engine.train_batch(x, targets, lam=1.0)
    assert all(torch.equal(v, det.torch_model().state_dict()[k]) for k, v in before.items())
    assert stats.loss_det_cloud != stats.loss_det_cloud  # NaN: no detector step was taken


def test_obfuscator_step_does_not_move_the_detector(frames) -> None:  # noqa: ANN001
    """The detector moves only in its own step, never through the obfuscator's loss."""
    from silhouette.detectors.adapt import trainable_detector

    x, targets = frames
    det = trainable_detector("yolox_nano")
    engine, _ = _engine(det, private=True)
    before = _snapshot(det.torch_model())
    engine.obfuscator_step(x, targets, lam=1.0)
    assert all(torch.equal(v, det.torch_model().state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in det.torch_model().parameters()), "frozen() must hand the weights back trainable"


def test_adapted_detector_exports_with_the_same_contract(frames, tmp_path: Path) -> None:  # noqa: ANN001
    """The exported file is served by the ordinary zoo path and predicts what the torch weights predict."""
    from silhouette.detectors import create_detector
    from silhouette.detectors.adapt import file_sha256, trainable_detector

    x, _ = frames
    det = trainable_detector("yolox_nano")
    with torch.no_grad():
        for p in det.torch_model().parameters():
            p.mul_(1.01)  # any change: the export must carry the trained weights, not the original file's
    sha = det.export_onnx(tmp_path / "d.onnx")
    assert sha == file_sha256(tmp_path / "d.onnx") != file_sha256(create_detector("yolox_nano").weights)
    served = create_detector("yolox_nano", weights=str(tmp_path / "d.onnx"), conf_threshold=0.3)
    raw = [torch.from_numpy(o) for o in served.forward_ort(served.preprocess_exact(x)[0])]
    with torch.no_grad():
        ref = det.forward_torch(torch.from_numpy(served.preprocess_exact(x)[0]).float())
    assert torch.allclose(raw[0], ref[0], atol=1e-3)


def test_face_adversary_gradient_reaches_the_obfuscator(frames) -> None:  # noqa: ANN001
    from silhouette.detectors import create_detector
    from silhouette.training.face_adversary import FaceAdversary

    x, targets = frames
    face = FaceAdversary()
    engine, obf = _engine(create_detector("yolox_nano"), private=False, face=face, face_weight=1.0)
    o = obf(x)
    score = face(o)
    score.backward()
    grads = [p.grad for p in obf.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in face.parameters()), "the face adversary stays frozen"
    stats = engine.train_batch(x, targets, lam=1.0)
    assert 0.0 <= stats.face_score <= 1.0


def test_face_adversary_scores_faces_above_flat_grey(shared: Path) -> None:
    """On a real close-up frame the adversary's score is well above its score on flat grey."""
    from silhouette.privacy.faces import load_face_clips
    from silhouette.training.face_adversary import FaceAdversary

    clips = load_face_clips(every=30)
    frame = next(iter(clips.values()))[0]
    face = FaceAdversary()
    with torch.no_grad():
        real = float(face(frame.unsqueeze(0)))
        grey = float(face(torch.full_like(frame, 0.5).unsqueeze(0)))
    assert real > grey + 0.2


@pytest.mark.parametrize(("data", "message"), [
    ({"mode": "secret"}, "mode: expected one of compatible, private"),
    ({"detector": {"targets": "boxes"}}, "detector.targets: expected one of pseudo, gt"),
    ({"detector": {"lr": 0}}, "detector.lr: must be > 0"),
    ({"train": {"face_weight": -1}}, "train.face_weight: must be >= 0"),
])
def test_bad_private_options_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(SilhouetteError, match=message.replace("(", r"\(")):
        config_from_dict(data)


@pytest.mark.parametrize("kwargs", [{"output_scale": 3}, {"output_scale": 0}])
def test_bad_bottleneck_options(kwargs: dict) -> None:
    from silhouette.models import build_obfuscator

    with pytest.raises(SilhouetteError, match="output_scale must be 1, 2, 4, 8 or 16"):
        build_obfuscator("obf_w025", **kwargs)


def test_bottlenecks_shape_the_output() -> None:
    """grey = three equal channels; output_scale = constant k x k blocks; both survive an ONNX-free round trip."""
    from silhouette.models import build_obfuscator

    m = build_obfuscator("obf_w025", grey=True, output_scale=4).eval()
    with torch.no_grad():
        y = m(torch.rand(1, 3, 50, 70))
    assert y.shape == (1, 3, 50, 70)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    blocks = y[0, 0, :48, :68].reshape(12, 4, 17, 4)
    assert torch.equal(blocks, blocks[:, :1, :, :1].expand_as(blocks))
    assert "grey" not in build_obfuscator("obf_w025").config, "plain presets keep their recorded architecture"


def test_private_needs_a_zoo_detector() -> None:
    from silhouette.detectors.adapt import trainable_detector

    with pytest.raises(SilhouetteError, match="private mode co-trains one ONNX zoo detector"):
        trainable_detector("yolox_nano+fastestdet")


def test_private_run_writes_a_pair_and_resumes(tiny_config: Callable[..., Config], tmp_path: Path) -> None:
    """A private run saves obfuscator + detector together, verifiable by sha256, and resumes both."""
    from silhouette.detectors.adapt import file_sha256
    from silhouette.models.checkpoint import read_checkpoint
    from silhouette.training.trainer import train

    over = ("mode=private", "detector.spec=yolox_nano", "detector.targets=gt", "data.crop=[96, 128]")
    out = tmp_path / "run"
    train(tiny_config(*over), out, progress=False)
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["mode"] == "private" and ckpt["pair"]["file"] == "last.detector.onnx"
    assert ckpt["pair"]["sha256"] == file_sha256(out / "last.detector.onnx")
    first = ckpt["detector"]["state_dict"]
    train(tiny_config(*over, "train.epochs=2"), out, resume=True, progress=False)
    second = read_checkpoint(out / "last.pt")["detector"]["state_dict"]
    assert any(not torch.equal(first[k], second[k]) for k in first), "the resumed run kept training the detector"


def test_gt_targets_need_gt(tiny_config: Callable[..., Config], tmp_path: Path, shared: Path) -> None:
    """detector.targets=gt on footage without human boxes is one clear error."""
    from silhouette.data import prepare_dataset
    from silhouette.training.trainer import train

    root = prepare_dataset("intel", tmp_path / "intel", every=200, progress=False)
    cfg = tiny_config("mode=private", "detector.spec=yolox_nano", "detector.targets=gt", f"data.root={root}")
    with pytest.raises(SilhouetteError, match="detector.targets: gt needs human person boxes"):
        train(cfg, tmp_path / "run", progress=False)


@pytest.fixture(scope="module")
def pair(tiny_pair: Callable[..., Path]) -> Path:
    """A one-epoch private pair on sparse PETS frames: last.pt + last.detector.onnx."""
    return tiny_pair()


def _main(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from silhouette.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_evaluate_pair_scores_the_co_trained_detector(pair: Path, pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    import json

    code, out, _ = _main("evaluate", "--pair", str(pair), "--data", str(pets_every(40)), "--no-progress", "--out", str(tmp_path))
    assert code == 0, out
    res = json.loads((tmp_path / "evaluation.json").read_text())
    (name, row), = res["detectors"].items()
    assert name == "yolox_nano (co-trained)" and row["clean_detector"] == "yolox_nano"
    assert row["gt"]["clean"]["ap50"] > 0.5, "clean frames are judged with the unmodified detector"


def test_mismatched_pair_is_refused_in_one_line(pair: Path, pets_every: Callable[[int], Path], tmp_path: Path,
                                                shared: Path) -> None:
    import shutil

    bad = tmp_path / "last.pt"
    shutil.copy(pair, bad)
    shutil.copy(shared / "weights" / "yolox_nano.onnx", tmp_path / "last.detector.onnx")  # the unmodified detector
    for argv in (["evaluate", "--pair", str(bad), "--data", str(pets_every(40))],
                 ["attack", "--pair", str(bad), "--data", str(pets_every(40)), "--attacks", "faces", "--out", str(tmp_path / "a")]):
        code, _, err = _main(*argv)
        assert code == 2 and "is not the detector this obfuscator was trained with" in err
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "last.detector.onnx").unlink()
    code, _, err = _main("evaluate", "--pair", str(bad), "--data", str(pets_every(40)))
    assert code == 2 and "keep the two files of a pair together" in err


def test_private_obfuscator_refused_as_plain_checkpoint(pair: Path, pets_every: Callable[[int], Path]) -> None:
    code, _, err = _main("evaluate", "--checkpoint", str(pair), "--data", str(pets_every(40)))
    assert code == 2 and "pass it as --pair" in err
    code, _, err = _main("evaluate", "--pair", "src/silhouette/assets/obfuscator_default.pt", "--data", str(pets_every(40)))
    assert code == 2 and "not a private-mode checkpoint" in err


def test_scorecard_takes_gt_utility_from_a_pair_evaluation(pair: Path, pets_every: Callable[[int], Path], tmp_path: Path) -> None:
    """evaluate --pair -> scorecard --utility private=...: the private row carries GT AP50 and count MAE vs GT."""
    import json

    from silhouette.privacy.scorecard import COLUMNS, flatten, utility_from_evaluation

    code, _, err = _main("evaluate", "--pair", str(pair), "--data", str(pets_every(40)), "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    util = utility_from_evaluation(tmp_path / "evaluation.json")
    row = json.loads((tmp_path / "evaluation.json").read_text())["detectors"]["yolox_nano (co-trained)"]
    assert util["gt_ap50"] == row["gt"]["obfuscated"]["ap50"] and util["gt_count_mae"] == row["count"]["obf_vs_gt"]["mae"]
    flat = flatten({"method": "private", "utility": util})
    assert flat["gt_ap50"] == util["gt_ap50"] and "gt_ap50" in [c[0] for c in COLUMNS]


def test_pair_counts_at_its_calibrated_threshold_and_labels_at_the_originals(pair: Path, pets_every: Callable[[int], Path],
                                                                             tmp_path: Path) -> None:
    """A pair records the threshold it counts at; the clean frames stay labelled at the unmodified detector's own."""
    import json

    from silhouette.detectors import create_detector
    from silhouette.detectors.adapt import pair_detector, read_pair

    thr = read_pair(pair)["conf_threshold"]
    assert 0.05 <= thr <= 0.95 and pair_detector(pair).conf_threshold == thr
    code, _, err = _main("evaluate", "--pair", str(pair), "--data", str(pets_every(40)), "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    row = json.loads((tmp_path / "evaluation.json").read_text())["detectors"]["yolox_nano (co-trained)"]
    assert row["label_threshold"] == create_detector("yolox_nano").conf_threshold
