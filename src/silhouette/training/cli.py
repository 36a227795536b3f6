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
    _add_run_options(p, "YAML config, e.g. configs/cpu.yaml", "run folder (default: runs/<config name>)")
    p.set_defaults(func=_train)

    f = sub.add_parser(
        "finetune",
        help="fine-tune a config's detector on a classic baseline's frames (private mode's fair competitor)",
        description="Give a plain obfuscation (blur, pixelation, ...) what private mode gets: the same detector, targets, "
        "crops, epochs and learning rate, trained on that baseline's frames. Writes detector.onnx and pair.json "
        "(evaluate it with `silhouette evaluate --pair DIR/pair.json`); each epoch is saved, --resume continues.",
    )
    _add_run_options(f, "YAML config whose data/detector/train budget to use, e.g. configs/private.yaml", "run folder",
                     out_required=True)
    f.add_argument("--baseline", required=True, metavar="METHOD:PARAM", help="e.g. pixelate:4, greypix:4, blur:3, downscale:8, quantize:4, or bgsub:mask / bgsub:scene (background-subtraction silhouettes against the median of the train frames; bgsub:mask:4 in 4x4-pixel cells)")
    f.set_defaults(func=_finetune)


def _add_run_options(p: argparse.ArgumentParser, config_help: str, out_help: str, out_required: bool = False) -> None:
    """The options of a training run: its config and overrides, its folder, resuming it, progress bars."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--out", required=out_required, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _train(args: argparse.Namespace) -> int:
    from silhouette.training.config import load_config
    from silhouette.training.trainer import train

    cfg = load_config(args.config, args.overrides)
    out = args.out or f"runs/{cfg.name}"
    metrics = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    keys = ("val_ap50", "val_ssim", "val_recon_mse")
    print(f"done: {out}/last.pt  " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from silhouette.training.config import load_config
    from silhouette.training.finetune import Finetuner

    cfg = load_config(args.config, args.overrides)
    pair = Finetuner(cfg, args.baseline, args.out, resume=args.resume, progress=not args.no_progress).run()
    last = pair["history"][-1] if pair["history"] else {}
    print(f"done: {args.out}/pair.json  {pair['baseline']} + {pair['detector']}  val_ap50={last.get('val_ap50', float('nan')):.4f}")
    return 0
