"""Face-exposure attack: can an off-the-shelf face detector still find the faces after obfuscation?

Reference = faces a detector finds on the clean frame. A reference face counts as *found again* on
an obfuscated (or reconstructed) version of that frame when some detection there overlaps it with
IoU >= 0.3 (loose, because boxes of a degraded face drift; the same rule for every method).
Run by default on the Intel clips with visible faces at their native 480x270 resolution (faces ~20-30 px
there; at the 320x200 training size they fall below what the detectors reliably see); `attack --clips` points it
at the user's own footage (videos, image folders, prepared datasets).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from silhouette.errors import SilhouetteError
from silhouette.registry import Registry

FACE_CLIPS = ("face-demographics-walking.gif", "head-pose-face-detection-female-and-male.gif")
DEFAULT_IOU = 0.3
# Haar boxes of one face (from the two cascades, or nested scales of one) overlap by IoU 0.8-0.9; two faces side by
# side barely touch. Above this IoU two Haar boxes are one face.
HAAR_MERGE_IOU = 0.3
HAAR_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
# Debian/Ubuntu's opencv-data package ships the same cascade files here.
_CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")
# OpenCV 5 wheels keep CascadeClassifier but no longer ship the cascade files: point this at a copy of them.
ENV_HAAR_DIR = "SILHOUETTE_HAAR_DIR"


class FaceDetector(Protocol):
    """Anything that returns face boxes [N,4] xyxy (pixels) for one 3xHxW float RGB image."""

    name: str

    def detect(self, image: torch.Tensor) -> np.ndarray: ...


FACE_DETECTORS: Registry[FaceDetector] = Registry("face detector")


def _cascade_path(name: str) -> Path:
    import cv2

    dirs = [os.environ.get(ENV_HAAR_DIR, ""), getattr(getattr(cv2, "data", None), "haarcascades", ""), *_CASCADE_DIRS]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return Path(d) / name
    raise SilhouetteError(
        f"Haar cascade {name} not found in {', '.join(d for d in dirs if d)}; OpenCV 5 wheels no longer ship them: "
        f"install opencv-python-headless<5 (or Debian's opencv-data), set {ENV_HAAR_DIR} to a folder holding them, "
        "or use the mtcnn face detector"
    )


@FACE_DETECTORS.register("haar")
class HaarFaceDetector:
    """OpenCV Viola-Jones cascades (frontal default + alt2); a face is reported if either cascade fires."""

    name = "haar"

    def __init__(self, cascades: Sequence[str] = HAAR_CASCADES, scale_factor: float = 1.1, min_neighbors: int = 4,
                 min_size: int = 12, merge_iou: float = HAAR_MERGE_IOU) -> None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise SilhouetteError(
                f"this OpenCV build ({cv2.__version__}) has no CascadeClassifier (Haar cascades left OpenCV's main "
                "modules in 5.0): install opencv-python-headless<5, or use the mtcnn face detector"
            )
        self.cascades = []
        for name in cascades:
            c = cv2.CascadeClassifier(str(_cascade_path(name)))
            if c.empty():
                raise SilhouetteError(f"Haar cascade {name}: could not be loaded")
            self.cascades.append(c)
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.merge_iou = merge_iou

    def detect(self, image: torch.Tensor) -> np.ndarray:
        """Both cascades' boxes, one per face: overlapping boxes (IoU > merge_iou) are merged into the first."""
        import cv2

        from silhouette.imaging import tensor_to_bgr

        gray = cv2.equalizeHist(cv2.cvtColor(tensor_to_bgr(image), cv2.COLOR_BGR2GRAY))
        boxes = []
        for c in self.cascades:
            found = c.detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size))
            for x, y, w, h in np.asarray(found).reshape(-1, 4):
                boxes.append([x, y, x + w, y + h])
        # both cascades usually fire on the same face: unmerged, one person counts as two reference faces
        return dedupe_boxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), self.merge_iou)


@FACE_DETECTORS.register("mtcnn")
class MTCNNFaceDetector:
    """MTCNN (Zhang et al.) from facenet-pytorch, with the P/R/O-net weights its wheel ships."""

    name = "mtcnn"
    thread_safe = True  # inference only, no state kept between calls

    def __init__(self, min_prob: float = 0.9, min_face_size: int = 12) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise SilhouetteError(
                f"the mtcnn face detector needs facenet-pytorch ({exc}); install it without its old torch pins: "
                "`pip install --no-deps facenet-pytorch requests`, or use the haar face detector"
            ) from exc
        self.model = MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu")
        self.min_prob = min_prob

    def detect(self, image: torch.Tensor) -> np.ndarray:
        """Face boxes with MTCNN probability >= min_prob."""
        from silhouette.imaging import tensor_to_rgb

        with torch.no_grad():
            boxes, probs = self.model.detect(tensor_to_rgb(image))  # MTCNN takes HxWx3 uint8 RGB
        if boxes is None:
            return np.zeros((0, 4), dtype=np.float32)
        keep = np.asarray(probs, dtype=float) >= self.min_prob
        return np.asarray(boxes, dtype=np.float32)[keep].reshape(-1, 4)


def available_face_detectors() -> dict[str, str]:
    """name -> '' if usable here, else the reason it is not."""
    out: dict[str, str] = {}
    for name in FACE_DETECTORS.names():
        try:
            FACE_DETECTORS.create(name)
            out[name] = ""
        except SilhouetteError as exc:
            out[name] = str(exc)
    return out


def build_face_detector(name: str) -> FaceDetector:
    """A registered face detector ('haar' or 'mtcnn'); a clear error if it cannot run here."""
    return FACE_DETECTORS.create(name)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes."""
    from torchvision.ops import box_iou as tv_box_iou

    a_t = torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(-1, 4))
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4))
    return tv_box_iou(a_t, b_t).numpy()


def dedupe_boxes(boxes: np.ndarray, iou: float = HAAR_MERGE_IOU) -> np.ndarray:
    """Greedy non-maximum suppression without scores: a box overlapping an earlier kept one by IoU > `iou` is dropped."""
    from torchvision.ops import nms

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) < 2:
        return boxes
    # descending pseudo-scores keep the given order: the first cascade's box wins over a later duplicate
    order = torch.arange(len(boxes), 0, -1, dtype=torch.float32)
    keep = nms(torch.as_tensor(boxes), order, iou).sort().values.numpy()
    return boxes[keep]


def refound(reference: Sequence[np.ndarray], found: Sequence[np.ndarray], iou: float = DEFAULT_IOU) -> dict[str, float]:
    """How many reference faces (per frame) have a detection with IoU >= `iou` on the matching frame."""
    if len(reference) != len(found):
        raise ValueError(f"{len(reference)} reference frames but {len(found)} attacked frames")
    total = hits = 0
    for ref, det in zip(reference, found):
        ref = np.asarray(ref).reshape(-1, 4)
        total += len(ref)
        if len(ref) and len(det):
            hits += int((box_iou(ref, det) >= iou).any(axis=1).sum())
    return {"reference_faces": total, "found_again": hits, "fraction": hits / total if total else math.nan}


def detect_all(detector: FaceDetector, frames: Sequence[torch.Tensor], workers: int = 0) -> list[np.ndarray]:
    """Face boxes of every frame, in order; frames are spread over `workers` threads (0 = from torch's thread count).

    The detectors run on the CPU even when the attackers use a GPU, so on a many-core machine the frames of a
    detector marked `thread_safe` (MTCNN: stateless torch inference) are searched in parallel; Haar cascades
    share state between calls and parallelise inside OpenCV instead. With one torch thread this is a plain loop.
    """
    workers = workers or min(8, max(1, torch.get_num_threads() // 2))
    if workers <= 1 or len(frames) <= 1 or not getattr(detector, "thread_safe", False):
        return [detector.detect(f) for f in frames]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(detector.detect, frames))


def face_exposure(
    detector: FaceDetector,
    clean: Sequence[torch.Tensor],
    variants: Mapping[str, Sequence[torch.Tensor]],
    iou: float = DEFAULT_IOU,
    reference: Sequence[np.ndarray] | None = None,
) -> dict[str, object]:
    """Fraction of clean-frame faces found again in each variant (e.g. 'obfuscated', 'reconstructed').

    `reference` = this detector's boxes on `clean`, when already known (they do not depend on the method).
    """
    if reference is None:
        reference = detect_all(detector, clean)
    out: dict[str, object] = {"detector": detector.name, "iou_threshold": iou, "frames": len(clean),
                              "reference_faces": int(sum(len(r) for r in reference))}
    for name, frames in variants.items():
        out[name] = refound(reference, detect_all(detector, frames), iou)
    return out


def load_face_clips(clips: Sequence[str] = FACE_CLIPS, every: int = 1, size: tuple[int, int] | None = None,
                    folder: Path | None = None) -> dict[str, list[torch.Tensor]]:
    """Frames of the Intel face clips as float RGB tensors, at native size unless `size` (W, H) is given."""
    from silhouette.data.sources import iter_frames
    from silhouette.imaging import bgr_to_tensor, resize_frame
    from silhouette.paths import data_dir

    folder = folder or data_dir() / "intel"
    out: dict[str, list[torch.Tensor]] = {}
    for clip in clips:
        path = folder / clip
        if not path.is_file():
            raise SilhouetteError(f"{path}: face clip not found (needed by the face attack)")
        frames = []
        for fr in iter_frames(str(path), every=every):
            img = fr.image if size is None else resize_frame(fr.image, size)
            frames.append(bgr_to_tensor(img))
        out[clip] = frames
    return out


@dataclass
class FaceFootage:
    """One clip of the face attack: its name in the report, its path, and what it is."""

    label: str
    path: Path
    kind: str  # "video", "images" or "prepared" (a `silhouette prepare` folder)
    split: str | None = None  # prepared datasets: the split whose frames are used (None = all)

    def describe(self) -> str:
        """How the report names this footage."""
        if self.kind == "prepared":
            return f"{self.path} (prepared dataset, {self.split + ' split' if self.split else 'all frames'})"
        return f"{self.path} ({'image folder' if self.kind == 'images' else 'video'})"


def _footage(spec: str) -> FaceFootage:
    """One --clips entry checked without decoding it: a video file, an image folder or a prepared dataset folder."""
    from silhouette.data.manifest import MANIFEST_JSON, load_manifest
    from silhouette.data.sources import IMAGE_EXTS, VIDEO_EXTS, list_images, open_source

    path = Path(spec).expanduser()
    expected = "expected a video file, an image folder or a prepared dataset folder"
    if not path.exists():
        raise SilhouetteError(f"--clips {spec}: not found ({expected})")
    if path.is_dir() and (path / MANIFEST_JSON).is_file():
        try:
            splits = {r["split"] for r in load_manifest(path)["frames"]}
        except SilhouetteError as exc:
            raise SilhouetteError(f"--clips: {exc}") from exc
        # the reconstruction attacker trains on --data's train split: its test frames are unseen, as in that attack
        return FaceFootage(spec, path, "prepared", "test" if "test" in splits else None)
    if path.is_dir():
        if not list_images(path):
            raise SilhouetteError(f"--clips {spec}: folder holds no images and no manifest.json ({expected})")
        return FaceFootage(spec, path, "images")
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTS | IMAGE_EXTS:
        raise SilhouetteError(f"--clips {spec}: unknown file type {suffix or '(none)'} ({expected})")
    try:
        open_source(str(path))  # probes a video's header: an unreadable file fails here, before any attack
    except SilhouetteError as exc:
        raise SilhouetteError(f"--clips: {exc}") from exc  # the message starts with the path
    return FaceFootage(spec, path, "images" if suffix in IMAGE_EXTS else "video")


def resolve_footage(specs: Sequence[str] | None = None, folder: Path | None = None) -> list[FaceFootage]:
    """The face attack's footage: the --clips entries (checked, one-line errors), else the shared Intel face clips."""
    from silhouette.paths import data_dir

    if specs:
        out = [_footage(s) for s in specs]
        paths = [f.path.resolve() for f in out]
        twice = next((f.label for f, p in zip(out, paths) if paths.count(p) > 1), None)
        if twice:
            raise SilhouetteError(f"--clips {twice}: given twice")
        return out
    folder = folder or data_dir() / "intel"
    for clip in FACE_CLIPS:
        if not (folder / clip).is_file():
            raise SilhouetteError(f"{folder / clip}: face clip not found (needed by the face attack; or pass --clips)")
    return [FaceFootage(clip, folder / clip, "video") for clip in FACE_CLIPS]


def load_footage(footage: Sequence[FaceFootage], every: int = 1) -> dict[str, list[torch.Tensor]]:
    """Frames of each footage (every `every`-th) as float RGB tensors at their own size, keyed by label."""
    from silhouette.data.sources import iter_frames
    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.imaging import bgr_to_tensor

    out: dict[str, list[torch.Tensor]] = {}
    for f in footage:
        if f.kind == "prepared":
            ds = FrameDataset(f.path, split=f.split)
            frames = [ds[i]["image"] for i in range(0, len(ds), every)]
        else:
            frames = [bgr_to_tensor(fr.image) for fr in iter_frames(str(f.path), every=every)]
        if not frames:
            raise SilhouetteError(f"--clips {f.label}: no frames could be read")
        out[f.label] = frames
    return out


def footage_summary(footage: Sequence[FaceFootage], clips: Mapping[str, Sequence[torch.Tensor]]) -> list[dict[str, Any]]:
    """Per clip: label, path, kind, split, frames used and their size(s), for the scorecard."""
    return [{"clip": f.label, "path": str(f.path.resolve()), "kind": f.kind, "split": f.split,
             "frames": len(clips[f.label]), "resolution": frame_sizes(clips[f.label])} for f in footage]


def frame_sizes(frames: Sequence[torch.Tensor]) -> str:
    """'WxH' of the frames, or the distinct sizes joined by ', ' when they differ."""
    sizes = dict.fromkeys(f"{f.shape[-1]}x{f.shape[-2]}" for f in frames)
    return ", ".join(sizes)


def run_face_attack(
    detectors: Sequence[FaceDetector],
    clips: Mapping[str, Sequence[torch.Tensor]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    reconstructor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    iou: float = DEFAULT_IOU,
    references: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, object]:
    """Per detector: fraction of clean faces found again on obfuscated and (if given) reconstructed frames, all clips pooled.

    `references` (detector name -> clean-frame boxes, kept by the caller across methods for the same clips) is
    filled on first use, so the clean frames are searched once per run instead of once per method.
    """
    clean = [f for frames in clips.values() for f in frames]
    with torch.no_grad():
        obf = [transform(f.unsqueeze(0)).clamp(0, 1)[0] for f in clean]
        # quantise like a transmitted frame, so the attack sees what the cloud sees
        obf = [torch.round(o * 255) / 255 for o in obf]
        variants: dict[str, list[torch.Tensor]] = {"obfuscated": obf}
        if reconstructor is not None:
            variants["reconstructed"] = [reconstructor(o.unsqueeze(0))[0] for o in obf]
    res: dict[str, object] = {"clips": list(clips), "resolution": frame_sizes(clean), "iou_threshold": iou}
    references = {} if references is None else references
    for det in detectors:
        if det.name not in references:
            references[det.name] = detect_all(det, clean)
        res[det.name] = face_exposure(det, clean, variants, iou, references[det.name])
    return res
