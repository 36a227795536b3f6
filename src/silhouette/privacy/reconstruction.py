"""Post-hoc reconstruction attack: a fresh U-Net learns obfuscated -> original with the obfuscation frozen.

The training-time deobfuscator only shows that *that* adversary failed. Here an attacker that is
clearly larger (parameters counted and recorded), trained from scratch with Adam on MSE, gets the
train split of (obfuscated, original) pairs and is scored on the test split with PSNR and SSIM.
Every method (ours, clean, each baseline) is attacked with the same recipe.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from silhouette.errors import SilhouetteError
from silhouette.imaging import check_image
from silhouette.models.cost import count_params
from silhouette.privacy.reid import batched

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


class _DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) twice: the classic U-Net stage."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )


class AttackerUNet(nn.Module):
    """U-Net (Ronneberger et al.): `depth` max-pool stages, bilinear upsampling, skip concatenation, sigmoid.

    With `residual` the net predicts a correction in logit space on top of its input and starts as the
    identity (zero-initialised head), so the attacker never does worse than reading the obfuscated frame.
    """

    def __init__(self, base_channels: int = 32, depth: int = 3, in_channels: int = 3, out_channels: int = 3,
                 residual: bool = False) -> None:
        super().__init__()
        if base_channels < 1 or depth < 1:
            raise SilhouetteError(f"attacker U-Net needs base_channels >= 1 and depth >= 1, got {base_channels}, {depth}")
        if residual and in_channels != out_channels:
            raise SilhouetteError("a residual attacker needs as many input as output channels")
        self.config = {"base_channels": base_channels, "depth": depth, "in_channels": in_channels,
                       "out_channels": out_channels, "residual": residual}
        self.residual = residual
        chs = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_DoubleConv(in_channels, chs[0])] + [_DoubleConv(chs[i], chs[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_DoubleConv(chs[i + 1] + chs[i], chs[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chs[0], out_channels, 1)
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] obfuscated -> [B,3,H,W] reconstruction in [0,1]; any H, W (padded internally)."""
        h, w = x.shape[-2:]
        s = 2**self.depth
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        inp = x
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        y = self.head(x)
        if self.residual:
            y = y + torch.logit(inp.clamp(1e-3, 1 - 1e-3))
        return torch.sigmoid(y)[..., :h, :w]


@dataclass
class ReconstructionRecipe:
    """Everything that defines the attacker's training; stored with every result so runs are comparable."""

    architecture: str = "unet"
    # predict a correction of the obfuscated frame (starts as the identity). On a frame whose pixels sit at 0 or 1
    # that start saturates the sigmoid and the attacker barely learns: there, residual=False (from scratch)
    residual: bool = True
    base_channels: int = 32
    depth: int = 3
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    crop: tuple[int, int] = (128, 128)  # (H, W) random crops of the train frames
    crops_per_frame: int = 1  # crops drawn from each train frame per epoch
    max_train_frames: int | None = None
    max_test_frames: int | None = None
    seed: int = 0
    loss: str = "mse"
    optimizer: str = "adam"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReconstructionRecipe":
        """Inverse of `to_dict`."""
        d = dict(d)
        d["crop"] = tuple(d["crop"])
        return cls(**d)

    def build(self) -> AttackerUNet:
        """A fresh, seeded attacker network."""
        torch.manual_seed(self.seed)
        return AttackerUNet(self.base_channels, self.depth, residual=self.residual)


QUICK_RECIPE = ReconstructionRecipe(base_channels=16, depth=3, epochs=2, batch_size=4, crop=(96, 96),
                                    max_train_frames=24, max_test_frames=8)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    # the obfuscated frame leaves the camera as an 8-bit image, so the attacker sees 8-bit data
    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8)


def obfuscate_frames(transform: Transform, frames: Iterable[torch.Tensor], batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, obfuscated) as uint8 [N,3,H,W] stacks; the transform runs frozen, in batches, without gradients."""
    clean: list[torch.Tensor] = []
    obf: list[torch.Tensor] = []
    for batch in batched(frames, batch_size):
        x = torch.stack(batch)
        with torch.no_grad():
            y = transform(x)
        check_image(y)
        if y.shape != x.shape:
            raise SilhouetteError(f"obfuscation changed the frame shape {tuple(x.shape)} -> {tuple(y.shape)}")
        clean.append(_to_uint8(x))
        obf.append(_to_uint8(y))
    if not clean:
        raise SilhouetteError("no frames to attack (empty split?)")
    return torch.cat(clean), torch.cat(obf)


def _checkpoint_state(model: nn.Module, opt: torch.optim.Optimizer, epoch: int, history: list[dict[str, float]],
                      recipe: ReconstructionRecipe, method: str) -> dict[str, Any]:
    return {"kind": "silhouette-reconstruction-attacker", "method": method, "recipe": recipe.to_dict(),
            "epoch": epoch, "history": history, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state()}


def save_attacker(path: str | Path, state: dict[str, Any]) -> None:
    """Write an attacker checkpoint atomically (a crash never leaves a half-written file)."""
    from silhouette.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_attacker(path: str | Path) -> tuple[AttackerUNet, dict[str, Any]]:
    """The trained attacker of a checkpoint (eval mode) and the checkpoint's metadata."""
    from silhouette.models.checkpoint import safe_torch_load

    path = Path(path)
    state = safe_torch_load(path, "attacker checkpoint")
    if not isinstance(state, dict) or state.get("kind") != "silhouette-reconstruction-attacker":
        raise SilhouetteError(f"{path}: not a reconstruction-attacker checkpoint")
    model = ReconstructionRecipe.from_dict(state["recipe"]).build()
    model.load_state_dict(state["model"])
    return model.eval(), {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}


def _resume_attacker(ckpt: Path | None, model: nn.Module, opt: torch.optim.Optimizer, recipe: ReconstructionRecipe,
                     method: str) -> tuple[int, list[dict[str, float]]]:
    """Load `ckpt` into model and optimiser when it holds this recipe and method; returns (start epoch, history)."""
    if ckpt is None or not ckpt.is_file():
        return 0, []
    from silhouette.models.checkpoint import safe_torch_load

    state = safe_torch_load(ckpt, "attacker checkpoint")
    # a longer run of the same recipe continues where the stored one stopped
    same = {k: v for k, v in state.get("recipe", {}).items() if k != "epochs"} == {
        k: v for k, v in recipe.to_dict().items() if k != "epochs"}
    if not (same and state.get("method") == method and int(state["epoch"]) <= recipe.epochs):
        log.warning("%s: holds another recipe or method; training a fresh attacker and overwriting it", ckpt)
        return 0, []
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    start = int(state["epoch"])
    log.info("reconstruction attacker (%s): resuming after epoch %d from %s", method, start, ckpt)
    return start, list(state["history"])


def _attacker_epoch(model: nn.Module, opt: torch.optim.Optimizer, clean: torch.Tensor, obf: torch.Tensor,
                    recipe: ReconstructionRecipe, gen: torch.Generator, steps: int, bar: Any, epoch: int) -> float:
    """Epoch `epoch` (0-based) of random-crop MSE steps; returns the mean train-crop MSE."""
    n, _, H, W = clean.shape
    ch, cw = min(recipe.crop[0], H), min(recipe.crop[1], W)
    model.train()
    order = torch.randperm(n * recipe.crops_per_frame, generator=gen) % n
    # summed on the device in float64 (the same arithmetic as a Python float) so GPU steps need no sync
    total = torch.zeros((), dtype=torch.float64, device=clean.device)
    count = 0
    for s in range(steps):
        idx = order[s * recipe.batch_size : (s + 1) * recipe.batch_size]
        if len(idx) == 0:
            continue
        ys = torch.randint(0, H - ch + 1, (len(idx),), generator=gen)
        xs = torch.randint(0, W - cw + 1, (len(idx),), generator=gen)
        # plain ints: slicing a device tensor with CPU scalars would sync on every crop
        at = list(zip(idx.tolist(), ys.tolist(), xs.tolist()))
        x = torch.stack([obf[i, :, y : y + ch, x0 : x0 + cw] for i, y, x0 in at]).float() / 255
        t = torch.stack([clean[i, :, y : y + ch, x0 : x0 + cw] for i, y, x0 in at]).float() / 255
        loss = F.mse_loss(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().double() * len(idx)
        count += len(idx)
        bar.update(1)
        if not bar.disable:
            bar.set_postfix(epoch=epoch + 1, mse=f"{float(loss.detach()):.4f}")
    return float(total) / max(count, 1)


def train_attacker(
    transform: Transform,
    train_frames: Iterable[torch.Tensor],
    recipe: ReconstructionRecipe | None = None,
    checkpoint: str | Path | None = None,
    method: str = "method",
    progress: bool = True,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[AttackerUNet, list[dict[str, float]]]:
    """Train a fresh attacker on (transform(x), x) random crops; resumes from `checkpoint` if it holds the same recipe.

    A checkpoint of the same recipe with fewer epochs is continued (so `epochs` can be raised later).

    Returns the model (eval mode) and the per-epoch history [{epoch, loss, psnr}] (train-crop MSE and its PSNR).
    `pairs` = precomputed (clean, obfuscated) uint8 stacks, to skip running the transform again.
    On `device` the uint8 stacks are moved there once and every crop is cut there (no per-step host copies);
    the crop positions come from a CPU generator, so CPU and GPU runs see the same crops.
    """
    from tqdm import tqdm

    from itertools import islice

    recipe = recipe or ReconstructionRecipe()
    if pairs is None:
        pairs = obfuscate_frames(transform, islice(train_frames, recipe.max_train_frames))
    clean, obf = pairs
    if recipe.max_train_frames:
        clean, obf = clean[: recipe.max_train_frames], obf[: recipe.max_train_frames]
    device = torch.device(device)
    clean, obf = clean.to(device), obf.to(device)
    model = recipe.build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    ckpt = Path(checkpoint) if checkpoint else None
    start, history = _resume_attacker(ckpt, model, opt, recipe, method)
    gen = torch.Generator().manual_seed(recipe.seed + 1000 * start)
    steps_per_epoch = max(1, math.ceil(len(clean) * recipe.crops_per_frame / recipe.batch_size))
    bar = tqdm(total=(recipe.epochs - start) * steps_per_epoch, desc=f"reconstruction attacker [{method}]",
               disable=not progress, unit="step", leave=False)
    for epoch in range(start, recipe.epochs):
        mse = _attacker_epoch(model, opt, clean, obf, recipe, gen, steps_per_epoch, bar, epoch)
        history.append({"epoch": epoch + 1, "loss": mse, "psnr": 10 * math.log10(1 / max(mse, 1e-12))})
        if ckpt is not None:
            save_attacker(ckpt, _checkpoint_state(model, opt, epoch + 1, history, recipe, method))
    bar.close()
    return model.eval(), history


def reconstruct(model: nn.Module, obfuscated: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Attacker output for a [N,3,H,W] batch (float [0,1] or uint8), in float [0,1], on the CPU.

    Runs on the model's device (batches of 4 on CPU, 32 on a GPU) and returns CPU tensors.
    """
    device = next(model.parameters()).device
    batch_size = batch_size or (4 if device.type == "cpu" else 32)
    check_image(obfuscated[:1].float() if obfuscated.dtype == torch.uint8 else obfuscated)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(obfuscated), batch_size):
            x = obfuscated[i : i + batch_size].to(device)
            out.append(model(x.float() / 255 if x.dtype == torch.uint8 else x).cpu())
    return torch.cat(out)


def person_mask(boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """HxW bool mask of the union of xyxy boxes (frame pixels; every pixel a box touches counts)."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
        c1, r1 = min(int(math.ceil(x2)), width), min(int(math.ceil(y2)), height)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def region_similarity(original: torch.Tensor, other: torch.Tensor, mask: np.ndarray) -> dict[str, float] | None:
    """PSNR and SSIM of two [3,H,W] [0,1] frames restricted to `mask` (None when the mask is empty).

    PSNR is scikit-image's on the masked pixels; SSIM is the mean of scikit-image's SSIM map (same settings
    as `evaluation.metrics.similarity`: Gaussian sigma 1.5, data range 1) over the masked pixels.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if not mask.any():
        return None
    a = original.detach().float().cpu().numpy().transpose(1, 2, 0).astype(np.float64)
    b = other.detach().float().cpu().numpy().transpose(1, 2, 0).astype(np.float64)
    _, smap = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    am, bm = a[mask], b[mask]
    psnr = float("inf") if np.array_equal(am, bm) else float(peak_signal_noise_ratio(am, bm, data_range=1.0))
    return {"psnr": psnr, "ssim": float(smap[mask].mean()), "pixels": int(mask.sum())}


def _mean(rows: Sequence[Mapping[str, float] | None], key: str) -> float:
    vals = np.array([r[key] for r in rows if r is not None], dtype=float)
    vals = vals[np.isfinite(vals)]  # PSNR is inf on an exact copy
    return float(vals.mean()) if len(vals) else float("inf")


def _map_frames(fn: Callable[[int], Any], n: int, workers: int) -> list[Any]:
    # scikit-image metrics dominate the evaluation on a GPU machine; threads overlap the parts that drop the GIL
    if workers <= 1 or n <= 1:
        return [fn(i) for i in range(n)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, range(n)))


def score_frames(
    clean: torch.Tensor,
    others: torch.Tensor,
    boxes: Sequence[Any] | None = None,
    prefix: str = "",
    workers: int = 0,
) -> dict[str, float]:
    """Mean PSNR/SSIM/MSE/NMI of `others` vs `clean` frames (uint8 or float [N,3,H,W], or one [3,H,W] for all).

    With per-frame GT `boxes`, also `person_psnr`/`person_ssim` over the pixels of the person boxes (frames
    without a person are skipped; `person_frames` counts the rest). Keys carry `prefix`.
    """
    from silhouette.evaluation.metrics import similarity

    def as_float(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255 if x.dtype == torch.uint8 else x

    n = len(clean)
    shared = others.ndim == 3  # one frame (the scene prior) against every clean frame
    if not shared and len(others) != n:
        raise SilhouetteError(f"score_frames: {n} clean frames but {len(others)} to compare")
    if boxes is not None and len(boxes) != n:
        raise SilhouetteError(f"score_frames: {n} frames but boxes for {len(boxes)}")
    H, W = clean.shape[-2:]

    def one(i: int) -> tuple[dict[str, float], dict[str, float] | None]:
        c, o = as_float(clean[i]), as_float(others if shared else others[i])
        region = region_similarity(c, o, person_mask(boxes[i], H, W)) if boxes is not None else None
        return similarity(c, o), region

    workers = workers or min(8, max(1, torch.get_num_threads()))
    pairs = _map_frames(one, n, workers)
    whole = [p[0] for p in pairs]
    out = {f"{prefix}{k}": _mean(whole, k) for k in ("psnr", "ssim", "mse", "nmi")}
    if boxes is not None:
        regions = [p[1] for p in pairs]
        out[f"{prefix}person_psnr"] = _mean(regions, "psnr")
        out[f"{prefix}person_ssim"] = _mean(regions, "ssim")
        out[f"{prefix}person_frames"] = sum(r is not None for r in regions)
    return out


def scene_prior_floor(train_frames: torch.Tensor, test_frames: torch.Tensor, test_boxes: Sequence[Any] | None = None,
                      workers: int = 0) -> dict[str, Any]:
    """Scores of the zero-information attacker: the per-pixel mean train frame output for every test frame.

    On a static camera this needs nothing from the obfuscated frame, so a reconstruction is only informative
    where it beats these numbers (uint8 or float [N,3,H,W] stacks; the mean is taken in float64).
    """
    if len(train_frames) == 0 or len(test_frames) == 0:
        raise SilhouetteError("scene prior: no train or test frames")
    mean = train_frames.double().mean(0)
    mean = (mean / 255 if train_frames.dtype == torch.uint8 else mean).float()
    return {**score_frames(test_frames, mean, test_boxes, workers=workers), "train_frames": len(train_frames),
            "test_frames": len(test_frames), "what": "per-pixel mean of the train frames, output for every test frame"}


def evaluate_attacker(
    model: nn.Module,
    transform: Transform,
    test_frames: Sequence[torch.Tensor] | torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    boxes: Sequence[Any] | None = None,
    workers: int = 0,
) -> tuple[dict[str, float], torch.Tensor]:
    """Mean PSNR/SSIM (and MSE, NMI) of reconstructions and of the obfuscated frames themselves vs the originals.

    With per-frame GT person `boxes` the reconstructions are also scored on person pixels only
    (`person_psnr`, `person_ssim`): on a static camera the background is public, people are the question.
    Returns (metrics, reconstructions [N,3,H,W] float, CPU).
    """
    clean, obf = pairs if pairs is not None else obfuscate_frames(transform, list(test_frames))
    rec = reconstruct(model, obf)
    metrics = score_frames(clean, rec, boxes, workers=workers)
    metrics.update(score_frames(clean, obf, prefix="obfuscated_", workers=workers))
    metrics["n_frames"] = len(rec)
    return metrics, rec


def run_reconstruction_attack(
    transform: Transform,
    train_frames: Iterable[torch.Tensor],
    test_frames: Iterable[torch.Tensor],
    recipe: ReconstructionRecipe | None = None,
    checkpoint: str | Path | None = None,
    method: str = "method",
    progress: bool = True,
    reference_params: int | None = None,
    device: str | torch.device = "cpu",
    test_boxes: Sequence[Any] | None = None,
) -> tuple[dict[str, Any], AttackerUNet]:
    """Train (or resume) the attacker on train frames and score it on test frames; the result records the recipe.

    `test_boxes` (GT person boxes per test frame) add the person-region scores; `device` runs the attacker.
    """
    from itertools import islice

    recipe = recipe or ReconstructionRecipe()
    test = list(islice(test_frames, recipe.max_test_frames))
    if test_boxes is not None:
        test_boxes = list(test_boxes)[: len(test)]
    train_pairs = obfuscate_frames(transform, islice(train_frames, recipe.max_train_frames))
    model, history = train_attacker(transform, [], recipe, checkpoint, method, progress, pairs=train_pairs, device=device)
    metrics, _ = evaluate_attacker(model, transform, test, boxes=test_boxes)
    params = count_params(model)
    result: dict[str, Any] = {
        "method": method,
        "recipe": recipe.to_dict(),
        "attacker_params": params,
        "deobfuscator_params": reference_params,
        "train_frames": len(train_pairs[0]),
        "test": metrics,
        "history": history,
    }
    if reference_params is not None and params <= reference_params:
        log.warning("attacker (%d params) is not larger than the deobfuscator (%d params)", params, reference_params)
    return result, model
