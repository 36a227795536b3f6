"""`silhouette info`: parameters, MACs and training summary of a model preset or checkpoint."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `info` command."""
    p = sub.add_parser(
        "info",
        help="show parameters and MACs of an obfuscator checkpoint or model preset",
        description="Print the parameter count and multiply-accumulates (torch.utils.flop_counter) of a "
        "checkpoint's obfuscator or of a registered model preset, plus the checkpoint's config and metrics.",
    )
    p.add_argument("target", nargs="?", default=None,
                   help="checkpoint file or model preset name (default: the shipped obfuscator); "
                   "'list' shows the presets")
    p.add_argument("--size", default="320x200", help="frame size WxH for the MAC count (default 320x200)")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from silhouette.data.sources import parse_size
    from silhouette.models import MODELS, build_model, count_macs, count_params
    from silhouette.models.checkpoint import DEFAULT_CHECKPOINT, build_from_entry, read_checkpoint

    w, h = parse_size(args.size)
    if args.target == "list":
        for name in MODELS.names():
            m = build_model(name)
            print(f"{name:14s} params {count_params(m) / 1e6:.3f} M   MACs@{w}x{h} {count_macs(m, (h, w)) / 1e9:.3f} G")
        return 0
    ckpt = None
    if args.target is None or Path(args.target).suffix == ".pt" or Path(args.target).is_file():
        path = Path(args.target) if args.target else DEFAULT_CHECKPOINT
        if args.target is None and not path.is_file():
            from silhouette.errors import SilhouetteError

            raise SilhouetteError(f"the default obfuscator checkpoint {path} is not installed; name a checkpoint or preset")
        ckpt = read_checkpoint(path)
        model = build_from_entry(ckpt["obfuscator"], path)
        spec = ckpt["obfuscator"]["spec"]
        print(f"checkpoint: {path}")
        print(f"model: {spec.get('name')} {spec.get('kwargs') or ''}".rstrip())
    else:
        model = build_model(args.target)
        print(f"model: {args.target}")
    params, macs = count_params(model), count_macs(model, (h, w))  # a MAC count is a full forward pass: once
    print(f"params: {params:,} ({params / 1e6:.3f} M)")
    print(f"MACs at {w}x{h}: {macs:,} ({macs / 1e9:.3f} G)")
    if ckpt is not None:
        cfg = ckpt.get("config") or {}
        print(f"epoch: {ckpt.get('epoch')}  step: {ckpt.get('step')}")
        if cfg:
            det = cfg.get("detector", {}).get("spec")
            tr = cfg.get("train", {})
            print(f"trained: config {cfg.get('name')!r}, detector {det}, epochs {tr.get('epochs')}, λ {tr.get('lam')}")
        for k, v in (ckpt.get("metrics") or {}).items():
            if k.startswith("val_") or k in ("epoch_s", "images_per_s"):
                print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0
