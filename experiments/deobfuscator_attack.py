"""Score each checkpoint's own co-trained deobfuscator on the pets2009 test split, like the post-hoc attacker.

The post-hoc attacker of `silhouette attack` starts as the identity on its input (a residual U-Net), which suits
colour-remapped frames but learns slowly from a few-level output. The deobfuscator that trained beside the
obfuscator has no such start, so it is a second, independent attacker: where it beats the post-hoc one, the
scorecard's reconstruction column understates the leak (attack that row again with `silhouette attack --recon-scratch`).

    .venv/bin/python experiments/deobfuscator_attack.py LABEL=CKPT [LABEL=CKPT ...] [--data DIR] [--threads N]

Prints a table and writes results/experiments/deobfuscator_attack.json (PSNR/SSIM on whole frames and on the
ground-truth person boxes, beside the zero-information floor of the mean train frame).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from silhouette.data.torch_dataset import FrameDataset  # noqa: E402
from silhouette.errors import SilhouetteError  # noqa: E402
from silhouette.fileio import write_json  # noqa: E402
from silhouette.models.checkpoint import load_deobfuscator, load_obfuscator  # noqa: E402
from silhouette.privacy import reconstruction as R  # noqa: E402
from silhouette.provenance import provenance  # noqa: E402
from silhouette.privacy.attack_suite import gt_boxes, uint8_frames  # noqa: E402

OUT = REPO_ROOT / "results" / "experiments" / "deobfuscator_attack.json"
KEYS = ("psnr", "ssim", "person_psnr", "person_ssim")


def score(path: str, train: torch.Tensor, test: torch.Tensor, boxes: list | None) -> dict[str, float]:
    """The checkpoint's deobfuscator on its obfuscator's 8-bit output of the test frames."""
    obf, deobf = load_obfuscator(path), load_deobfuscator(path)  # the latter says so when there is no deobfuscator
    _, obfuscated = R.obfuscate_frames(obf, (f.float() / 255 for f in test))
    metrics = R.score_frames(test, R.reconstruct(deobf, obfuscated), boxes)
    return {k: metrics[k] for k in KEYS}


def main() -> int:
    """Parse LABEL=CKPT pairs, score each, print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", metavar="LABEL=CKPT")
    ap.add_argument("--data", default="runs/data/pets2009", help="prepared pets2009 (default: runs/data/pets2009)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results JSON (default {OUT.relative_to(REPO_ROOT)})")
    ap.add_argument("--smoke", action="store_true", help="8 train and 4 test frames: a seconds-long plumbing check")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [c.partition("=") for c in args.checkpoints]
    for label, eq, path in pairs:
        if not eq or not Path(path).is_file():
            raise SystemExit(f"error: {label}{eq}{path}: expected LABEL=CKPT with an existing checkpoint file")
    train_ds, test_ds = FrameDataset(args.data, "train"), FrameDataset(args.data, "test")
    train_idx, test_idx = list(range(len(train_ds))), list(range(len(test_ds)))
    if args.smoke:
        train_idx, test_idx = train_idx[:8], test_idx[:4]
    train = uint8_frames(train_ds, train_idx)
    test, boxes = uint8_frames(test_ds, test_idx), gt_boxes(test_ds, test_idx)
    floor = R.scene_prior_floor(train, test, boxes)
    rows = {"zero-information floor": {k: floor[k] for k in KEYS}}
    for label, _, path in pairs:
        try:
            rows[label] = {"checkpoint": path, **score(path, train, test, boxes)}
        except SilhouetteError as exc:
            raise SystemExit(f"error: {exc}") from None
    print(f"{'deobfuscator':28s} {'PSNR':>7s} {'SSIM':>6s} {'persons PSNR':>13s} {'persons SSIM':>13s}")
    for label, r in rows.items():
        print(f"{label:28s} {r['psnr']:7.2f} {r['ssim']:6.3f} {r['person_psnr']:13.2f} {r['person_ssim']:13.3f}")
    prov = provenance([Path(sys.executable).name, *sys.argv])
    prov["machine"]["torch_threads"] = torch.get_num_threads()
    write_json(args.out, {**prov, "data": args.data, "test_frames": len(test), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
