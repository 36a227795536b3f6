"""silhouette.data: footage ingestion, prepared frame datasets and the pseudo-label cache.

Names are loaded lazily so that `silhouette --help` does not import torch or OpenCV.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

_EXPORTS = {
    "Frame": "sources",
    "iter_frames": "sources",
    "open_source": "sources",
    "count_frames": "sources",
    "resize_frame": "sources",
    "parse_size": "sources",
    "DATASETS": "datasets",
    "prepare_dataset": "datasets",
    "create_dataset": "datasets",
    "dataset_names": "datasets",
    "split_by_time": "datasets",
    "split_by_camera": "datasets",
    "load_manifest": "manifest",
    "select_records": "manifest",
    "FrameDataset": "torch_dataset",
    "collate_frames": "torch_dataset",
    "build_pseudo_labels": "labels",
    "load_pseudo_labels": "labels",
    "ensure_pseudo_labels": "labels",
    "labels_path": "labels",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
