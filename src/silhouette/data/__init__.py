"""silhouette.data: footage ingestion, prepared frame datasets and the pseudo-label cache.

Names are loaded lazily so that `silhouette --help` does not import torch or OpenCV.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "sources": "Frame iter_frames open_source count_frames resize_frame parse_size",
    "datasets": "DATASETS prepare_dataset create_dataset dataset_names split_by_time split_by_camera",
    "manifest": "load_manifest select_records",
    "torch_dataset": "FrameDataset collate_frames",
    "labels": "build_pseudo_labels load_pseudo_labels ensure_pseudo_labels labels_path",
})
