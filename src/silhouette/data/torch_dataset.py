"""`FrameDataset`: a prepared dataset as a torch Dataset, plus a DataLoader collate function."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import Dataset

from silhouette.data.manifest import load_manifest, select_records
from silhouette.errors import SilhouetteError


class FrameDataset(Dataset):
    """Frames of a prepared dataset (optionally one split / some cameras) as float RGB [0, 1] tensors.

    Items are dicts: image [3,H,W], index, file, camera, frame_index, gt_boxes [K,4] xyxy, gt_ids [K].
    With `pseudo_labels` (from `load_pseudo_labels`) items also carry target_boxes [M,4] and target_scores [M].
    `transform` is applied to the image tensor only, so it must not move pixels if boxes are used.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        cameras: list[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        pseudo_labels: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.size = tuple(self.manifest["size"])  # (W, H)
        self.split = split
        self.records = select_records(self.manifest, split, cameras)
        self.transform = transform
        if pseudo_labels is not None:
            missing = [r["file"] for r in self.records if r["file"] not in pseudo_labels]
            if missing:
                raise SilhouetteError(
                    f"pseudo-labels do not cover {len(missing)} frame(s) of {self.root} (e.g. {missing[0]}); "
                    "rebuild them with `silhouette label`"
                )
        self.pseudo_labels = pseudo_labels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import cv2

        from silhouette.imaging import bgr_to_tensor

        if not -len(self) <= i < len(self):
            raise IndexError(i)
        rec = self.records[i]
        path = self.root / rec["file"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SilhouetteError(f"{path}: frame missing or unreadable; re-run `silhouette prepare` for {self.root}")
        image = bgr_to_tensor(bgr)
        if self.transform is not None:
            image = self.transform(image)
        boxes = rec["gt_boxes"] or []
        ids = rec["gt_ids"] or []
        item: dict[str, Any] = {
            "image": image,
            "index": i if i >= 0 else len(self) + i,
            "file": rec["file"],
            "camera": rec["camera"],
            "frame_index": int(rec["frame_index"]),
            "gt_boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "gt_ids": torch.tensor(ids, dtype=torch.long).reshape(-1),
        }
        if self.pseudo_labels is not None:
            det = self.pseudo_labels[rec["file"]]
            item["target_boxes"] = det.boxes.float().reshape(-1, 4)
            item["target_scores"] = det.scores.float().reshape(-1)
        return item


def collate_frames(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader collate: stack images into [B,3,H,W], index/frame_index into tensors, keep boxes as lists."""
    if not items:
        raise SilhouetteError("collate_frames got an empty batch")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == "image":
            out[key] = torch.stack(values)
        elif key in ("index", "frame_index"):
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out
