"""Person AP50 of the int8 ONNX edge obfuscator on the PETS 2009 test split, against clean pseudo-labels."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' shared helpers: _common
from _common import run_info, versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    """Export the checkpoint (fp32 + static int8), obfuscate the test split with each, score the detector."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", default=str(REPO / "src/silhouette/assets/obfuscator_edge.pt"))
    p.add_argument("--data", default="runs/data/pets2009", help="prepared pets2009 folder (prepared if missing)")
    p.add_argument("--detector", default="yolox_nano")
    p.add_argument("--threshold", type=float, default=0.3, help="pseudo-label score threshold")
    p.add_argument("--eval-conf", type=float, default=0.05, help="score threshold of predictions scored for AP")
    p.add_argument("--workdir", default="runs/edge_int8")
    p.add_argument("--out", default=str(REPO / "results/experiments/edge_int8_ap.json"))
    args = p.parse_args()
    load_before = os.getloadavg()

    import onnxruntime as ort

    from silhouette.data import FrameDataset, prepare_dataset
    from silhouette.data.labels import ensure_pseudo_labels
    from silhouette.edge.export import export_onnx, quantize_int8
    from silhouette.detectors import create_detector
    from silhouette.evaluation.metrics import person_ap
    from silhouette.fileio import write_json
    from silhouette.models import load_obfuscator

    prepare_dataset("pets2009", Path(args.data), progress=False)
    ds = FrameDataset(args.data, split="test")
    labels = ensure_pseudo_labels(args.data, args.detector, args.threshold, split="test", progress=False)
    det = create_detector(args.detector, conf_threshold=args.eval_conf)
    work = Path(args.workdir)
    model = load_obfuscator(args.checkpoint)
    fp32 = export_onnx(model, work / "edge.onnx")
    int8 = quantize_int8(fp32, work / "edge.int8.onnx")
    results: dict[str, dict[str, float]] = {}
    targets = [labels[ds[i]["file"]] for i in range(len(ds))]
    for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        preds = []
        for i in range(len(ds)):
            x = ds[i]["image"][None].numpy().astype(np.float32)
            o = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x})[0])
            preds.append(det.predict(o)[0])
        results[name] = person_ap(preds, targets)
        print(f"{name:10s} person AP50 {results[name]['ap50']:.3f}  AP {results[name]['ap']:.3f}  ({len(ds)} test frames)")
    write_json(args.out, run_info(load_before, versions=versions("torch", "onnxruntime")) | {"checkpoint": args.checkpoint, "detector": args.detector, "split": "test",
                                       "frames": len(ds), "pseudo_label_threshold": args.threshold, "results": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
