"""Classic obfuscation baselines (blur, noise, colour quantisation, pixelation, downscaling, grey pixelation) and
AP-matched tuning.

The paper compares its obfuscator with these at *matched utility*: each method's parameter is set so
that the detector reaches the same person AP50 as on our obfuscated frames, then the similarity of
the obfuscated frames to the originals is compared (Table 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError
from silhouette.imaging import check_image


def blur_kernel_size(sigma: float) -> int:
    """Odd Gaussian kernel size covering ±3σ (1 means no blur)."""
    return 1 if sigma <= 0 else 2 * math.ceil(3.0 * float(sigma)) + 1


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation `sigma` pixels (kernel 2⌈3σ⌉+1, reflect-101 borders)."""
    import cv2
    import numpy as np

    check_image(images)
    if sigma < 0:
        raise SilhouetteError(f"blur sigma must be >= 0, got {sigma}")
    k = blur_kernel_size(sigma)
    if k == 1:
        return images.clone()
    # OpenCV's separable filter: a 97x97 kernel costs 2x97 taps per pixel instead of 97²
    out = np.empty(tuple(images.shape[:1]) + tuple(images.shape[2:]) + (3,), dtype=np.float32)
    arr = images.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    for i in range(arr.shape[0]):
        out[i] = cv2.GaussianBlur(arr[i], (k, k), float(sigma), borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype).clamp(0.0, 1.0)


def gaussian_noise(images: torch.Tensor, factor: float, seed: int = 0) -> torch.Tensor:
    """Add N(0, factor²) noise per pixel and channel, clipped to [0, 1]; seeded so results are repeatable."""
    check_image(images)
    if factor < 0:
        raise SilhouetteError(f"noise factor must be >= 0, got {factor}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen, dtype=torch.float32).to(images.device, images.dtype)
    return (images + float(factor) * noise).clamp(0.0, 1.0)


def quantize_colours(images: torch.Tensor, levels: float) -> torch.Tensor:
    """Keep `levels` evenly spaced values per channel (256 = unchanged 8-bit colour)."""
    check_image(images)
    n = int(round(levels))
    if n < 2:
        raise SilhouetteError(f"colour quantisation needs >= 2 levels per channel, got {levels}")
    return torch.round(images.clamp(0.0, 1.0) * (n - 1)) / (n - 1)


def pixelate(images: torch.Tensor, block: float) -> torch.Tensor:
    """Average over `block`×`block` pixel cells, then blow the cells back up (nearest)."""
    check_image(images)
    b = int(round(block))
    if b < 1:
        raise SilhouetteError(f"pixelation block size must be >= 1, got {block}")
    if b == 1:
        return images.clone()
    h, w = images.shape[-2:]
    small = F.adaptive_avg_pool2d(images, (max(1, math.ceil(h / b)), max(1, math.ceil(w / b))))
    return F.interpolate(small, size=(h, w), mode="nearest")


def downscale(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Shrink by `factor` (area averaging) and scale back up bilinearly: a low-resolution camera."""
    check_image(images)
    if factor < 1:
        raise SilhouetteError(f"downscale factor must be >= 1, got {factor}")
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def grey_pixelate(images: torch.Tensor, block: float) -> torch.Tensor:
    """Luma only (BT.601), pixelated in `block`×`block` cells: no colour and little resolution leave the camera."""
    check_image(images)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    grey = (images * weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    return pixelate(grey, block)


def fold(images: torch.Tensor, folds: float = 1) -> torch.Tensor:
    """Fold every channel's intensity axis `folds` times into tents: 1 fold is 2·min(x, 1−x), the training warm start.

    A pointwise map that keeps edges (detectors still see shapes) but makes dark and bright colours collide;
    k folds map 2k intensities onto each output value.
    """
    check_image(images)
    k = int(round(folds))
    if k < 1:
        raise SilhouetteError(f"intensity folding needs >= 1 fold, got {folds}")
    frac = torch.remainder(images.clamp(0.0, 1.0) * k, 1.0)
    # frac(k·x) is 0 at both ends of each tent, so the map stays continuous across fold boundaries; written as
    # 2·min(f, 1−f), not 1 − |2f − 1| (which rounds differently below 0.25), because for one fold f is x itself and the
    # shipped checkpoints were warm-started on exactly these values: they retrain bit for bit
    return 2.0 * torch.minimum(frac, 1.0 - frac)


@dataclass(frozen=True)
class Baseline:
    """One obfuscation method: its function, parameter name and range, and which way is stronger."""

    name: str
    label: str
    param: str
    apply: Callable[[torch.Tensor, float], torch.Tensor]
    low: float
    high: float
    # True when a larger parameter obfuscates more (blur, noise, pixelation); False for quantisation
    increasing: bool
    values: tuple[float, ...] | None = None  # discrete parameter values in ascending order, else continuous
    describe: Callable[[float], str] = field(default=lambda p: f"{p:g}")

    def strength_grid(self) -> Sequence[float] | None:
        """Discrete values ordered from weakest to strongest obfuscation, or None if continuous."""
        if self.values is None:
            return None
        return list(self.values) if self.increasing else list(reversed(self.values))

    def weakest(self) -> float:
        """The parameter value that changes the frame least."""
        return self.low if self.increasing else self.high

    def strongest(self) -> float:
        """The parameter value that obfuscates most within the searched range."""
        return self.high if self.increasing else self.low


def _whole(low: int, high: int) -> tuple[float, ...]:
    """Every whole parameter value from `low` to `high`: the grid of a discrete baseline."""
    return tuple(float(v) for v in range(low, high + 1))


def _blur_text(sigma: float) -> str:
    """How a blur setting reads in tables."""
    return f"σ = {sigma:.2f} px (kernel {blur_kernel_size(sigma)}×{blur_kernel_size(sigma)})"


def _levels_text(levels: float) -> str:
    """How a quantisation setting reads in tables."""
    return f"{int(levels)} values per channel"


def _folds_text(folds: float) -> str:
    """How a fold setting reads in tables."""
    return f"{int(folds)} fold{'s' if int(folds) > 1 else ''} of each channel"


# name, label, parameter, function, range, stronger when larger, discrete grid, how a parameter value reads
BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("blur", "Gaussian blur", "sigma", gaussian_blur, 0.0, 16.0, True, None, _blur_text),
    Baseline("noise", "Gaussian noise", "factor", gaussian_noise, 0.0, 1.0, True, None, lambda p: f"noise σ = {100 * p:.1f}%"),
    Baseline("quantize", "Colour quantisation", "levels", quantize_colours, 2, 256, False, _whole(2, 256), _levels_text),
    Baseline("pixelate", "Pixelation", "block", pixelate, 1, 64, True, _whole(1, 64), lambda p: f"{int(p)}×{int(p)} px blocks"),
    Baseline("downscale", "Downscaling", "factor", downscale, 1.0, 32.0, True, None, lambda p: f"1/{p:g} resolution, bilinear back up"),
    Baseline("greypix", "Grey pixelation", "block", grey_pixelate, 1, 64, True, _whole(1, 64), lambda p: f"grey, {int(p)}×{int(p)} px blocks"),
    # not a classic baseline: the zero-MAC pointwise map the training warm-starts the obfuscator on, so a learned
    # obfuscator can be judged against where its training began
    Baseline("fold", "Intensity folding", "folds", fold, 1, 32, True, _whole(1, 32), _folds_text),
)}


def get_baseline(name: str) -> Baseline:
    """The baseline registered as `name`, or a clear error listing the choices."""
    if name not in BASELINES:
        raise SilhouetteError(f"unknown baseline {name!r}; choose from: {', '.join(BASELINES)}")
    return BASELINES[name]


class BaselineModule(nn.Module):
    """A classic baseline ('pixelate:4') as a parameter-free module, so training and evaluation code can run it."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        method, _, param = spec.partition(":")
        self.base = get_baseline(method.strip())
        try:
            self.value = float(param)
        except ValueError:
            raise SilhouetteError(f"--baseline {spec!r}: expected METHOD:NUMBER, e.g. pixelate:4") from None
        if not self.base.low <= self.value <= self.base.high:
            raise SilhouetteError(f"--baseline {spec!r}: {self.base.param} must be within [{self.base.low:g}, {self.base.high:g}]")
        self.spec = f"{self.base.name}:{self.value:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline applied to a [B,3,H,W] batch."""
        return self.base.apply(x, self.value)


def apply_baseline(name: str, images: torch.Tensor, param: float) -> torch.Tensor:
    """Apply baseline `name` with `param` to a [B,3,H,W] batch in [0,1]."""
    return get_baseline(name).apply(images, param)


@dataclass
class TuneResult:
    """Outcome of matching a baseline's AP50 to a target."""

    method: str
    param: float
    ap50: float
    ap: float
    target_ap: float
    reached: bool  # |ap50 - target| <= tol
    history: list[tuple[float, float]]  # (param, ap50) in evaluation order

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"method": self.method, "param": self.param, "ap50": self.ap50, "ap": self.ap,
                "target_ap": self.target_ap, "reached": self.reached,
                "history": [[p, a] for p, a in self.history]}


def predict_all(detector: Detector, frames: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 8) -> list[Detections]:
    """Detector predictions for every frame, in batches."""
    out: list[Detections] = []
    batch = frames if isinstance(frames, torch.Tensor) else torch.stack(list(frames))
    with torch.no_grad():
        for i in range(0, len(batch), batch_size):
            out.extend(detector.predict(batch[i : i + batch_size]))
    return out


def _search_space(base: Baseline, grid: Sequence[float] | None) -> tuple[Callable[[Any], float], Any, Any,
                                                                         Callable[[Any, Any], Any],
                                                                         Callable[[Any, Any], bool]]:
    """How tune_baseline bisects: (value of a position, weak end, strong end, midpoint, nothing left between).

    A discrete baseline is bisected over indices of its weak-to-strong grid, a continuous one over the parameter.
    """
    if grid is not None:
        return (lambda i: grid[i]), 0, len(grid) - 1, (lambda a, b: (a + b) // 2), (lambda a, b: b - a <= 1)
    return (lambda x: x), base.weakest(), base.strongest(), (lambda a, b: 0.5 * (a + b)), (lambda a, b: False)


def tune_baseline(method: str | Baseline, frames: torch.Tensor | Sequence[torch.Tensor], detector: Detector,
                  target_ap: float, reference_dets: Sequence[Detections], tol: float = 0.02, max_evals: int = 14,
                  batch_size: int = 8) -> TuneResult:
    """Bisect the baseline's parameter until person AP50 (vs `reference_dets`) is within `tol` of `target_ap`.

    AP falls as obfuscation strength grows, so the search keeps a weak end (AP above target) and a
    strong end (AP below target). When the target lies outside what the range can reach, the closest
    end is returned with `reached=False`.
    """
    from silhouette.evaluation.metrics import person_ap

    base = get_baseline(method) if isinstance(method, str) else method
    frames_t = frames if isinstance(frames, torch.Tensor) else torch.stack(list(frames))
    if len(frames_t) != len(reference_dets):
        raise SilhouetteError(f"tune_baseline: {len(frames_t)} frames but {len(reference_dets)} reference detections")
    if not 0.0 <= target_ap <= 1.0 or math.isnan(target_ap):
        raise SilhouetteError(f"tune_baseline: target AP must be in [0, 1], got {target_ap}")
    cache: dict[float, dict[str, float]] = {}
    history: list[tuple[float, float]] = []

    def evaluate(p: float) -> dict[str, float]:
        if p not in cache:
            with torch.no_grad():
                preds = predict_all(detector, base.apply(frames_t, p), batch_size)
            cache[p] = person_ap(preds, reference_dets)
            history.append((p, cache[p]["ap50"]))
        return cache[p]

    def gap(p: float) -> float:
        return abs(evaluate(p)["ap50"] - target_ap)

    def result(p: float) -> TuneResult:
        r = evaluate(p)
        return TuneResult(base.name, float(p), r["ap50"], r["ap"], float(target_ap), gap(p) <= tol, history)

    grid = base.strength_grid()
    value, lo, hi, middle, narrowest = _search_space(base, grid)
    if evaluate(value(lo))["ap50"] <= target_ap + tol:
        return result(value(lo))  # even the weakest setting is at or below target
    if evaluate(value(hi))["ap50"] >= target_ap - tol:
        return result(value(hi))  # cannot obfuscate enough to go lower
    best = value(lo)
    for _ in range(max(0, max_evals - 2)):
        if narrowest(lo, hi):
            break
        mid = middle(lo, hi)
        p = value(mid)
        best = p if gap(p) < gap(best) else best
        if gap(p) <= tol:
            return result(p)
        lo, hi = (mid, hi) if evaluate(p)["ap50"] > target_ap else (lo, mid)  # too weak: move the weak end up
    # a discrete search's last bracket ends, already evaluated, may be closer than any midpoint
    for p in (value(lo), value(hi)) if grid is not None else ():
        best = p if gap(p) < gap(best) else best
    return result(best)
