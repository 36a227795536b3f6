"""Matplotlib figures of the report, each written atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from silhouette.detectors.base import Detections


def _plt():  # noqa: ANN202 - matplotlib.pyplot
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _save(fig: Any, path: Path) -> None:
    from silhouette.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)


def picture_row(path: Path, original: torch.Tensor, panels: Sequence[tuple[str, torch.Tensor]], title: str = "") -> None:
    """One frame: the original, then each method's version side by side."""
    plt = _plt()
    items = [("Original", original)] + list(panels)
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 2.6))
    for ax, (label, img) in zip(np.atleast_1d(axes), items):
        ax.imshow(_hwc(img))
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, Path(path))


def ap_vs_macs(path: Path, points: Sequence[dict[str, Any]], title: str = "") -> None:
    """Relative person AP50 against obfuscator MACs (log scale), one labelled point per checkpoint."""
    plt = _plt()
    pts = sorted(points, key=lambda p: p["macs"])
    x = [p["macs"] / 1e9 for p in pts]
    y = [100 * p["relative"]["ap50"] if p["relative"]["ap50"] == p["relative"]["ap50"] else np.nan for p in pts]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, y, "o-")
    for xi, yi, p in zip(x, y, pts):
        ax.annotate(str(p["label"]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("obfuscator MACs per frame (G)")
    ax.set_ylabel("person AP50 (%)")
    ax.set_ylim(0, 105)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, Path(path))


def example_grid(
    path: Path,
    originals: torch.Tensor,
    obfuscated: torch.Tensor,
    reconstructed: torch.Tensor | None,
    boxes: Sequence[Detections] | None = None,
    title: str = "",
) -> None:
    """Rows original / obfuscated (with person boxes) / reconstructed, one column per frame."""
    plt = _plt()
    rows = [("original", originals), ("obfuscated", obfuscated)]
    if reconstructed is not None:
        rows.append(("reconstructed", reconstructed))
    n = len(originals)
    fig, axes = plt.subplots(len(rows), n, figsize=(2.6 * n, 1.8 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(_hwc(imgs[c]))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if label == "obfuscated" and boxes is not None:
                for x1, y1, x2, y2 in boxes[c].boxes.tolist():
                    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=0.8))
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, Path(path))
