"""`silhouette attack`: what can an adversary still learn from obfuscated frames?"""

from __future__ import annotations

import argparse
import textwrap

ATTACKS = ("reconstruction", "faces", "reid")
DEFAULT_BASELINES = "blur:1,noise:0.02,quantize:15,pixelate:4"

DESCRIPTION = textwrap.dedent(
    """\
    Attack our obfuscator and the classic baselines with the same adversaries, and write a scorecard
    (scorecard.md, scorecard.json, tradeoff.png) plus per-method results into --out.

    Methods (--methods, comma-separated):
      ours            the obfuscator of --checkpoint (default: the shipped one)
      ours:LABEL=PATH another obfuscator checkpoint, in a row named ours:LABEL (repeat with other
                      labels to compare several trained obfuscators in one scorecard)
      clean           unmodified frames (the reference: everything leaks)
      blur[:SIGMA]  noise[:FACTOR]  quantize[:LEVELS]  pixelate[:BLOCK]
                      classic baselines of `silhouette evaluate --baseline`; default parameters
                      blur:1, noise:0.02, quantize:15, pixelate:4. Repeat a family with other
                      parameters (blur:1,blur:3) to draw its trade-off curve.

    Attacks (--attacks, comma-separated):
      reconstruction  the obfuscation is frozen; a fresh U-Net (far more parameters than our
                      training-time deobfuscator) learns obfuscated -> original from scratch with
                      Adam on MSE on the train split, and is scored on the test split with PSNR
                      and SSIM, on whole frames and on ground-truth person boxes only, beside the
                      zero-information floor (the mean train frame: on a static camera the background
                      is public). Same recipe for every method; resumable from --out/attackers/.
      faces           Haar cascades (OpenCV < 5; overlapping boxes of one face merged) and/or MTCNN
                      (facenet-pytorch) find faces on the clean frames of the face footage; reported
                      is the fraction found again (a detection with IoU >= 0.3) on obfuscated and on
                      reconstructed frames. Footage: --clips, else the two shared Intel face clips
                      at their native 480x270. The scorecard names the footage used.
      reid            persons cropped by ground-truth boxes (needs identity ids: pets2009) to 64x32;
                      an embedding CNN trained by identity classification; gallery = early test
                      frames, queries = later ones; cosine rank-1 and mAP beside chance. Two threat
                      models: trained on clean crops matching obfuscated queries to a clean gallery,
                      and adaptive (trained and matched on the method's own crops).
    """
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `silhouette attack`."""
    p = sub.add_parser("attack", help="privacy attacks (reconstruction, face detection, re-identification) + scorecard",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="prepared dataset with train and test splits (pets2009 for re-ID: it has identity ids)")
    p.add_argument("--checkpoint", metavar="CKPT", help="obfuscator checkpoint for method 'ours' (default: the shipped one)")
    p.add_argument("--pair", metavar="CKPT",
                   help="a private-mode pair (obfuscator checkpoint, co-trained detector beside it): attacked in a row "
                        "named private, before any --methods")
    p.add_argument("--methods", metavar="A,B", help=f"methods to attack (default: ours if available, clean, {DEFAULT_BASELINES})")
    p.add_argument("--attacks", default=",".join(ATTACKS), metavar="A,B", help=f"attacks to run (default: {','.join(ATTACKS)})")
    p.add_argument("--out", default="runs/attack", metavar="DIR", help="output folder (default: runs/attack)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny attackers, few frames, 1-3 epochs")
    p.add_argument("--epochs", type=int, metavar="N", help="reconstruction attacker epochs (default: 20; quick: 2)")
    p.add_argument("--recon-scratch", action="store_true",
                   help="train the reconstruction U-Net from scratch instead of starting it as the identity (in logit "
                        "space) on its input; that start saturates on outputs whose pixels sit at 0 or 1 (few-level "
                        "outputs, strong noise) and then barely learns: the scorecard flags such rows")
    p.add_argument("--reid-epochs", type=int, metavar="N", help="re-ID attacker epochs (default: 15; quick: 3)")
    p.add_argument("--face-detectors", default="auto", metavar="A,B",
                   help="haar, mtcnn, or 'auto' = every one that can run here (default: auto)")
    p.add_argument("--clips", action="append", metavar="PATH[,PATH]",
                   help="footage of the faces attack (repeatable, comma-separated): video files, image folders, or a "
                        "prepared dataset folder (e.g. the --data DIR itself: its test split, or all its frames if it "
                        "has none). Frames are used at their own size: faces should be >= ~20 px wide there "
                        "(default: the shared Intel face clips)")
    p.add_argument("--utility", action="append", default=[], metavar="FILE|METHOD=EVAL_JSON",
                   help="person AP50/count MAE per method: a JSON {method: {ap50, count_mae}}, or METHOD=path to a "
                        "`silhouette evaluate` evaluation.json (repeatable)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="where the attackers and our obfuscator run (default: auto = cuda if available); "
                        "face detectors stay on the CPU")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=attack_command)
    m = sub.add_parser("scorecard", help="merge several `attack` outputs into one privacy scorecard",
                       description="Merge the scorecard.json of several `silhouette attack` runs (e.g. baselines attacked "
                                   "on a GPU machine, our obfuscator on a CPU) into one scorecard.md/json + tradeoff.png. "
                                   "A method in a later --from updates the earlier row attack by attack; differing attacker "
                                   "recipes are noted.")
    m.add_argument("--from", dest="sources", action="append", required=True, metavar="DIR",
                   help="an attack output folder (or its scorecard.json); repeatable, later ones win")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for the merged scorecard")
    m.add_argument("--utility", action="append", default=[], metavar="METHOD=EVAL_JSON",
                   help="person AP50 / count MAE for a method from a `silhouette evaluate` evaluation.json (repeatable)")
    m.add_argument("--rename", action="append", default=[], metavar="METHOD@DIR=NEW",
                   help="rename row METHOD of the --from run DIR to NEW before merging, e.g. keep an older obfuscator's "
                        "`ours` apart: ours@runs/attack_old=ours:old (repeatable)")
    m.set_defaults(func=scorecard_command)


def attack_command(args: argparse.Namespace) -> int:
    """Handler of `silhouette attack`."""
    from silhouette.privacy.attack_suite import AttackConfig, run_attacks

    cfg = AttackConfig.from_args(args)
    paths = run_attacks(cfg)
    print(paths["markdown"].read_text(encoding="utf-8"))
    for kind, path in paths.items():
        print(f"wrote {path}")
    return 0


def scorecard_command(args: argparse.Namespace) -> int:
    """Handler of `silhouette scorecard`."""
    from silhouette.errors import SilhouetteError
    from silhouette.privacy.scorecard import merge_scorecards, parse_rename, utility_from_evaluation

    utility = {}
    for spec in args.utility:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SilhouetteError(f"--utility {spec!r}: expected METHOD=EVAL_JSON")
        utility[name.strip()] = utility_from_evaluation(path)
    paths = merge_scorecards(args.sources, args.out, utility, [parse_rename(r) for r in args.rename])
    print(paths["markdown"].read_text(encoding="utf-8"))
    for path in paths.values():
        print(f"wrote {path}")
    return 0
