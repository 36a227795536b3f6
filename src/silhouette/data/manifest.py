"""The prepared-dataset manifest: `manifest.json` (authoritative) and `manifest.csv` (for humans)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from silhouette.errors import SilhouetteError
from silhouette.fileio import write_csv, write_json

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
SPLITS = ("train", "val", "test")
RECORD_KEYS = ("file", "source", "camera", "frame_index", "timestamp", "split", "gt_boxes", "gt_ids")
CSV_COLUMNS = ("file", "source", "camera", "frame_index", "timestamp", "split", "gt_count")


def manifest_path(root: str | Path) -> Path:
    """Where the manifest of a prepared dataset lives."""
    return Path(root) / MANIFEST_JSON


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check `root/manifest.json`; clear error if missing or corrupt."""
    root = Path(root)
    path = manifest_path(root)
    if not root.is_dir():
        raise SilhouetteError(f"{root}: dataset folder not found; create it with `silhouette prepare DATASET --out {root}`")
    if not path.is_file():
        raise SilhouetteError(
            f"{path}: no manifest (not a prepared dataset, or `silhouette prepare` was interrupted); "
            f"run `silhouette prepare DATASET --out {root}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SilhouetteError(f"{path}: corrupt manifest ({exc}); re-run `silhouette prepare ... --force`") from exc
    _check_manifest(data, path)
    return data


def _check_manifest(data: Any, path: Path) -> None:
    """Raise a clear error if `data` does not have the manifest layout."""

    def bad(what: str) -> SilhouetteError:
        return SilhouetteError(f"{path}: corrupt manifest ({what}); re-run `silhouette prepare ... --force`")

    if not isinstance(data, dict):
        raise bad("top level is not an object")
    for key in ("dataset", "size", "created_with", "frames"):
        if key not in data:
            raise bad(f"missing key {key!r}")
    size = data["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise bad(f"'size' must be [W, H], got {size!r}")
    if not isinstance(data["frames"], list):
        raise bad("'frames' is not a list")
    for i, rec in enumerate(data["frames"]):
        if not isinstance(rec, dict):
            raise bad(f"frames[{i}] is not an object")
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise bad(f"frames[{i}] lacks {', '.join(missing)}")
        boxes, ids = rec["gt_boxes"], rec["gt_ids"]
        if boxes is not None and (not isinstance(boxes, list) or any(not isinstance(b, list) or len(b) != 4 for b in boxes)):
            raise bad(f"frames[{i}].gt_boxes must be null or a list of [x1,y1,x2,y2]")
        if ids is not None and (not isinstance(ids, list) or boxes is None or len(ids) != len(boxes)):
            raise bad(f"frames[{i}].gt_ids must be null or match gt_boxes")


def select_records(
    manifest: dict[str, Any], split: str | None = None, cameras: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Frame records of one split and/or some cameras, in manifest order; errors name what exists."""
    records = manifest["frames"]
    if split is not None:
        present = sorted({r["split"] for r in records})
        if split not in present:
            raise SilhouetteError(f"split {split!r} has no frames in this dataset; present splits: {', '.join(present) or 'none'}")
        records = [r for r in records if r["split"] == split]
    if cameras is not None:
        wanted = list(cameras)
        present_cams = {r["camera"] for r in manifest["frames"]}
        unknown = [c for c in wanted if c not in present_cams]
        if unknown:
            raise SilhouetteError(f"unknown camera(s) {', '.join(unknown)}; dataset has: {', '.join(sorted(present_cams))}")
        records = [r for r in records if r["camera"] in set(wanted)]
    return records


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.csv, then manifest.json last (its presence marks a complete dataset)."""
    root = Path(root)
    write_csv(root / MANIFEST_CSV, CSV_COLUMNS,
              ([rec["file"], rec["source"], rec["camera"], rec["frame_index"], f"{rec['timestamp']:.6f}", rec["split"],
                "" if rec.get("gt_boxes") is None else len(rec["gt_boxes"])] for rec in manifest["frames"]))
    path = manifest_path(root)
    write_json(path, manifest, indent=1)
    return path


def summarize(manifest: dict[str, Any]) -> dict[str, Any]:
    """Frames per split, per camera and split, and GT box count."""
    per_split: dict[str, int] = {}
    per_camera: dict[str, dict[str, int]] = {}
    gt_boxes = 0
    annotated = 0
    for rec in manifest["frames"]:
        per_split[rec["split"]] = per_split.get(rec["split"], 0) + 1
        cam = per_camera.setdefault(rec["camera"], {})
        cam[rec["split"]] = cam.get(rec["split"], 0) + 1
        if rec["gt_boxes"] is not None:
            annotated += 1
            gt_boxes += len(rec["gt_boxes"])
    return {"frames": len(manifest["frames"]), "per_split": per_split, "per_camera": per_camera,
            "annotated_frames": annotated, "gt_boxes": gt_boxes}
