"""The six shared COCO-pretrained ONNX detectors: exact onnxruntime `predict`, differentiable onnx2torch `candidates`.

Contracts, thresholds and golden outputs: `<shared>/weights/README.md` and `golden.json`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from silhouette.detectors.base import PERSON, Candidates, Detections, Detector, DetectorInfo
from silhouette.detectors.preprocess import Geometry, PreprocSpec, preprocess_cv2, preprocess_torch
from silhouette.detectors.registry import DETECTORS
from silhouette.detectors.zoo_decoders import (
    YOLO_FASTEST_BODY_ANCHORS,
    YOLO_FASTEST_XL_ANCHORS,
    Decoded,
    decode_darknet_yolo,
    decode_fastestdet,
    decode_nanodet,
    decode_yolov5,
    decode_yolox,
)
from silhouette.errors import SilhouetteError
from silhouette.imaging import check_image, tensor_to_bgr
from silhouette.paths import shared_dir

# Added inside p**0.6 / p**0.4 on the differentiable path only (README §4.5 gradient note).
GRAD_EPS = 1e-6
# Frames per onnxruntime call; bounds memory for large batches (yolov5n input is 4.9 MB per frame).
ORT_CHUNK = 16

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class ZooModel:
    """Everything README §1-§4 says about one file: input contract, outputs, decoder, thresholds, provenance."""

    name: str
    file: str
    preproc: PreprocSpec
    outputs: dict[str, Shape]  # output name -> shape (None = dynamic), in graph order
    decode: Callable[[Sequence[torch.Tensor], int, float], Decoded]  # (raw outputs, input size, eps)
    conf: float
    nms_iou: float
    source: str
    license: str


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "yolox_nano",
            "yolox_nano.onnx",
            PreprocSpec(416, bgr=True, fit="letterbox_tl", scaling="raw255"),
            {"output": (None, 3549, 85)},
            lambda o, s, eps: decode_yolox(o, s),
            0.30,
            0.45,
            "Megvii YOLOX-Nano (COCO) via github.com/Bigisland1729/object-detection-models @6e770c5",
            "Apache-2.0",
        ),
        ZooModel(
            "nanodet_m",
            "nanodet_m.onnx",
            PreprocSpec(416, bgr=True, fit="warp_center", scaling="nanodet"),
            {f"cls_score_s{s}": (None, (416 // s) ** 2, 80) for s in (8, 16, 32)}
            | {f"bbox_dfl_s{s}": (None, (416 // s) ** 2, 32) for s in (8, 16, 32)},
            lambda o, s, eps: decode_nanodet(o, s),
            0.35,
            0.60,
            "RangiLyu NanoDet-m (320-trained, run at 416) via github.com/hpc203/nanodet-opncv-dnn-cpp-python @f46e225",
            "Apache-2.0",
        ),
        ZooModel(
            "yolov5n",
            "yolov5n.onnx",
            PreprocSpec(640, bgr=False, fit="letterbox_center", scaling="unit"),
            {"output": (None, None, 85)},
            lambda o, s, eps: decode_yolov5(o, s),
            0.25,
            0.45,
            "ultralytics YOLOv5n v6.1 (github.com/ultralytics/yolov5 @981548a yolov5n.pt)",
            "GPL-3.0",
        ),
        ZooModel(
            "yolo_fastest_xl",
            "yolo_fastest_xl.onnx",
            PreprocSpec(320, bgr=False, fit="stretch", scaling="unit"),
            {"out_stride32": (None, 255, 10, 10), "out_stride16": (None, 255, 20, 20)},
            lambda o, s, eps: decode_darknet_yolo(o, s, YOLO_FASTEST_XL_ANCHORS, 80),
            0.25,
            0.45,
            "dog-qiuqiu Yolo-Fastest-1.1-XL COCO (github.com/dog-qiuqiu/Yolo-Fastest @96a2900)",
            "YOLO LICENSE v2 (public domain)",
        ),
        ZooModel(
            "fastestdet",
            "fastestdet.onnx",
            PreprocSpec(352, bgr=True, fit="stretch", scaling="unit"),
            {"output": (None, 85, 22, 22)},
            lambda o, s, eps: decode_fastestdet(o, s, eps),
            0.65,
            0.45,
            "dog-qiuqiu FastestDet (github.com/dog-qiuqiu/FastestDet @50473cd)",
            "BSD-3-Clause",
        ),
        ZooModel(
            "yolo_fastest_body",
            "yolo_fastest_body.onnx",
            PreprocSpec(320, bgr=False, fit="stretch", scaling="unit"),
            {"out_stride32": (None, 18, 10, 10), "out_stride16": (None, 18, 20, 20)},
            lambda o, s, eps: decode_darknet_yolo(o, s, YOLO_FASTEST_BODY_ANCHORS, 1),
            0.25,
            0.45,
            "dog-qiuqiu Yolo-Fastest-1.1 body, 1 class mapped to person (github.com/dog-qiuqiu/Yolo-Fastest @96a2900)",
            "YOLO LICENSE v2 (public domain)",
        ),
    )
}


def zoo_names() -> list[str]:
    """Names of the ONNX zoo detectors."""
    return list(ZOO)


def select_detections(
    boxes_in: torch.Tensor,
    scores: torch.Tensor,
    geom: Geometry,
    width: int,
    height: int,
    conf: float,
    nms_iou: float,
) -> Detections:
    """README §3: keep score >= conf, greedy NMS in model-input pixels, map back to the frame and clip."""
    from torchvision.ops import nms

    keep = scores >= conf
    boxes_in, scores = boxes_in[keep], scores[keep]
    order = nms(boxes_in.float(), scores.float(), nms_iou)
    boxes = geom.to_frame(boxes_in[order], width, height)
    labels = torch.full((len(order),), PERSON, dtype=torch.int64, device=boxes.device)
    return Detections(boxes.float(), scores[order].float(), labels)


# Process-wide caches: converted models and sessions are read-only, so detector instances can share them.
_LOCK = threading.Lock()
_SESSIONS: dict[tuple[Any, ...], Any] = {}
_TORCH_MODELS: dict[tuple[Any, ...], tuple[torch.nn.Module, dict[str, Shape], dict[str, Shape]]] = {}


def _static(dims: Sequence[Any]) -> Shape:
    """Shape with symbolic / unknown dims as None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


def _proto_dims(value_info: Any) -> list[Any]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _shapes_match(got: dict[str, Shape], want: dict[str, Shape]) -> bool:
    """Same names in the same order, same ranks, and equal sizes wherever both sides are static."""
    return list(got) == list(want) and all(
        len(got[k]) == len(w) and all(x is None or y is None or x == y for x, y in zip(w, got[k]))
        for k, w in want.items()
    )


def _to_device(d: Detections, device: torch.device) -> Detections:
    return Detections(d.boxes.to(device), d.scores.to(device), d.labels.to(device))


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


class OnnxZooDetector(Detector):
    """One zoo model: onnxruntime for exact `predict`, onnx2torch for differentiable `candidates`."""

    family = "onnx_zoo"

    def __init__(
        self,
        model: ZooModel,
        weights: str | Path | None = None,
        conf_threshold: float | None = None,
        nms_iou: float | None = None,
        num_threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.spec = model
        self.name = model.name
        default = shared_dir(required=False) / "weights" / model.file
        self.weights = Path(weights).expanduser() if weights is not None else default
        self.conf_threshold = model.conf if conf_threshold is None else float(conf_threshold)
        self.nms_iou = model.nms_iou if nms_iou is None else float(nms_iou)
        if not 0.0 <= self.conf_threshold <= 1.0 or not 0.0 <= self.nms_iou <= 1.0:
            raise SilhouetteError(
                f"{self.name}: conf_threshold {self.conf_threshold} and nms_iou {self.nms_iou} must lie in [0, 1]"
            )
        if num_threads is not None and num_threads < 1:
            raise SilhouetteError(f"{self.name}: num_threads must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        self.device = torch.device(device)

    # -- loading ---------------------------------------------------------------------------------------------

    def _checked_weights(self) -> Path:
        if not self.weights.is_file():
            raise SilhouetteError(
                f"{self.name}: weights file {self.weights} not found; set SILHOUETTE_SHARED to the folder whose "
                f"weights/ holds {self.spec.file} (or pass weights=PATH to create_detector)"
            )
        return self.weights

    def session(self) -> Any:
        """The cached onnxruntime InferenceSession (CPU) for this file and thread count."""
        import onnxruntime as ort

        path = self._checked_weights()
        key = (*_file_key(path), self.num_threads)
        with _LOCK:
            if key not in _SESSIONS:
                opts = ort.SessionOptions()
                if self.num_threads is not None:
                    opts.intra_op_num_threads = self.num_threads
                    opts.inter_op_num_threads = 1
                try:
                    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own pybind exception types
                    raise SilhouetteError(
                        f"{self.name}: {path} is not a loadable ONNX model ({type(exc).__name__}); "
                        f"replace it with the shared {self.spec.file}"
                    ) from exc
                _SESSIONS[key] = sess
        sess = _SESSIONS[key]
        # Checked on every fetch: the cache is shared by detectors, and a file may be handed to the wrong one.
        inputs = {i.name: _static(i.shape) for i in sess.get_inputs()}
        self._check_io(inputs, {o.name: _static(o.shape) for o in sess.get_outputs()}, path)
        return sess

    def _check_io(self, inputs: dict[str, Shape], outputs: dict[str, Shape], path: Path) -> None:
        """Refuse a file whose input/output names and static shapes are not this model's (README §1)."""
        s = self.spec.preproc.size
        want_in: dict[str, Shape] = {"images": (None, 3, s, s)}  # what preprocessing feeds
        if not (_shapes_match(inputs, want_in) and _shapes_match(outputs, self.spec.outputs)):
            raise SilhouetteError(
                f"{self.name}: {path} has inputs {inputs} and outputs {outputs}, expected {want_in} and "
                f"{self.spec.outputs}; is it the file for another detector?"
            )

    def torch_model(self) -> torch.nn.Module:
        """The cached onnx2torch conversion: eval mode, every parameter frozen."""
        import onnx
        from onnx2torch import convert

        path = self._checked_weights()
        key = (*_file_key(path), str(self.device))
        with _LOCK:
            if key not in _TORCH_MODELS:
                try:
                    proto = onnx.load(str(path))
                except Exception as exc:  # protobuf DecodeError and friends
                    raise SilhouetteError(
                        f"{self.name}: {path} is not a loadable ONNX model ({type(exc).__name__}); "
                        f"replace it with the shared {self.spec.file}"
                    ) from exc
                try:
                    net = convert(proto)
                except Exception as exc:
                    raise SilhouetteError(f"{self.name}: onnx2torch cannot convert {path}: {exc}") from exc
                net.eval().to(self.device)
                for p in net.parameters():
                    p.requires_grad_(False)
                for b in net.buffers():
                    b.requires_grad_(False)
                io = [{v.name: _static(_proto_dims(v)) for v in vs} for vs in (proto.graph.input, proto.graph.output)]
                _TORCH_MODELS[key] = (net, io[0], io[1])
        net, inputs, outputs = _TORCH_MODELS[key]
        self._check_io(inputs, outputs, path)
        return net

    # -- the two paths ---------------------------------------------------------------------------------------

    def preprocess_exact(self, images: torch.Tensor) -> tuple[np.ndarray, Geometry]:
        """README §4 preprocessing: round(x*255) uint8 BGR, then the model's cv2 resize/letterbox/warp."""
        check_image(images)
        arrays, geom = [], None
        for img in images:
            arr, geom = preprocess_cv2(tensor_to_bgr(img), self.spec.preproc)
            arrays.append(arr)
        if geom is None:
            raise SilhouetteError(f"{self.name}: empty image batch")
        return np.stack(arrays), geom

    def forward_ort(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw onnxruntime outputs (in `spec.outputs` order) for a preprocessed [B, 3, S, S] batch."""
        sess = self.session()
        chunks = [sess.run(None, {"images": batch[i : i + ORT_CHUNK]}) for i in range(0, len(batch), ORT_CHUNK)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def forward_torch(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Raw onnx2torch outputs (in `spec.outputs` order) for a preprocessed batch."""
        out = self.torch_model()(batch.to(self.device))
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def predict(self, images: torch.Tensor) -> list[Detections]:
        """Post-NMS person detections per frame through onnxruntime, reproducing the golden numbers."""
        check_image(images)
        if images.shape[0] == 0:
            return []
        batch, geom = self.preprocess_exact(images)
        with torch.no_grad():
            return self._detections([torch.from_numpy(o) for o in self.forward_ort(batch)], geom, images)

    def predict_torch(self, images: torch.Tensor) -> list[Detections]:
        """`predict` through the onnx2torch path on `device` (torch resize: close to, not equal to, golden)."""
        check_image(images)
        if images.shape[0] == 0:
            return []
        with torch.no_grad():
            inp, geom = preprocess_torch(images.to(self.device, torch.float32), self.spec.preproc)
            return self._detections(self.forward_torch(inp), geom, images)

    def _detections(self, outputs: Sequence[torch.Tensor], geom: Geometry, images: torch.Tensor) -> list[Detections]:
        """Raw outputs decoded, thresholded and NMS'd into frame pixels, on the device of `images`."""
        _, _, h, w = images.shape
        boxes, scores = self.spec.decode(outputs, self.spec.preproc.size, 0.0)
        return [_to_device(select_detections(boxes[i], scores[i], geom, w, h, self.conf_threshold, self.nms_iou),
                           images.device) for i in range(len(boxes))]

    def candidates(self, images: torch.Tensor) -> Candidates:
        """Pre-NMS boxes (frame pixels) and person scores through onnx2torch; gradients reach `images`."""
        check_image(images)
        _, _, h, w = images.shape
        inp, geom = preprocess_torch(images.to(self.device, torch.float32), self.spec.preproc)
        boxes, scores = self.spec.decode(self.forward_torch(inp), self.spec.preproc.size, GRAD_EPS)
        boxes = geom.to_frame(boxes, w, h)
        return Candidates(boxes.to(images.device), scores.to(images.device))

    def info(self) -> DetectorInfo:
        """Provenance, license, input size and weights location (README §2)."""
        s = self.spec.preproc.size
        return DetectorInfo(
            name=self.name,
            family=self.family,
            source=self.spec.source,
            license=self.spec.license,
            input_size=f"{s}x{s}",
            weights=str(self.weights),
            weights_present=self.weights.is_file(),
        )


def _build(name: str, **kwargs: Any) -> OnnxZooDetector:
    return OnnxZooDetector(ZOO[name], **kwargs)


@DETECTORS.register("yolox_nano")
def yolox_nano(**kwargs: Any) -> OnnxZooDetector:
    """YOLOX-Nano, 416x416 top-left letterbox, conf 0.30 / NMS 0.45."""
    return _build("yolox_nano", **kwargs)


@DETECTORS.register("nanodet_m")
def nanodet_m(**kwargs: Any) -> OnnxZooDetector:
    """NanoDet-m (GFL head), 416x416 centred warp, conf 0.35 / NMS 0.6."""
    return _build("nanodet_m", **kwargs)


@DETECTORS.register("yolov5n")
def yolov5n(**kwargs: Any) -> OnnxZooDetector:
    """YOLOv5n v6.1, 640x640 centred letterbox, conf 0.25 / NMS 0.45 (GPL-3.0 weights)."""
    return _build("yolov5n", **kwargs)


@DETECTORS.register("yolo_fastest_xl")
def yolo_fastest_xl(**kwargs: Any) -> OnnxZooDetector:
    """Yolo-Fastest-1.1-XL, 320x320 stretch, conf 0.25 / NMS 0.45."""
    return _build("yolo_fastest_xl", **kwargs)


@DETECTORS.register("fastestdet")
def fastestdet(**kwargs: Any) -> OnnxZooDetector:
    """FastestDet, 352x352 stretch, conf 0.65 / NMS 0.45."""
    return _build("fastestdet", **kwargs)


@DETECTORS.register("yolo_fastest_body")
def yolo_fastest_body(**kwargs: Any) -> OnnxZooDetector:
    """Yolo-Fastest-1.1 body (1 class, reported as person), 320x320 stretch, conf 0.25 / NMS 0.45."""
    return _build("yolo_fastest_body", **kwargs)
