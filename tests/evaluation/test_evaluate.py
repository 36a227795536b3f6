"""evaluate_obfuscator on real PETS frames with real zoo detectors; cost counting of obfuscator and detectors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.evaluation.baselines import gaussian_blur
from silhouette.evaluation.evaluate import (
    FrameSelection,
    detector_cost,
    evaluate_obfuscator,
    format_evaluation,
    jsonable,
    load_selection,
    model_cost,
    open_frames,
)


@pytest.fixture(scope="module")
def clean_and_blurred(pets_eval: Path) -> tuple[dict, dict]:
    dets = ["fastestdet", "yolo_fastest_body", "fastestdet+yolo_fastest_body"]
    clean = evaluate_obfuscator(None, pets_eval, "test", dets, progress=False)
    blurred = evaluate_obfuscator(lambda x: gaussian_blur(x, 3.0), pets_eval, "test", dets, progress=False)
    return clean, blurred


def test_clean_frames_match_their_own_pseudo_labels(clean_and_blurred: tuple[dict, dict]) -> None:
    clean, _ = clean_and_blurred
    assert clean["frames"] == 8 and clean["annotated_frames"] == 8
    assert clean["similarity"]["ssim"] == pytest.approx(1.0) and clean["similarity"]["psnr"] == math.inf
    for name, r in clean["detectors"].items():
        assert r["pseudo_boxes"] > 0, name
        assert r["relative"]["ap50"] == pytest.approx(1.0), name
        assert r["count"]["obf_vs_clean"]["mae"] == 0.0
        # against human GT the clean detector is good but not perfect, and obfuscation "none" changes nothing
        assert 0.5 < r["gt"]["clean"]["ap50"] < 1.0
        assert r["gt"]["obfuscated"] == r["gt"]["clean"]
        assert r["count"]["obf_vs_gt"] == r["count"]["clean_vs_gt"]
        # single detectors are read down to score 0.05 for AP; an ensemble predicts through a member at its own threshold
        assert r["pred_threshold"] == (r["label_threshold"] if "+" in name else 0.05)


def test_blur_lowers_relative_ap_and_similarity(clean_and_blurred: tuple[dict, dict]) -> None:
    clean, blurred = clean_and_blurred
    assert blurred["similarity"]["ssim"] < 0.8
    assert blurred["similarity"]["psnr"] < 40
    for name in clean["detectors"]:
        b = blurred["detectors"][name]
        assert b["relative"]["ap50"] < 0.95, name
        assert b["gt"]["obfuscated"]["ap50"] < clean["detectors"][name]["gt"]["clean"]["ap50"]
        assert b["count"]["obf_vs_clean"]["mae"] > 0
    text = format_evaluation(blurred)
    assert "fastestdet" in text and "SSIM" in text
    json.dumps(jsonable(blurred), allow_nan=False)  # standard JSON (inf/NaN replaced)


def test_frame_subsampling_is_even_and_bounded(pets_eval: Path) -> None:
    ds, idx = open_frames(FrameSelection(pets_eval, "train", max_frames=5))
    assert len(ds) == 28 and len(idx) == 5 and idx[0] == 0 and idx[-1] == 27
    frames, gts, files = load_selection(FrameSelection(pets_eval, "val", stride=2))
    assert frames.shape == (2, 3, 200, 320) and len(gts) == 2 and all(g is not None for g in gts)
    with pytest.raises(SilhouetteError, match="split 'nope'"):
        open_frames(FrameSelection(pets_eval, "nope"))
    with pytest.raises(SilhouetteError, match="not found"):
        open_frames(FrameSelection(pets_eval / "missing"))


def test_evaluate_with_an_obfuscator_module_and_bad_detector(pets_eval: Path) -> None:
    from silhouette.models import build_obfuscator

    torch.manual_seed(0)
    res = evaluate_obfuscator(build_obfuscator("obf_w025"), pets_eval, "val", ["fastestdet"], progress=False)
    # an untrained obfuscator outputs a near-uniform frame: nothing is left to detect
    assert res["detectors"]["fastestdet"]["relative"]["ap50"] < 0.05
    assert res["similarity"]["ssim"] < 0.6
    with pytest.raises(SilhouetteError, match="unknown detector"):
        evaluate_obfuscator(None, pets_eval, "val", ["yolo9000"], progress=False)


def test_cost_of_obfuscator_and_onnx_detector() -> None:
    import onnx
    from onnx import numpy_helper

    from silhouette.models import build_obfuscator, count_params
    from silhouette.paths import weights_dir

    obf = build_obfuscator("obf_paper")
    c = model_cost(obf, (200, 320))
    assert c["params"] == count_params(obf)
    half = model_cost(obf, (100, 160))
    assert half["macs"] == pytest.approx(c["macs"] / 4, rel=0.05)  # a fully convolutional net: MACs ∝ pixels
    d = detector_cost("fastestdet")
    assert d["input"] == "352x352"
    proto = onnx.load(str(weights_dir() / "fastestdet.onnx"))
    float_weights = sum(numpy_helper.to_array(t).size for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    # the converted module holds the ONNX file's float weights (BN statistics become buffers, not parameters)
    assert 0.9 * float_weights <= d["params"] <= float_weights
    assert d["macs"] > 50e6
