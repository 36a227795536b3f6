"""Pseudo-label cache: a detector's own person boxes on the clean frames, stored as COCO JSON.

Files live in `<dataset>/labels/<detector>_<threshold>[_<split>].json`. Each records which detector and
threshold made it and a digest of the frames it covers, so a stale cache is never silently reused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from silhouette.data.manifest import load_manifest, select_records
from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    from silhouette.detectors.base import Detections, Detector

LABELS_DIR = "labels"
COCO_PERSON = {"id": 1, "name": "person", "supercategory": "person"}


class PseudoLabelsMissing(SilhouetteError):
    """No pseudo-label file for this detector/threshold/split."""


class PseudoLabelsStale(SilhouetteError):
    """The pseudo-label file no longer matches the frames, detector or threshold."""


def _thr_text(score_threshold: float) -> str:
    return f"{float(score_threshold):g}"


def _check_threshold(score_threshold: float) -> float:
    thr = float(score_threshold)
    if not (0.0 <= thr <= 1.0) or math.isnan(thr):
        raise SilhouetteError(f"--threshold {score_threshold}: must lie in [0, 1]")
    return thr


def labels_path(root: str | Path, detector_spec: str, score_threshold: float, split: str | None = None) -> Path:
    """Cache file for one detector spec, threshold and (optional) split."""
    det = re.sub(r"[^A-Za-z0-9._-]+", "-", detector_spec.replace(" ", "")).strip("-") or "detector"
    suffix = f"_{split}" if split else ""
    return Path(root) / LABELS_DIR / f"{det}_{_thr_text(score_threshold)}{suffix}.json"


def frames_digest(root: str | Path, records: list[dict[str, Any]]) -> str:
    """sha256 over (file, size, mtime_ns) of the frames: changes whenever a frame is rewritten or touched."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in sorted(r["file"] for r in records):
        path = root / rel
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise SilhouetteError(f"{path}: frame listed in the manifest is missing; re-run `silhouette prepare`") from exc
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _label_command(root: str | Path, detector_spec: str, score_threshold: float, split: str | None) -> str:
    cmd = f"silhouette label {root} --detector '{detector_spec}' --threshold {_thr_text(score_threshold)}"
    return cmd + (f" --split {split}" if split else "")


def _prepare_detector(detector: "Detector", score_threshold: float) -> "Detector":
    # the detector's own cut-off must not hide boxes between it and the pseudo-label threshold
    if hasattr(detector, "conf_threshold"):
        detector.conf_threshold = float(score_threshold)
    members = getattr(detector, "members", None)
    if isinstance(members, (list, tuple)):
        for m in members:
            if hasattr(m, "conf_threshold"):
                m.conf_threshold = float(score_threshold)
    return detector


def _add_frame(images: list[dict[str, Any]], annotations: list[dict[str, Any]], file: str, det: "Detections",
               thr: float, size: tuple[int, int]) -> None:
    """Append one frame and its person boxes at or above `thr` as COCO image and annotation entries."""
    W, H = size
    image_id = len(images) + 1
    images.append({"id": image_id, "file_name": file, "width": W, "height": H})
    persons = det.persons(thr)
    for box, score in zip(persons.boxes.tolist(), persons.scores.tolist()):
        x1, y1, x2, y2 = box
        w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
        annotations.append({
            "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
            "bbox": [round(x1, 4), round(y1, 4), round(w, 4), round(h, 4)],
            "area": round(w * h, 4), "score": round(float(score), 6), "iscrowd": 0,
        })


def _label_frames(dataset: Any, detector: "Detector", detector_spec: str, thr: float, batch_size: int,
                  progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The detector over every frame of `dataset`: COCO image and annotation entries."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from silhouette.data.torch_dataset import collate_frames

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_frames, num_workers=0)
    with torch.no_grad(), tqdm(total=len(dataset), desc=f"label {detector_spec}", unit="frame", disable=not progress) as bar:
        for batch in loader:
            dets = detector.predict(batch["image"])
            if len(dets) != len(batch["file"]):
                raise SilhouetteError(f"detector {detector_spec!r} returned {len(dets)} results for {len(batch['file'])} frames")
            for file, det in zip(batch["file"], dets):
                _add_frame(images, annotations, file, det, thr, dataset.size)
            bar.update(len(dets))
    return images, annotations


def build_pseudo_labels(
    root: str | Path,
    detector_spec: str,
    score_threshold: float = 0.3,
    split: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    detector: "Detector | None" = None,
) -> Path:
    """Run the detector over the prepared frames (one split or all) and write the COCO pseudo-label file."""
    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.fileio import write_json

    thr = _check_threshold(score_threshold)
    if batch_size < 1:
        raise SilhouetteError(f"--batch-size {batch_size}: must be >= 1")
    root = Path(root)
    dataset = FrameDataset(root, split=split)
    digest = frames_digest(root, dataset.records)  # of the frames as they are now, before the slow part
    if detector is None:
        from silhouette.detectors.registry import create_detector

        detector = create_detector(detector_spec)
    detector = _prepare_detector(detector, thr)
    images, annotations = _label_frames(dataset, detector, detector_spec, thr, batch_size, progress)
    coco = {
        "info": {
            "description": "silhouette pseudo-labels: detector person boxes on clean frames",
            "detector": detector_spec,
            "score_threshold": thr,
            "split": split,
            "frames_digest": digest,
            "frames": len(images),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "images": images,
        "annotations": annotations,
        "categories": [COCO_PERSON],
    }
    path = labels_path(root, detector_spec, thr, split)
    write_json(path, coco, indent=None)
    return path


def _read_labels(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not all(k in data for k in ("info", "images", "annotations")):
            raise KeyError("info/images/annotations")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise PseudoLabelsStale(f"{path}: corrupt pseudo-label file ({exc}); delete it and re-run `silhouette label`") from exc
    return data


def load_pseudo_labels(
    root: str | Path, detector_spec: str, score_threshold: float = 0.3, split: str | None = None
) -> dict[str, "Detections"]:
    """Cached pseudo-labels keyed by manifest file; raises if missing or stale (never silently reused).

    With `split`, a file built for that split is used, else the all-frames file filtered to the split.
    """
    import torch

    from silhouette.detectors.base import PERSON, Detections

    thr = _check_threshold(score_threshold)
    root = Path(root)
    manifest = load_manifest(root)
    candidates = [(split, labels_path(root, detector_spec, thr, split))]
    if split is not None:
        candidates.append((None, labels_path(root, detector_spec, thr, None)))
    found = next(((s, p) for s, p in candidates if p.is_file()), None)
    if found is None:
        raise PseudoLabelsMissing(
            f"no pseudo-labels of {detector_spec!r} at threshold {_thr_text(thr)} for {root}"
            f"{' split ' + split if split else ''} (looked for {candidates[0][1].name}); "
            f"run `{_label_command(root, detector_spec, thr, split)}`"
        )
    file_split, path = found
    data = _read_labels(path)
    info = data["info"]
    rebuild = f"run `{_label_command(root, detector_spec, thr, file_split)}` to rebuild it"
    if info.get("detector") != detector_spec:
        raise PseudoLabelsStale(f"{path}: made by detector {info.get('detector')!r}, not {detector_spec!r}; {rebuild}")
    if not isinstance(info.get("score_threshold"), (int, float)) or abs(info["score_threshold"] - thr) > 1e-9:
        raise PseudoLabelsStale(f"{path}: made at threshold {info.get('score_threshold')}, not {thr}; {rebuild}")
    covered = select_records(manifest, file_split) if file_split else manifest["frames"]
    if info.get("frames_digest") != frames_digest(root, covered):
        raise PseudoLabelsStale(f"{path}: stale, the frames changed since it was built; {rebuild}")
    wanted = {r["file"] for r in (select_records(manifest, split) if split else manifest["frames"])}
    by_id = {img["id"]: img["file_name"] for img in data["images"]}
    boxes: dict[str, list[list[float]]] = {f: [] for f in by_id.values() if f in wanted}
    scores: dict[str, list[float]] = {f: [] for f in boxes}
    for ann in data["annotations"]:
        file = by_id.get(ann["image_id"])
        if file in boxes:
            x, y, w, h = ann["bbox"]
            boxes[file].append([x, y, x + w, y + h])
            scores[file].append(float(ann.get("score", 1.0)))
    if set(boxes) != wanted:
        raise PseudoLabelsStale(f"{path}: does not cover the dataset's frames; {rebuild}")
    out: dict[str, Detections] = {}
    for file in boxes:
        n = len(boxes[file])
        out[file] = Detections(
            torch.tensor(boxes[file], dtype=torch.float32).reshape(n, 4),
            torch.tensor(scores[file], dtype=torch.float32).reshape(n),
            torch.full((n,), PERSON, dtype=torch.int64),
        )
    return out


def ensure_pseudo_labels(root: str | Path, detector_spec: str, score_threshold: float = 0.3, split: str | None = None,
                         batch_size: int = 8, progress: bool = True) -> dict[str, "Detections"]:
    """Load the cached pseudo-labels, (re)building them first if missing or stale."""
    try:
        return load_pseudo_labels(root, detector_spec, score_threshold, split)
    except (PseudoLabelsMissing, PseudoLabelsStale):
        build_pseudo_labels(root, detector_spec, score_threshold, split, batch_size, progress=progress)
        return load_pseudo_labels(root, detector_spec, score_threshold, split)
