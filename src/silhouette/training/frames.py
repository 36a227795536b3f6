"""The training frames held in memory (uint8, with GT persons) and their detection targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from silhouette.detectors.base import Detections, Detector
from silhouette.errors import SilhouetteError
from silhouette.training.augment import move_boxes

if TYPE_CHECKING:
    from silhouette.training.config import DataConfig


@dataclass
class FrameSet:
    """Frames held in memory as uint8 [N,3,H,W] with their files, (full-frame) pseudo-labels and GT persons."""

    images: torch.Tensor
    files: list[str]
    labels: list[Detections] = field(default_factory=list)
    people: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # GT boxes [K,4], identity ids [K]

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, idx: Sequence[int]) -> torch.Tensor:
        """Float [0,1] images for these indices."""
        return self.images[list(idx)].float().div_(255.0)


def load_frame_set(root: Path, split: str | None, stride: int = 1, limit: int = 0, exclude: Sequence[str] = (),
                   per_camera: int = 0) -> FrameSet:
    """Read one split (None: all) of a prepared dataset into memory: every `stride`-th frame of each camera not in
    `exclude`, at most `per_camera` of them evenly spaced (0 = all), the first `limit` in all (0 = all)."""
    from silhouette.data.torch_dataset import FrameDataset

    ds = FrameDataset(root, split=split)
    by_camera: dict[str, list[int]] = {}
    for i, rec in enumerate(ds.records):
        if rec["camera"] not in exclude:
            by_camera.setdefault(rec["camera"], []).append(i)
    idx = sorted(i for cam in by_camera.values() for i in evenly(cam[::stride], per_camera))
    if limit:
        idx = idx[:limit]
    if not idx:
        left = f", without cameras {', '.join(exclude)}" if exclude else ""
        raise SilhouetteError(f"{root}: split {split or 'all'!r} has no frames after data.frame_stride={stride}{left}")
    items = [ds[i] for i in idx]
    images = torch.stack([(it["image"] * 255.0).round().to(torch.uint8) for it in items])
    people = [(it["gt_boxes"].float().reshape(-1, 4), it["gt_ids"].long().reshape(-1)) for it in items]
    return FrameSet(images, [it["file"] for it in items], people=people)


def load_sources(data: "DataConfig", root: Path) -> list[tuple[Path, str | None, FrameSet]]:
    """(root, split or None for all, frames) of every training source: `root`'s train split, then data.extra_roots."""
    def frames(r: Path, split: str | None) -> FrameSet:
        return load_frame_set(r, split, data.frame_stride, data.max_train_frames, data.exclude_cameras, data.max_per_camera)

    main = None if data.train_split == "all" else data.train_split  # 'all': every split of the dataset
    out = [(root, main, frames(root, main))]
    for extra, split in data.extra_sources():
        if not (Path(extra) / "manifest.json").is_file():
            raise SilhouetteError(f"data.extra_roots: {extra} holds no prepared dataset; run silhouette prepare first")
        out.append((Path(extra), split, frames(Path(extra), split)))
    return out


def source_labels(sources: Sequence[tuple[Path, str | None, FrameSet]], spec: str, threshold: float) -> list[Detections]:
    """The clean-frame pseudo-labels of every source's frames, in the order `concat` puts them."""
    return [lab for root, split, fs in sources for lab in pseudo_labels(root, fs, spec, threshold, split)]


def evenly(items: list[int], n: int) -> list[int]:
    """`n` evenly spaced entries of `items` (all of them when n is 0 or covers them)."""
    if not n or n >= len(items):
        return items
    return [items[round(k * (len(items) - 1) / max(n - 1, 1))] for k in range(n)]


def concat(sets: Sequence[FrameSet]) -> FrameSet:
    """Several frame sets (of one frame size) as one, in order, each frame with its own labels and people."""
    sizes = {tuple(s.images.shape[-2:]) for s in sets}
    if len(sizes) > 1:
        raise SilhouetteError(f"data.extra_roots: frames of different sizes {sorted(sizes)}; prepare every source "
                              "at the same --size")
    return FrameSet(torch.cat([s.images for s in sets]), [f for s in sets for f in s.files],
                    [lab for s in sets for lab in s.labels], [p for s in sets for p in s.people])


def person_targets(dets: Sequence[Detections], threshold: float) -> list[Detections]:
    """Person boxes at or above the pseudo-label threshold."""
    return [d.persons(threshold) for d in dets]


def predict_batched(detector: Detector, images: torch.Tensor, batch_size: int = 8) -> list[Detections]:
    """Detector predictions over a float [N,3,H,W] tensor in chunks, moved to the CPU."""
    out: list[Detections] = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            for d in detector.predict(images[i : i + batch_size]):
                out.append(Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()))
    return out


def pseudo_labels(root: Path, frames: FrameSet, spec: str, threshold: float, split: str | None) -> list[Detections]:
    """Clean-frame person pseudo-labels: from the dataset's label cache, computed there on first use."""
    from silhouette.data.labels import ensure_pseudo_labels

    cache = ensure_pseudo_labels(root, spec, threshold, split=split, progress=False)
    missing = [f for f in frames.files if f not in cache]
    if missing:
        raise SilhouetteError(f"pseudo-label cache of {root} lacks {len(missing)} frame(s), e.g. {missing[0]}")
    return person_targets([cache[f] for f in frames.files], threshold)


def gt_targets(frames: FrameSet, root: Path, split: str) -> list[Detections]:
    """Human person boxes of each frame as detection targets (score 1, person); a clear error for footage without GT."""
    if not any(len(boxes) for boxes, _ in frames.people):
        raise SilhouetteError(f"detector.targets: gt needs human person boxes, and split {split!r} of {root} has none; "
                              "use detector.targets: pseudo")
    return [Detections.of_people(b.clone()) for b, _ in frames.people]


def gt_crop_targets(frames: FrameSet, idx: Sequence[int], geometry: Sequence[tuple[int, int, bool]],
                    size: Sequence[int]) -> list[Detections]:
    """Human boxes moved into each crop; a person mostly outside it is no target (nor a negative: it is dropped)."""
    out = []
    for k, i in enumerate(idx):
        moved, keep = move_boxes(frames.people[i][0], *geometry[k], size, min_height=4.0)
        out.append(Detections.of_people(moved[keep]))
    return out
