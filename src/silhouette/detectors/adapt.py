"""Private mode's cloud detector: a zoo detector whose weights train, exported back to ONNX with the same contract."""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path

import torch

from silhouette.detectors.base import Detections
from silhouette.detectors.onnx_zoo import OnnxZooDetector
from silhouette.errors import SilhouetteError


class AdaptedZooDetector(OnnxZooDetector):
    """A private copy of a zoo detector's onnx2torch network with every weight trainable; predicts through torch."""

    family = "onnx_zoo_adapted"

    def __init__(self, base: OnnxZooDetector) -> None:
        super().__init__(base.spec, base.weights, base.conf_threshold, base.nms_iou, base.num_threads, str(base.device))
        # a deep copy: the converted network of the base file is cached and shared by every frozen user of it
        self.net = copy.deepcopy(base.torch_model())
        for p in self.net.parameters():
            p.requires_grad_(True)

    def torch_model(self) -> torch.nn.Module:
        """The trainable network (not the shared frozen conversion)."""
        return self.net

    def predict(self, images: torch.Tensor) -> list[Detections]:
        """Detections through the trained torch weights (the onnxruntime session holds the original file)."""
        return self.predict_torch(images)

    def export_onnx(self, path: str | Path) -> str:
        """Write the trained network as ONNX with the original input/output names; returns the file's sha256."""
        import onnx

        from silhouette.fileio import atomic_path

        names = [o.name for o in onnx.load(str(self._checked_weights())).graph.output]
        size = self.spec.preproc.size
        was = self.net.training
        self.net.eval()
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # onnx2torch's converted ops trace with TracerWarnings about constant shapes; parity is tested instead
            warnings.simplefilter("ignore")
            torch.onnx.export(self.net, (torch.zeros(1, 3, size, size, device=self.device),), str(tmp),
                              input_names=["images"], output_names=names, opset_version=17, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}})
            onnx.checker.check_model(str(tmp))
        self.net.train(was)
        return file_sha256(path)


def trainable_detector(spec: str, device: str = "cpu") -> AdaptedZooDetector:
    """A trainable copy of the zoo detector `spec`; a clear error for anything else (ensembles, torchvision)."""
    from silhouette.detectors import create_detector

    base = create_detector(spec, device=device)
    if not isinstance(base, OnnxZooDetector):
        raise SilhouetteError(f"detector.spec {spec!r}: private mode co-trains one ONNX zoo detector "
                              "(e.g. yolox_nano); ensembles and torchvision models are compatible mode only")
    return AdaptedZooDetector(base)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


PAIR_FORMAT = "silhouette-finetune/1"  # pair.json of a fine-tuned baseline: a classic obfuscation + an adapted detector


def read_pair(path: str | Path) -> dict:
    """{"detector", "file", "sha256"[, "baseline"]} of a private checkpoint (.pt) or a fine-tuned baseline (pair.json)."""
    path = Path(path)
    if path.suffix == ".json":
        import json

        try:
            pair = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SilhouetteError(f"--pair {path}: cannot be read as a fine-tuned baseline's pair.json ({type(exc).__name__})") from None
        if not isinstance(pair, dict) or pair.get("format") != PAIR_FORMAT or "baseline" not in pair:
            raise SilhouetteError(f"--pair {path}: not a fine-tuned baseline's pair.json (from `silhouette finetune`)")
    else:
        from silhouette.models.checkpoint import read_checkpoint

        pair = read_checkpoint(path).get("pair")
    if not isinstance(pair, dict) or not {"detector", "file", "sha256"} <= pair.keys():
        raise SilhouetteError(f"--pair {path}: not a private-mode checkpoint (it works with an unmodified "
                              "detector); pass it as --checkpoint instead")
    return pair


def pair_detector(path: str | Path, **kwargs: object) -> OnnxZooDetector:
    """The cloud half of a pair: the detector file saved beside `path`, checked against the sha256 recorded there."""
    from silhouette.detectors import create_detector

    path = Path(path)
    pair = read_pair(path)
    det_file = path.parent / str(pair["file"])
    if not det_file.is_file():
        raise SilhouetteError(f"--pair {path}: its detector {det_file} is missing; keep the two files of a pair together")
    got = file_sha256(det_file)
    if got != pair["sha256"]:
        raise SilhouetteError(f"--pair {path}: {det_file} is not the detector this obfuscator was trained with "
                              f"(sha256 {got[:12]}, expected {str(pair['sha256'])[:12]}); use the files saved together")
    if "conf_threshold" in pair and "conf_threshold" not in kwargs:
        kwargs["conf_threshold"] = float(pair["conf_threshold"])  # the pair counts at its own calibrated threshold
    return create_detector(str(pair["detector"]), weights=str(det_file), **kwargs)


def refuse_private(ckpt: dict, path: str | Path) -> None:
    """A clear error when a private-mode obfuscator is about to be judged by an unmodified detector."""
    if ckpt.get("mode") == "private":
        raise SilhouetteError(f"--checkpoint {path}: a private-mode obfuscator, co-trained with its own detector; "
                              "pass it as --pair so that detector is used")


def pair_id_of(checkpoint: str | Path) -> str | None:
    """The id a private pair is known by on the wire (its detector's sha256, first 16 hex digits); None if compatible."""
    from silhouette.models.checkpoint import read_checkpoint

    if Path(checkpoint).suffix == ".json":  # a fine-tuned baseline's pair.json: its detector names it just the same
        return str(read_pair(checkpoint)["sha256"])[:16]
    pair = read_checkpoint(checkpoint).get("pair")
    return str(pair["sha256"])[:16] if isinstance(pair, dict) and "sha256" in pair else None
