"""Background-subtraction silhouettes in NumPy and OpenCV only: the math the camera runs and evaluation reuses.

A static camera knows its empty scene, the per-pixel median of frames it has seen; a pixel belongs to a person where
some channel differs from it by more than `tau`. The camera sends only the mask (white people on black), so no
original pixel and not even the background leaves it. The camera side keeps its background up to date with
`StreamingBackground`; evaluation and training build fixed backgrounds from prepared footage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STYLES = ("mask", "scene")
MAX_BLOCK = 32  # a coarser cell than a PETS person's width leaves nothing to detect
DEFAULT_TAU = 0.06  # foreground threshold on the max channel difference (covers ~70 % of PETS person-box pixels)
PERSON_GREY = 0.25  # the flat person fill of the `scene` style: about the mean intensity of the people in PETS


def parse_spec(spec: str) -> tuple[str, int]:
    """(style, cell size) of 'bgsub:STYLE[:BLOCK]'; a ValueError says what is wrong."""
    family, _, rest = spec.strip().partition(":")
    style, _, block = rest.partition(":")
    if family != "bgsub" or style not in STYLES:
        raise ValueError(f"{spec}: expected bgsub:mask or bgsub:scene, optionally :BLOCK (e.g. bgsub:mask:4)")
    if not block:
        return style, 1
    if not block.isdigit() or not 1 <= int(block) <= MAX_BLOCK:
        raise ValueError(f"{spec}: BLOCK must be a whole number of pixels from 1 to {MAX_BLOCK}")
    return style, int(block)


def block_masks(masks: np.ndarray, block: int) -> np.ndarray:
    """Masks [N,1,H,W] coarsened to `block`x`block` cells, a cell foreground where at least half of it is: the outline
    of a body (and with it much of who it is) goes, its place and size stay."""
    if block <= 1:
        return masks
    n, c, h, w = masks.shape
    ph, pw = -h % block, -w % block
    padded = np.pad(masks, ((0, 0), (0, 0), (0, ph), (0, pw)))
    cells = padded.reshape(n, c, (h + ph) // block, block, (w + pw) // block, block).mean(axis=(3, 5)) >= 0.5
    full = cells.repeat(block, axis=2).repeat(block, axis=3)
    return full[:, :, :h, :w].astype(masks.dtype)


def median_background(frames: np.ndarray) -> np.ndarray:
    """Per-pixel median [3,H,W] of float frames [N,3,H,W]: the empty scene of a static camera."""
    return np.median(frames, axis=0).astype(np.float32)


def foreground_masks(frames: np.ndarray, backgrounds: np.ndarray, tau: float = DEFAULT_TAU,
                     block: int = 1) -> np.ndarray:
    """Masks [N,1,H,W] in {0,1} of float frames [N,3,H,W] against backgrounds [N or 1,3,H,W], opened and closed, in
    `block`-pixel cells."""
    import cv2

    diff = np.abs(frames - backgrounds).max(axis=1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    out = []
    for d in diff:
        m = (d > tau).astype(np.uint8)
        # opening drops isolated noisy pixels, closing fills pinholes inside a body
        out.append(cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel))
    if not out:
        return np.zeros((0, 1, *frames.shape[-2:]), np.float32)
    return block_masks(np.stack(out).astype(np.float32)[:, None], block)


class StreamingBackground:
    """The camera's silhouette runner: float32 [B,3,H,W] frames in, white-on-black masks out, background learnt live.

    Every `sample_every`-th frame joins a ring of the last `history` samples whose median is the background, so
    people who move on fade out of it and a changed scene fades in. The first frame is its own background: until
    the camera has seen its scene, it sends an empty mask rather than anything of the frame.
    """

    backend = "bgsub"

    def __init__(self, history: int = 25, sample_every: int = 10, tau: float = DEFAULT_TAU,
                 path: Path | None = None, block: int = 1) -> None:
        self.history, self.sample_every, self.tau, self.path = int(history), int(sample_every), float(tau), path
        self.block = int(block)
        self.samples: list[np.ndarray] = []
        self.background: np.ndarray | None = None
        self.seen = 0

    def _observe(self, frame: np.ndarray) -> None:
        """Add a frame to the background samples when it is due, and refresh the median."""
        if self.seen % self.sample_every == 0:
            self.samples = [*self.samples, frame][-self.history :]
            self.background = median_background(np.stack(self.samples))
        self.seen += 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Masks of a batch, each frame against the background before it joined (a person is not their own scene)."""
        out = []
        for frame in np.asarray(batch, dtype=np.float32):
            fresh = self.background is None or self.background.shape != frame.shape
            if fresh:  # the first frame, or a new scene size: start over, the frame its own background
                self.samples, self.background, self.seen = [], None, 0
                self._observe(frame)
            out.append(foreground_masks(frame[None], self.background[None], self.tau, self.block)[0])
            if not fresh:
                self._observe(frame)
        return np.repeat(np.stack(out), 3, axis=1) if out else np.zeros_like(batch, dtype=np.float32)


def read_silhouette_pair(path: str | Path) -> dict[str, Any] | None:
    """The pair.json of a silhouette pair (baseline bgsub:mask), or None for any other file."""
    import json

    path = Path(path)
    if path.suffix != ".json":
        return None
    try:
        pair = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return pair if isinstance(pair, dict) and str(pair.get("baseline", "")).startswith("bgsub:") else None


def pair_runner(path: str | Path) -> StreamingBackground:
    """The camera's runner for a silhouette pair's pair.json: its style's cell size, its own background."""
    pair = read_silhouette_pair(path)
    if pair is None:
        raise ValueError(f"{path}: not a silhouette pair's pair.json")
    style, block = parse_spec(str(pair["baseline"]))
    if style != "mask":  # the scene style would send the camera's background: not a camera output
        raise ValueError(f"{path}: a camera sends bgsub:mask silhouettes; this pair was trained on {pair['baseline']}")
    return StreamingBackground(path=Path(path), block=block)
