"""The reconstruction attacker learns, records its recipe, and resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from silhouette.models.cost import count_params
from silhouette.privacy.reconstruction import (
    AttackerUNet,
    ReconstructionRecipe,
    evaluate_attacker,
    load_attacker,
    run_reconstruction_attack,
    train_attacker,
)

TINY = dict(base_channels=8, depth=2, batch_size=4, crop=(48, 48), lr=3e-3, crops_per_frame=2)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_attacker_learns_identity_on_clean_frames(pets_small: list[torch.Tensor]) -> None:
    # non-residual: the identity has to be learnt from scratch
    recipe = ReconstructionRecipe(epochs=6, residual=False, **TINY)
    model, history = train_attacker(identity, pets_small, recipe, progress=False)
    psnrs = [h["psnr"] for h in history]
    assert psnrs[-1] > psnrs[0] + 3.0, psnrs
    metrics, rec = evaluate_attacker(model, identity, pets_small[:2])
    assert rec.shape == (2, 3, 120, 160)
    assert metrics["psnr"] > psnrs[0] and metrics["obfuscated_psnr"] == float("inf")


def test_attacker_is_larger_than_deobfuscator() -> None:
    from silhouette.models.autoencoder import build_deobfuscator

    default = ReconstructionRecipe().build()
    assert count_params(default) > 3 * count_params(build_deobfuscator("deobf_wide"))


def test_residual_attacker_starts_as_identity(pets_small: list[torch.Tensor]) -> None:
    net = ReconstructionRecipe(**TINY).build().eval()
    x = torch.stack(pets_small[:2])
    with torch.no_grad():
        y = net(x)
    assert float((y - x.clamp(1e-3, 1 - 1e-3)).abs().max()) < 1e-4


def test_from_scratch_learns_where_the_identity_start_saturates(pets_small: list[torch.Tensor]) -> None:
    # on a 0/1 frame the logit-space identity start sits at sigmoid(+-6.9), whose gradient is ~1e-3: it stalls
    def two_levels(x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).float()

    final = {}
    for residual in (True, False):
        recipe = ReconstructionRecipe(epochs=8, residual=residual, **TINY)
        _, history = train_attacker(two_levels, pets_small, recipe, progress=False)
        final[residual] = history[-1]["psnr"]
    assert final[False] > final[True] + 3.0, final


def test_unet_handles_odd_sizes() -> None:
    net = AttackerUNet(4, 3).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 37, 53))
    assert out.shape == (1, 3, 37, 53) and 0 <= float(out.min().detach()) and float(out.max().detach()) <= 1


def test_resume_continues_from_checkpoint(pets_small: list[torch.Tensor], tmp_path: Path) -> None:
    ckpt = tmp_path / "attacker.pt"
    frames = pets_small[:4]
    _, h1 = train_attacker(identity, frames, ReconstructionRecipe(epochs=1, **TINY), ckpt, "clean", progress=False)
    assert ckpt.is_file() and len(h1) == 1
    _, h2 = train_attacker(identity, frames, ReconstructionRecipe(epochs=2, **TINY), ckpt, "clean", progress=False)
    assert len(h2) == 2 and h2[0] == h1[0]  # the first epoch was not redone
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    model, meta = load_attacker(ckpt)
    assert meta["method"] == "clean" and meta["recipe"]["epochs"] == 2 and isinstance(model, AttackerUNet)
    # another method's checkpoint is not reused
    _, h_other = train_attacker(identity, frames, ReconstructionRecipe(epochs=1, **TINY), ckpt, "blur", progress=False)
    assert len(h_other) == 1 and load_attacker(ckpt)[1]["method"] == "blur"


def test_result_records_recipe(pets_small: list[torch.Tensor]) -> None:
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 5, 1, 2)  # noqa: E731
    res, _ = run_reconstruction_attack(blur, pets_small[:4], pets_small[4:6], ReconstructionRecipe(epochs=1, **TINY),
                                       method="blur", progress=False, reference_params=1000)
    assert res["recipe"]["crop"] == [48, 48] and res["recipe"]["architecture"] == "unet"
    assert res["attacker_params"] > 1000 and res["test"]["n_frames"] == 2
    assert 0 < res["test"]["obfuscated_ssim"] < 1
