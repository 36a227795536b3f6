"""ONNX export: checker, dynamic batch/H/W parity with torch, cache, static int8 with a quality report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest


def test_fp32_export_is_valid_dynamic_and_matches_torch(obf_model, onnx_path: Path) -> None:
    from silhouette.edge.export import parity

    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 13
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # batch, height and width are symbolic
    diffs = parity(obf_model, onnx_path, sizes=[(200, 320), (240, 416), (77, 101)], batch=2)
    assert set(diffs) == {"320x200", "416x240", "101x77"}
    assert max(diffs.values()) < 1e-4, diffs


def test_onnx_cache_is_keyed_by_checkpoint_content(obf_model, checkpoint: Path, onnx_path: Path, tmp_path: Path) -> None:
    import torch

    from silhouette.edge.export import cached_onnx
    from silhouette.models import save_checkpoint

    before = onnx_path.stat().st_mtime_ns
    assert cached_onnx(checkpoint) == onnx_path and onnx_path.stat().st_mtime_ns == before  # reused, not re-exported
    other = obf_model.__class__(**obf_model.config)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    ck2 = save_checkpoint(tmp_path / "other.pt", obfuscator=other, obfuscator_spec={"name": "autoencoder", "kwargs": obf_model.config})
    assert cached_onnx(ck2) != onnx_path
    # an .onnx file given as the checkpoint is used as is
    assert cached_onnx(onnx_path) == onnx_path


def test_onnx_and_torch_runners_agree_on_real_frames(checkpoint: Path, testdata_bgr) -> None:
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner

    a = EdgeObfuscator(load_runner(checkpoint, "onnx"))
    b = EdgeObfuscator(load_runner(checkpoint, "torch"))
    for f in testdata_bgr:
        diff = np.abs(a(f).astype(int) - b(f).astype(int))
        assert diff.max() <= 1  # rounding of float outputs to uint8 may differ by one level


@pytest.mark.parametrize("name", ["obfuscator_default", "obfuscator_edge"])
def test_shipped_onnx_is_the_shipped_checkpoint(name: str, testdata_bgr) -> None:
    """The .onnx a torch-free camera runs is the .pt beside it: re-export after retraining (silhouette export)."""
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner
    from silhouette.paths import ASSETS_DIR

    shipped = ASSETS_DIR / f"{name}.onnx"
    onnx.checker.check_model(onnx.load(str(shipped)), full_check=True)
    a = EdgeObfuscator(load_runner(shipped, "onnx"))
    b = EdgeObfuscator(load_runner(ASSETS_DIR / f"{name}.pt", "torch"))
    for f in testdata_bgr:
        assert np.abs(a(f).astype(int) - b(f).astype(int)).max() <= 1  # float outputs may round to another level


def test_default_runner_is_the_shipped_onnx() -> None:
    """Without --checkpoint the camera runs the shipped .onnx directly: nothing is exported, no torch is needed."""
    from silhouette.edge.runtime import load_runner
    from silhouette.paths import DEFAULT_ONNX

    assert load_runner(None, "onnx").path == DEFAULT_ONNX


@pytest.mark.slow
def test_export_cli_with_int8_reports_parity_and_ap(tmp_path: Path, capsys) -> None:
    """The shipped edge obfuscator (trained: its frames hold people) keeps its detections within a bound as int8."""
    from silhouette.cli import main
    from silhouette.edge.runtime import OnnxRunner
    from silhouette.imaging import bgr_batch
    from silhouette.paths import ASSETS_DIR

    out = tmp_path / "model.onnx"
    argv = ["export", "--checkpoint", str(ASSETS_DIR / "obfuscator_edge.pt"), "--out", str(out), "--int8"]
    rc = main(argv + ["--calib-frames", "6", "--eval-frames", "4"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and (tmp_path / "model.int8.onnx").is_file()
    fp32 = [float(v) for v in re.findall(r"\d+x\d+: ([0-9.e+-]+)", text.split("fp32 parity")[1].splitlines()[0])]
    assert len(fp32) == 2 and max(fp32) < 1e-4
    m = re.search(r"person AP50 (\S+) against detections on torch-obfuscated frames \((\d+) vs (\d+) persons\), mean abs pixel diff (\S+)", text)
    assert m, text
    ap, fp32_persons, int8_persons, diff = float(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))
    # measured: AP50 0.996, 34 vs 35 persons, diff 0.005; int8 calibrated on one black frame gives 0.06, 34 vs 2, 0.31
    assert fp32_persons >= 10, "the held-out frames should show people on the fp32 output"
    assert ap >= 0.9, text
    assert abs(int8_persons - fp32_persons) <= 0.15 * fp32_persons, text
    assert diff < 0.02
    q = onnx.load(str(tmp_path / "model.int8.onnx"))
    assert any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in q.graph.node)
    # the int8 model keeps dynamic sizes
    y = OnnxRunner(tmp_path / "model.int8.onnx")(bgr_batch([np.zeros((120, 160, 3), np.uint8)] * 2))
    assert y.shape == (2, 3, 120, 160)


def test_export_cli_errors(tmp_path: Path, capsys) -> None:
    from silhouette.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.txt")]) == 2


@pytest.mark.parametrize("spec", ["fold:1", "fold:3", "quantize:4"])
def test_export_baseline_runs_on_the_camera_like_the_map(spec: str, tmp_path: Path, testdata_bgr) -> None:
    """`export --baseline` gives an ONNX file that the camera runs with --checkpoint, equal to the map itself."""
    import torch

    from silhouette.cli import main
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner
    from silhouette.evaluation.baselines import BaselineModule
    from silhouette.imaging import bgr_to_tensor, tensor_to_bgr

    out = tmp_path / "base.onnx"
    assert main(["export", "--baseline", spec, "--out", str(out)]) == 0
    camera = EdgeObfuscator(load_runner(out, "onnx"))
    for f in testdata_bgr:
        with torch.no_grad():
            want = tensor_to_bgr(BaselineModule(spec)(bgr_to_tensor(f)[None])[0])
        assert np.abs(camera(f).astype(int) - want.astype(int)).max() <= 1
        assert np.abs(camera(f).astype(int) - f.astype(int)).mean() > 5  # it did obfuscate


def test_export_baseline_errors(tmp_path: Path, capsys) -> None:
    from silhouette.cli import main

    out = str(tmp_path / "b.onnx")
    for argv, words in ((["--baseline", "fold:1", "--int8"], "drop --int8"), (["--baseline", "noise:0.1"], "pointwise"), (["--baseline", "pixelate:4"], "pointwise"),
                        (["--baseline", "fold:x"], "METHOD:NUMBER"), (["--baseline", "nope:1"], "unknown baseline")):
        assert main(["export", *argv, "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not Path(out).exists()
