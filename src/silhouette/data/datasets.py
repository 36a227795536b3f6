"""Dataset registry, split helpers and `prepare_dataset` (footage -> resized frames + manifest)."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from silhouette.errors import SilhouetteError
from silhouette.registry import Registry
from silhouette.data.manifest import MANIFEST_CSV, MANIFEST_JSON, SPLITS, load_manifest, write_manifest
from silhouette.data.pets import PETS_SIZE, Annotations, parse_pets_xml
from silhouette.data.sources import (
    FIT_MODES,
    Fit,
    Frame,
    check_sampling,
    list_images,
    list_videos,
    natural_key,
    open_source,
    plan_fit,
    safe_name,
    sample_frames,
    ImageListSource,
    IMAGE_EXTS,
    VIDEO_EXTS,
)
from silhouette.imaging import DEFAULT_SIZE

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
OPTIONS_LOCK = ".prepare-options.json"  # options of the last successful prepare run (written after the manifest)
FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg"}
# dataset option -> the CLI flag users type, for error messages
OPTION_FLAGS = {
    "sources": "--source",
    "camera_pattern": "--camera-pattern",
    "split_fractions": "--split-fractions",
    "split_by": "--split-by",
    "camera_splits": "--camera-split",
    "annotations": "--annotations",
}


# ---------------------------------------------------------------------------------------------- splits
def check_fractions(fractions: Sequence[float], option: str = "--split-fractions") -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise SilhouetteError(f"{option} {','.join(map(str, fractions))}: expected three non-negative fractions train,val,test summing to 1, e.g. 0.7,0.1,0.2")
    return fr  # type: ignore[return-value]


def parse_fractions(text: str, option: str = "--split-fractions") -> tuple[float, float, float]:
    """Parse 'a,b,c' into validated split fractions."""
    try:
        values = [float(t) for t in str(text).split(",")]
    except ValueError as exc:
        raise SilhouetteError(f"{option} {text!r}: expected three comma-separated numbers, e.g. 0.7,0.1,0.2") from exc
    return check_fractions(values, option)


def split_by_time(records: list[dict[str, Any]], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[dict[str, Any]]:
    """Per camera, give the first fraction of frames (by frame index) to train, then val, then test.

    A camera with n frames has its boundaries at round(n * cumulative fraction); sets records' "split".
    """
    fr = check_fractions(fractions)
    by_cam: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_cam.setdefault(rec["camera"], []).append(rec)
    cum = [fr[0], fr[0] + fr[1], 1.0]
    for recs in by_cam.values():
        recs.sort(key=lambda r: r["frame_index"])
        n = len(recs)
        cuts = [int(round(c * n)) for c in cum]
        for pos, rec in enumerate(recs):
            rec["split"] = SPLITS[next(i for i, cut in enumerate(cuts) if pos < cut)]
    return records


def split_by_camera(
    records: list[dict[str, Any]], mapping: Mapping[str, str], default: str | None = None
) -> list[dict[str, Any]]:
    """Put each camera's frames wholly in the split `mapping[camera]` ('*' or `default` for the rest)."""
    mapping = dict(mapping)
    default = mapping.pop("*", default)
    for name, split in list(mapping.items()) + ([("*", default)] if default else []):
        if split not in SPLITS:
            raise SilhouetteError(f"--camera-split {name}={split}: split must be one of {', '.join(SPLITS)}")
    cams = sorted({r["camera"] for r in records})
    missing = [c for c in cams if c not in mapping and default is None]
    if missing:
        raise SilhouetteError(
            f"camera(s) {', '.join(missing)} have no split; add --camera-split CAMERA=train|val|test (or '*=train' for all others)"
        )
    for rec in records:
        rec["split"] = mapping.get(rec["camera"], default)
    return records


def parse_camera_splits(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """Parse ['cam=train', '*=test'] into a mapping (dicts pass through)."""
    if items is None:
        return None
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, str] = {}
    for item in items:
        cam, sep, split = str(item).partition("=")
        if not sep or not cam.strip() or split.strip() not in SPLITS:
            raise SilhouetteError(f"--camera-split {item!r}: expected CAMERA=SPLIT with SPLIT in {', '.join(SPLITS)}")
        out[cam.strip()] = split.strip()
    return out


# -------------------------------------------------------------------------------------------- datasets
@dataclass
class Clip:
    """One piece of footage of one camera, optionally with person ground truth per source frame index."""

    source: Any  # path/URL/webcam index, or an opened Source
    camera: str
    annotations: Annotations | None = None
    annotation_size: tuple[int, int] | None = None  # (W, H) the annotation boxes are in; None = the frame's own size


class DatasetDef:
    """A named footage collection: which clips, which cameras, how frames split into train/val/test."""

    name: ClassVar[str] = "dataset"
    description: ClassVar[str] = ""
    # options this dataset accepts (besides the common size/sampling/format ones)
    accepts: ClassVar[tuple[str, ...]] = ()
    # how frames of another aspect ratio than --size are fitted unless --fit says otherwise
    default_fit: ClassVar[str] = "letterbox"

    def options(self) -> dict[str, Any]:
        """The normalized options recorded in manifest.json['created_with']."""
        raise NotImplementedError

    def clips(self) -> list[Clip]:
        """The footage to decode, in order."""
        raise NotImplementedError

    def assign_splits(self, records: list[dict[str, Any]]) -> None:
        """Set every record's 'split'."""
        raise NotImplementedError

    @classmethod
    def splits_help(cls) -> str:
        """One line saying how this dataset is split by default."""
        return ""


DATASETS: Registry[DatasetDef] = Registry("dataset")


def _abs(p: str | Path) -> str:
    return str(Path(p).expanduser().resolve())


def _default_fractions(fr: Sequence[float] | str | None) -> tuple[float, float, float]:
    if fr is None:
        return DEFAULT_FRACTIONS
    return parse_fractions(fr) if isinstance(fr, str) else check_fractions(fr)


def _fractions_text(fr: Sequence[float]) -> str:
    return " / ".join(f"{s} {f:.0%}" for s, f in zip(SPLITS, fr))


@DATASETS.register("pets2009")
class Pets2009(DatasetDef):
    """PETS 2009 S2.L1 View 001 with Milan et al. person boxes + ids; split by time."""

    name = "pets2009"
    description = "PETS 2009 S2.L1 View 001 (outdoor campus, 795 frames, 4,650 person boxes with 19 identities)"
    accepts = ("sources", "annotations", "split_fractions")
    # the paper's recipe squeezes 768x576 into 320x200: the shipped obfuscators, golden frames and results use it
    default_fit = "stretch"

    def __init__(self, sources: Sequence[str] | None = None, annotations: str | None = None,
                 split_fractions: Sequence[float] | str | None = None) -> None:
        from silhouette.paths import data_dir

        if sources and len(sources) != 1:
            raise SilhouetteError("pets2009 takes at most one --source (the vtest.avi file)")
        self.video = Path(sources[0]) if sources else data_dir() / "pets2009" / "vtest.avi"
        self.xml = Path(annotations) if annotations else data_dir() / "pets2009" / "PETS2009-S2L1.xml"
        for p, what in ((self.video, "video (vtest.avi)"), (self.xml, "ground truth (PETS2009-S2L1.xml)")):
            if not p.is_file():
                raise SilhouetteError(f"{p}: PETS 2009 {what} not found; set SILHOUETTE_SHARED or pass its path")
        self.fractions = _default_fractions(split_fractions)

    def options(self) -> dict[str, Any]:
        return {"video": _abs(self.video), "annotations": _abs(self.xml), "split_by": "time",
                "split_fractions": list(self.fractions)}

    def clips(self) -> list[Clip]:
        return [Clip(str(self.video), "view001", parse_pets_xml(self.xml), PETS_SIZE)]

    def assign_splits(self, records: list[dict[str, Any]]) -> None:
        split_by_time(records, self.fractions)

    @classmethod
    def splits_help(cls) -> str:
        return f"by time: {_fractions_text(DEFAULT_FRACTIONS)} of the frames in order (--split-fractions)"


INTEL_CAMERA_SPLITS = {
    "face-demographics-walking": "test",
    "people-detection": "test",
    "worker-zone-detection": "val",
    "*": "train",  # one-by-one-person-detection, head-pose-face-detection-female-and-male, person-bicycle-car-detection
}


@DATASETS.register("intel")
class Intel(DatasetDef):
    """Intel IoT DevKit sample clips; every clip is its own camera; split by camera (or by time)."""

    name = "intel"
    description = "Intel IoT DevKit sample clips (CC-BY-4.0): 6 fixed cameras, mp4 + GIFs, no annotations"
    accepts = ("split_by", "camera_splits", "split_fractions")
    default_fit = "stretch"  # as pets2009: the shipped results on the Intel cameras were made on stretched frames

    def __init__(self, split_by: str | None = None, camera_splits: Mapping[str, str] | Sequence[str] | None = None,
                 split_fractions: Sequence[float] | str | None = None) -> None:
        from silhouette.paths import data_dir

        self.folder = data_dir() / "intel"
        if not self.folder.is_dir():
            raise SilhouetteError(f"{self.folder}: Intel sample clips not found; set SILHOUETTE_SHARED")
        self.files = list_videos(self.folder)
        if not self.files:
            raise SilhouetteError(f"{self.folder}: holds no video or GIF files")
        self.split_by = _check_split_by(split_by or "camera")
        self.camera_splits = parse_camera_splits(camera_splits) or dict(INTEL_CAMERA_SPLITS)
        self.fractions = _default_fractions(split_fractions)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"folder": _abs(self.folder), "split_by": self.split_by}
        if self.split_by == "camera":
            opts["camera_splits"] = self.camera_splits
        else:
            opts["split_fractions"] = list(self.fractions)
        return opts

    def clips(self) -> list[Clip]:
        return [Clip(str(p), safe_name(p.stem)) for p in self.files]

    def assign_splits(self, records: list[dict[str, Any]]) -> None:
        if self.split_by == "camera":
            split_by_camera(records, self.camera_splits)
        else:
            split_by_time(records, self.fractions)

    @classmethod
    def splits_help(cls) -> str:
        by: dict[str, list[str]] = {}
        for cam, split in INTEL_CAMERA_SPLITS.items():
            by.setdefault(split, []).append("all others" if cam == "*" else cam)
        parts = "; ".join(f"{s} = {', '.join(by[s])}" for s in SPLITS if s in by)
        return f"by camera: {parts} (--camera-split CAM=SPLIT; or --split-by time)"


def _check_split_by(split_by: str) -> str:
    if split_by not in ("time", "camera"):
        raise SilhouetteError(f"--split-by {split_by!r}: choose 'time' or 'camera'")
    return split_by


def _camera_from(path: Path, pattern: re.Pattern[str] | None) -> str | None:
    """Camera id from a file/folder name via `pattern` (named group 'camera', else group 1, else the match)."""
    if pattern is None:
        return None
    for text in (path.name, path.as_posix()):
        m = pattern.search(text)
        if m:
            if "camera" in pattern.groupindex:
                cam = m.group("camera")
            elif pattern.groups:
                cam = m.group(1)
            else:
                cam = m.group(0)
            if cam:
                return safe_name(cam)
    raise SilhouetteError(f"--camera-pattern {pattern.pattern!r} does not match {path}; every source needs a camera id")


class _UserFootage(DatasetDef):
    """Shared option handling of the generic `video` and `folder` datasets."""

    accepts = ("sources", "camera_pattern", "split_by", "split_fractions", "camera_splits")

    def __init__(self, sources: Sequence[str] | None = None, camera_pattern: str | None = None,
                 split_by: str | None = None, split_fractions: Sequence[float] | str | None = None,
                 camera_splits: Mapping[str, str] | Sequence[str] | None = None) -> None:
        if not sources:
            raise SilhouetteError(f"dataset {self.name!r} needs footage: give --source PATH (repeatable)")
        self.sources = [Path(s).expanduser() for s in sources]
        for s in self.sources:
            if not s.exists():
                raise SilhouetteError(f"{s}: source not found (--source)")
        try:
            self.pattern = re.compile(camera_pattern) if camera_pattern else None
        except re.error as exc:
            raise SilhouetteError(f"--camera-pattern {camera_pattern!r}: invalid regular expression ({exc})") from exc
        self.split_by = _check_split_by(split_by or "time")
        self.fractions = _default_fractions(split_fractions)
        self.camera_splits = parse_camera_splits(camera_splits)
        if self.split_by == "camera" and not self.camera_splits:
            raise SilhouetteError("--split-by camera needs --camera-split CAMERA=SPLIT (repeatable; '*=train' for the rest)")

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"sources": [_abs(s) for s in self.sources],
                                "camera_pattern": self.pattern.pattern if self.pattern else None,
                                "split_by": self.split_by}
        if self.split_by == "camera":
            opts["camera_splits"] = self.camera_splits
        else:
            opts["split_fractions"] = list(self.fractions)
        return opts

    def assign_splits(self, records: list[dict[str, Any]]) -> None:
        if self.split_by == "camera":
            split_by_camera(records, self.camera_splits or {})
        else:
            split_by_time(records, self.fractions)

    @classmethod
    def splits_help(cls) -> str:
        return (f"by time per camera: {_fractions_text(DEFAULT_FRACTIONS)} (--split-fractions), "
                "or --split-by camera --camera-split CAM=SPLIT")


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or name_2, name_3... if already used by another source."""
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


@DATASETS.register("video")
class VideoFootage(_UserFootage):
    """Your own video files (or folders of them); one camera per file unless --camera-pattern groups them."""

    name = "video"
    description = "your own videos/GIFs: --source FILE|FOLDER (repeatable), camera = file stem or --camera-pattern"

    def clips(self) -> list[Clip]:
        files: list[Path] = []
        for s in self.sources:
            if s.is_dir():
                found = list_videos(s)
                if not found:
                    raise SilhouetteError(f"{s}: folder holds no video files ({', '.join(sorted(VIDEO_EXTS))})")
                files.extend(found)
            else:
                files.append(s)
        clips: list[Clip] = []
        taken: set[str] = set()
        for f in files:
            cam = _camera_from(f, self.pattern)
            if cam is None:
                cam = _unique(safe_name(f.stem), taken)
            taken.add(cam)
            clips.append(Clip(str(f), cam))
        # files of one camera play back to back in name order
        order = {c: i for i, c in enumerate(dict.fromkeys(c.camera for c in clips))}
        return sorted(clips, key=lambda c: (order[c.camera], natural_key(Path(str(c.source)).name)))


@DATASETS.register("folder")
class FolderFootage(_UserFootage):
    """Your own image folders; one camera per folder, or per --camera-pattern match on file names."""

    name = "folder"
    description = "your own image folders: --source FOLDER (repeatable), camera = folder name or --camera-pattern on file names"

    def clips(self) -> list[Clip]:
        groups: dict[str, list[Path]] = {}
        taken: set[str] = set()
        for s in self.sources:
            files = list_images(s) if s.is_dir() else [s]
            if not files or any(f.suffix.lower() not in IMAGE_EXTS for f in files):
                raise SilhouetteError(f"{s}: expected a folder of images ({', '.join(sorted(IMAGE_EXTS))})")
            if self.pattern is None:
                cam = _unique(safe_name(s.resolve().name if s.is_dir() else s.stem), taken)
                taken.add(cam)
                groups[cam] = files
            else:
                for f in files:
                    groups.setdefault(_camera_from(f, self.pattern) or "", []).append(f)
        return [
            Clip(ImageListSource(cam, cam, sorted(files, key=lambda p: natural_key(p.name))), cam)
            for cam, files in groups.items()
        ]


def dataset_names() -> list[str]:
    """Registered dataset names."""
    return DATASETS.names()


def create_dataset(name: str, **options: Any) -> DatasetDef:
    """Build a dataset definition, rejecting options it does not take (None means 'not given')."""
    cls = DATASETS.get(name)
    given = {k: v for k, v in options.items() if v is not None and v != [] and v != ()}
    accepts = getattr(cls, "accepts", ())
    bad = [k for k in given if k not in accepts]
    if bad:
        flags = ", ".join(OPTION_FLAGS.get(k, k) for k in bad)
        raise SilhouetteError(f"dataset {name!r} does not take {flags}")
    return cls(**given)


# ------------------------------------------------------------------------------------------- prepare
def _sampled_with_progress(frames: Iterator[Frame], tick: Callable[[Frame], None]) -> Iterator[Frame]:
    """Pass frames through, reporting each decoded (not only kept) frame."""
    for frame in frames:
        tick(frame)
        yield frame


def _options_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _check_format(size: tuple[int, int], every: int, fps: float | None, image_format: str, jpeg_quality: int) -> str:
    """Validate the common prepare options; returns the frame file extension."""
    if int(size[0]) < 8 or int(size[1]) < 8:
        raise SilhouetteError(f"--size {size[0]}x{size[1]}: width and height must be at least 8 pixels")
    check_sampling(every, fps)
    ext = FORMATS.get(str(image_format).lower())
    if ext is None:
        raise SilhouetteError(f"--format {image_format!r}: choose png or jpg")
    if not (1 <= int(jpeg_quality) <= 100):
        raise SilhouetteError(f"--quality {jpeg_quality}: must be between 1 and 100")
    return ext


def _claim_output(out: Path, created_with: dict[str, Any], force: bool) -> bool:
    """Refuse an --out made with other options (unless forced, which clears it); True if its frames can be reused."""
    from silhouette.fileio import read_json

    if out.exists() and not out.is_dir():
        raise SilhouetteError(f"--out {out}: exists and is not a folder")
    previous: dict[str, Any] | None = None
    if (out / MANIFEST_JSON).is_file():
        try:
            previous = load_manifest(out)["created_with"]
        except SilhouetteError:
            if not force:
                raise
    elif (out / OPTIONS_LOCK).is_file():
        try:
            previous = read_json(out / OPTIONS_LOCK)
        except SilhouetteError:
            previous = None
    if previous is not None and "fit" not in previous:
        previous = {**previous, "fit": "stretch"}  # prepared before --fit existed: every frame was stretched
    if previous is not None and previous != created_with and not force:
        diff = ", ".join(_options_diff(previous, created_with))
        raise SilhouetteError(
            f"--out {out}: already holds a dataset prepared with other options ({diff}); "
            "pass --force to delete and redo it, or choose another --out"
        )
    if force and (previous is not None or (out / "frames").exists()):
        for stale in (out / MANIFEST_JSON, out / MANIFEST_CSV, out / OPTIONS_LOCK):
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "frames", ignore_errors=True)
    # frames only count as done when a successful run recorded these very options; unrecorded ones (left by a
    # killed run, options unknown) are overwritten, never mixed in
    return previous is not None and not force


@dataclass
class _FrameWriter:
    """Writes the resized frames of one prepare run and remembers them, so a failed run can take them back."""

    out: Path
    size: tuple[int, int]
    ext: str
    params: list[int]
    resume: bool
    fit: str = "stretch"
    written: list[Path] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {"written": 0, "skipped": 0})
    seen: set[str] = field(default_factory=set)
    fits: dict[tuple[int, int], Fit] = field(default_factory=dict)
    frames_of: dict[tuple[int, int], int] = field(default_factory=dict)

    def fit_for(self, image: Any) -> Fit:
        """The Fit of frames of this image's size (planned once per source size)."""
        src = (int(image.shape[1]), int(image.shape[0]))
        if src not in self.fits:
            self.fits[src] = plan_fit(src, self.size, self.fit)
        return self.fits[src]

    def fit_stats(self) -> list[dict[str, Any]]:
        """Per source frame size: how many frames, and the one-line description of what the fit did."""
        return [{"source": f"{w}x{h}", "frames": self.frames_of.get((w, h), 0), "scaled": list(fit.scaled),
                 "offset": list(fit.offset), "description": fit.describe()} for (w, h), fit in self.fits.items()]

    def save(self, frame: Frame, rel: str, spec: str) -> None:
        """Write `frame` resized to `out/rel`, or skip it when a recorded earlier run already wrote it."""
        import cv2

        from silhouette.fileio import atomic_path

        if rel in self.seen:
            raise SilhouetteError(f"{spec}: frame {rel} produced twice; give distinct camera ids")
        self.seen.add(rel)
        fit = self.fit_for(frame.image)
        self.frames_of[fit.src] = self.frames_of.get(fit.src, 0) + 1
        dest = self.out / rel
        if self.resume and dest.is_file():
            self.stats["skipped"] += 1
            return
        small = fit.apply(frame.image)
        with atomic_path(dest) as tmp:
            if not cv2.imwrite(str(tmp), small, self.params):
                raise SilhouetteError(f"{dest}: could not write frame")
        self.written.append(dest)
        self.stats["written"] += 1

    def discard(self, created_out: bool) -> None:
        """Take back what this run wrote: the whole --out if the run created it, else the frames it wrote."""
        if created_out:
            shutil.rmtree(self.out, ignore_errors=True)
            return
        for path in self.written:
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in self.written} | {self.out / "frames"}, key=lambda d: -len(d.parts)):
            try:
                folder.rmdir()  # only when empty: frames of earlier runs stay
            except OSError:
                pass


def _ground_truth(clip: Clip, frame: Frame, fit: Fit, spec: str) -> tuple[Any, Any]:
    """The clip's person boxes and ids of `frame`, moved like its pixels by `fit` (None, None without GT)."""
    if clip.annotations is None:
        return None, None
    boxes, ids = clip.annotations.get(frame.index, ([], []))
    own = (frame.image.shape[1], frame.image.shape[0])
    if clip.annotation_size and clip.annotation_size != own:
        raise SilhouetteError(
            f"{spec}: frames are {own[0]}x{own[1]} but the ground truth is for "
            f"{clip.annotation_size[0]}x{clip.annotation_size[1]}"
        )
    return fit.boxes(boxes, ids)


def _clip_records(
    writer: _FrameWriter, clip: Clip, src: Any, offset: tuple[int, float], every: int, fps: float | None, bar: Any,
) -> tuple[list[dict[str, Any]], tuple[int, float]]:
    """Decode, sample and write one clip; its manifest records and where the camera's next file continues."""
    idx_off, ts_off = offset
    last: dict[str, float] = {"index": -1, "ts": 0.0, "dt": 0.0}

    def tick(fr: Frame) -> None:
        last["dt"] = fr.timestamp - last["ts"] if last["index"] >= 0 else 0.0
        last["index"], last["ts"] = fr.index, fr.timestamp
        bar.update(1)

    records: list[dict[str, Any]] = []
    for frame in sample_frames(_sampled_with_progress(iter(src), tick), every=every, fps=fps):
        fi = frame.index + idx_off
        rel = f"frames/{clip.camera}/{fi:06d}.{writer.ext}"
        writer.save(frame, rel, src.spec)
        gt_boxes, gt_ids = _ground_truth(clip, frame, writer.fit_for(frame.image), src.spec)
        origin = str(src.files[frame.index]) if isinstance(src, ImageListSource) else str(src.spec)
        records.append({
            "file": rel, "source": origin, "camera": clip.camera, "frame_index": fi,
            "timestamp": round(frame.timestamp + ts_off, 6), "split": None,
            "gt_boxes": gt_boxes, "gt_ids": gt_ids,
        })
        bar.set_postfix(written=writer.stats["written"], skipped=writer.stats["skipped"], refresh=False)
    if last["index"] < 0:
        raise SilhouetteError(f"{src.spec}: no frames could be decoded")
    # a camera's next file continues its clock one frame period after this one ends
    return records, (idx_off + int(last["index"]) + 1, ts_off + last["ts"] + (last["dt"] or 0.0))


def _decode_all(
    writer: _FrameWriter, name: str, clips: list[Clip], sources: list[Any], every: int, fps: float | None, progress: bool,
) -> list[dict[str, Any]]:
    """Every clip's frames written and described, cameras' files played back to back."""
    from tqdm import tqdm

    counts = [s.count() for s in sources]
    total = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]
    records: list[dict[str, Any]] = []
    offsets: dict[str, tuple[int, float]] = {}  # camera -> (frame index, time) where its next file starts
    with tqdm(total=total, desc=f"prepare {name}", unit="frame", disable=not progress) as bar:
        for clip, src in zip(clips, sources):
            recs, offsets[clip.camera] = _clip_records(writer, clip, src, offsets.get(clip.camera, (0, 0.0)), every, fps, bar)
            records.extend(recs)
    if not records:
        raise SilhouetteError(f"dataset {name!r}: no frames were kept (check --every / --fps)")
    return records


def prepare_dataset(
    name: str,
    out: str | Path,
    size: tuple[int, int] = DEFAULT_SIZE,
    every: int = 1,
    fps: float | None = None,
    image_format: str = "png",
    jpeg_quality: int = 95,
    force: bool = False,
    progress: bool = True,
    max_pixels: int | None = None,
    strict: bool = False,
    fit: str | None = None,
    **dataset_opts: Any,
) -> Path:
    """Decode a registered dataset's footage into `out/frames/<camera>/<index>.<ext>` + `out/manifest.json`.

    Re-running with the same options skips frames already written; other options need `force=True` (which deletes
    the earlier frames). A run that fails writes nothing: its frames are removed and its options are not recorded.
    `max_pixels` refuses larger footage before decoding it; `strict` refuses truncated videos. `fit` (letterbox,
    stretch or crop; None = the dataset's default) says how frames of another aspect ratio become `size`; ground-truth
    boxes move with the pixels. Returns `out`.
    """
    import cv2

    from silhouette.fileio import write_json

    out = Path(out).expanduser()
    W, H = int(size[0]), int(size[1])
    ext = _check_format((W, H), every, fps, image_format, jpeg_quality)
    ds = create_dataset(name, **dataset_opts)
    fit = fit or ds.default_fit
    if fit not in FIT_MODES:
        raise SilhouetteError(f"--fit {fit!r}: choose {', '.join(FIT_MODES)}")
    created_with = {
        "dataset": name, "size": [W, H], "every": every, "fps": fps, "image_format": ext,
        "jpeg_quality": int(jpeg_quality) if ext == "jpg" else None, "resize": "cv2.INTER_AREA", "fit": fit,
        **ds.options(),
    }
    resume = _claim_output(out, created_with, force)
    clips = ds.clips()
    sources = [open_source(c.source, max_pixels=max_pixels, strict=strict) for c in clips]  # bad input: nothing written
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == "jpg" else []
    writer = _FrameWriter(out, (W, H), ext, params, resume, fit)
    created_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        records = _decode_all(writer, name, clips, sources, every, fps, progress)
        ds.assign_splits(records)
    except BaseException:  # SilhouetteError, Ctrl+C, SIGTERM (fileio.Terminated): no half dataset stays behind
        writer.discard(created_out)
        raise
    manifest = {"dataset": name, "size": [W, H], "created_with": created_with, "frames": records,
                "stats": {**writer.stats, "frames": len(records)}, "fit": writer.fit_stats()}
    write_manifest(out, manifest)
    # recorded only now: a failed run must not make its corrected retry look like "other options" (--force)
    write_json(out / OPTIONS_LOCK, created_with)
    return out
