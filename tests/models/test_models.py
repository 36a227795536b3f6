"""Autoencoder presets: sizes, shapes, ONNX export, checkpoints and the info command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.models import (
    MODELS,
    build_deobfuscator,
    build_obfuscator,
    count_macs,
    count_params,
    load_obfuscator,
    read_checkpoint,
    save_checkpoint,
)
from silhouette.models.blocks import FusedInvertedResidual, InvertedResidual

torch.set_num_threads(2)


@pytest.mark.parametrize("name", [None, "obf_paper", "obf_fast", "obf_fused"])
def test_paper_size_presets_match_paper_size(name: str | None) -> None:
    """Paper Table 4: 0.154 M params, 1.384 GMACs at 320x200; the default and the paper-size presets within ±25%."""
    m = build_obfuscator() if name is None else build_obfuscator(name)
    params, macs = count_params(m), count_macs(m, (200, 320))
    assert 0.154e6 * 0.75 <= params <= 0.154e6 * 1.25, params
    assert 1.384e9 * 0.75 <= macs <= 1.384e9 * 1.25, macs


def _full_res_macs(model: torch.nn.Module) -> int:
    """Conv MACs spent at full resolution (320x200) in one forward pass."""
    total = 0
    x = torch.zeros(1, 3, 200, 320)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(lambda m, i, o: seen.append((m, o.shape[-2:])))
    seen: list = []
    with torch.no_grad():
        model.eval()(x)
    for m, hw in seen:
        if tuple(hw) == (200, 320):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += hw[0] * hw[1] * m.out_channels * (m.in_channels // m.groups) * k
    return total


def test_fast_presets_move_work_off_full_resolution() -> None:
    """obf_fast and obf_fused keep the MAC budget but spend less (none) of it at full resolution (why they run faster)."""
    paper, fast, fused = build_obfuscator("obf_paper"), build_obfuscator("obf_fast"), build_obfuscator("obf_fused")
    assert _full_res_macs(fast) < 0.5 * _full_res_macs(paper)
    assert _full_res_macs(fused) == 0
    for m in (fast, fused):
        assert count_macs(m, (200, 320)) > 0.8 * count_macs(paper, (200, 320))
    kinds = {type(mod).__name__ for mod in fused.modules()}
    assert {"FusedInvertedResidual", "InvertedResidual", "PixelShuffle"} <= kinds


def test_fused_block_and_shuffle_head() -> None:
    same, down = FusedInvertedResidual(8, 8, 1), FusedInvertedResidual(8, 16, 2)
    assert same.use_residual and not down.use_residual
    x = torch.rand(1, 8, 16, 16)
    assert down(x).shape == (1, 16, 8, 8)
    same.eval()
    torch.nn.init.zeros_(same.block[-1][1].weight)
    assert torch.equal(same(x), x)
    m = build_obfuscator("obf_fused").eval()
    for size in [(200, 320), (37, 51), (1, 9)]:
        y = m(torch.rand(1, 3, *size))
        assert y.shape == (1, 3, *size) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    with pytest.raises(SilhouetteError, match="head"):
        build_obfuscator("obf_fused", head="deconv")
    with pytest.raises(SilhouetteError, match="stages"):
        build_obfuscator("obf_paper", stages=((6, 16, 1),))


def test_width_presets_are_smaller_and_macs_scale_with_area() -> None:
    macs = {n: count_macs(build_obfuscator(n), (200, 320)) for n in ("obf_paper", "obf_w050", "obf_w025", "obf_edge")}
    assert macs["obf_paper"] > macs["obf_w050"] > macs["obf_w025"]
    assert macs["obf_edge"] < macs["obf_w050"]
    m = build_obfuscator("obf_w025")
    assert count_macs(m, (400, 640)) == pytest.approx(4 * count_macs(m, (200, 320)), rel=0.01)


@pytest.mark.parametrize("size", [(200, 320), (64, 64), (37, 51), (1, 9)])
def test_output_same_size_and_in_unit_range(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    for m in (build_obfuscator("obf_w025"), build_deobfuscator("deobf_small")):
        x = torch.rand(2, 3, *size) * 4 - 2  # the sigmoid bounds the output even for wild inputs
        y = m.eval()(x)
        assert y.shape == x.shape
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_skips_are_free_and_change_the_function() -> None:
    torch.manual_seed(0)
    with_skips = build_obfuscator("obf_w050")
    plain = build_obfuscator("obf_w050", skips=False)
    assert count_params(with_skips) == count_params(plain)
    plain.load_state_dict(with_skips.state_dict())  # same weights, different wiring
    x = torch.rand(1, 3, 48, 64)
    assert not torch.allclose(with_skips.eval()(x), plain.eval()(x))
    assert plain(torch.rand(1, 3, 37, 51)).shape == (1, 3, 37, 51)


def test_inverted_residual_uses_residual_only_when_shapes_match() -> None:
    same, down, wider = InvertedResidual(8, 8, 1), InvertedResidual(8, 8, 2), InvertedResidual(8, 16, 1)
    assert same.use_residual and not down.use_residual and not wider.use_residual
    x = torch.rand(1, 8, 16, 16)
    assert down(x).shape == (1, 8, 8, 8)
    same.eval()
    torch.nn.init.zeros_(same.block[-1][1].weight)  # zero the last BN scale: the block becomes the identity
    assert torch.equal(same(x), x)


def test_no_instance_norm_and_eval_is_deterministic() -> None:
    m = build_obfuscator("obf_w050").eval()
    assert not any(isinstance(mod, torch.nn.modules.instancenorm._InstanceNorm) for mod in m.modules())
    x = torch.rand(3, 3, 40, 56)
    # eval-mode BN: a frame's output does not depend on the rest of the batch
    assert torch.allclose(m(x)[1:2], m(x[1:2]), atol=1e-6)


def test_registry_names_and_bad_arguments() -> None:
    assert {"obf_paper", "obf_w050", "obf_w025", "obf_edge", "deobf_paper"} <= set(MODELS.names())
    with pytest.raises(SilhouetteError, match="did you mean 'obf_paper'"):
        build_obfuscator("obf_papr")
    with pytest.raises(SilhouetteError, match="width"):
        build_obfuscator("obf_paper", width=0)
    with pytest.raises(SilhouetteError, match="bad argument"):
        build_obfuscator("obf_paper", colour=3)


def test_onnx_export_runs_at_two_sizes(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    for name, kwargs in (("obf_w025", {}), ("obf_fused", {}), ("obf_fused", {"output_levels": 2})):
        m = build_obfuscator(name, **kwargs).eval()
        path = tmp_path / f"{name}{len(kwargs)}.onnx"
        x = torch.rand(1, 3, 200, 320)
        torch.onnx.export(m, (x,), str(path), opset_version=17, input_names=["images"], output_names=["obfuscated"],
                          dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for shape in [(1, 3, 200, 320), (2, 3, 96, 160), (1, 3, 37, 51)]:
            x = torch.rand(*shape)
            (y,) = sess.run(None, {"images": x.numpy()})
            ref = m(x).detach().numpy()
            if kwargs:
                # rounding: a value within float error of a level boundary may land on either side in the two runtimes
                assert set(np.unique(y)) <= {0.0, 1.0} and np.mean(np.abs(y - ref) > 1e-4) < 1e-3
            else:
                np.testing.assert_allclose(y, ref, atol=1e-4)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    obf = build_obfuscator("obf_w025", width=0.3)
    path = save_checkpoint(tmp_path / "c.pt", obfuscator=obf, obfuscator_spec={"name": "obf_w025", "kwargs": {"width": 0.3}},
                           config={"name": "t"}, epoch=3, metrics={"val_ap50": 0.5})
    loaded = load_obfuscator(path)
    assert not loaded.training
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(loaded(x), obf.eval()(x))
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["metrics"]["val_ap50"] == 0.5
    assert not list(tmp_path.glob(".*"))  # atomic write left no temp file


def test_bad_checkpoints_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SilhouetteError, match="nope.pt: file not found"):
        load_obfuscator(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(SilhouetteError, match="bad.pt: cannot be read"):
        load_obfuscator(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SilhouetteError, match="not a silhouette checkpoint"):
        load_obfuscator(foreign)
    import silhouette.models.checkpoint as ck

    monkeypatch.setattr(ck, "DEFAULT_CHECKPOINT", tmp_path / "absent.pt")
    with pytest.raises(SilhouetteError, match="--checkpoint"):
        load_obfuscator(None)


def test_info_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from silhouette.cli import main

    assert main(["info", "obf_paper"]) == 0
    out = capsys.readouterr().out
    assert "params: 157,643" in out and "MACs at 320x200" in out
    obf = build_obfuscator("obf_w025")
    save_checkpoint(tmp_path / "c.pt", obfuscator=obf, obfuscator_spec={"name": "obf_w025", "kwargs": {}},
                    config={"name": "cfgname", "detector": {"spec": "yolox_nano"}, "train": {"epochs": 2, "lam": 1.0}},
                    metrics={"val_ap50": 0.93})
    assert main(["info", str(tmp_path / "c.pt"), "--size", "160x100"]) == 0
    out = capsys.readouterr().out
    assert "MACs at 160x100" in out and "yolox_nano" in out and "val_ap50: 0.9300" in out
    assert main(["info", "obf_paper", "--size", "big"]) == 2


def test_export_drops_training_state(tmp_path: Path) -> None:
    from silhouette.models import export_checkpoint, load_deobfuscator

    obf, deobf = build_obfuscator("obf_w025"), build_deobfuscator("deobf_small")
    src = save_checkpoint(tmp_path / "train.pt", obfuscator=obf, obfuscator_spec={"name": "obf_w025", "kwargs": {}},
                          deobfuscator=deobf, deobfuscator_spec={"name": "deobf_small", "kwargs": {}},
                          training_state={"opt_obf": torch.optim.AdamW(obf.parameters()).state_dict()})
    out = export_checkpoint(src, tmp_path / "ship.pt")
    ckpt = read_checkpoint(out)
    assert "training_state" not in ckpt and "deobfuscator" in ckpt
    x = torch.rand(1, 3, 24, 40)
    assert torch.equal(load_obfuscator(out)(x), load_obfuscator(src)(x))
    assert load_deobfuscator(out) is not None
    slim = read_checkpoint(export_checkpoint(src, tmp_path / "slim.pt", keep_deobfuscator=False))
    assert "deobfuscator" not in slim


def test_output_levels_quantise_the_output_with_straight_through_gradients(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 48, 64)
    plain = build_obfuscator("obf_w025")
    m = build_obfuscator("obf_w025", output_levels=4)
    m.load_state_dict(plain.state_dict())  # the rounding adds no weights
    m.eval()
    y = m(x)
    expected = torch.round(plain.eval()(x) * 3) / 3
    assert torch.equal(y, expected)
    assert torch.unique(y).numel() <= 4
    # training: the forward value is still the rounded one, but the gradient reaches the weights
    m.train()
    yt = m(x)
    assert torch.allclose(yt, torch.round(yt.detach() * 3) / 3, atol=1e-6)
    yt.mean().backward()
    assert all(p.grad is not None for p in m.parameters()) and m.stem[0][0].weight.grad.abs().sum() > 0
    path = save_checkpoint(tmp_path / "q.pt", obfuscator=m, obfuscator_spec={"name": "obf_w025", "kwargs": {"output_levels": 4}})
    loaded = load_obfuscator(path)
    assert loaded.output_levels == 4 and torch.equal(loaded(x), m.eval()(x))
    with pytest.raises(SilhouetteError, match="output_levels"):
        build_obfuscator("obf_w025", output_levels=1)
