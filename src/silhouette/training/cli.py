"""`silhouette train`: run or resume an adversarial training run from a YAML config."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    p = sub.add_parser(
        "train",
        help="train an obfuscator against a deobfuscator with a frozen detector",
        description="Train the obfuscator/deobfuscator pair (paper objective) from a YAML config; "
        "writes last.pt/best.pt, metrics.csv and TensorBoard logs to --out. "
        "Multi-GPU: torchrun --nproc_per_node N -m silhouette train ...",
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/cpu.yaml")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from silhouette.training.config import load_config
    from silhouette.training.trainer import train

    cfg = load_config(args.config, args.overrides)
    out = args.out or f"runs/{cfg.name}"
    metrics = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    keys = ("val_ap50", "val_ssim", "val_recon_mse")
    print(f"done: {out}/last.pt  " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics))
    return 0
