"""What an ideal silhouette still leaks: re-identification and detection on background-subtraction silhouettes.

The paper's promise is that people become silhouettes. This benchmark builds those silhouettes without any learning:
on the static PETS 2009 camera the background is the per-pixel median of the train frames, and a pixel belongs to a
person where some channel differs from it by more than `--tau` (then a 3x3 opening and closing). Two outputs:

  mask   white people on black: the silhouette and nothing else
  scene  the public background with the people as flat grey shapes: what a perfect obfuscator would send

Either in BLOCKxBLOCK cells with `--styles mask:4` (the outline goes, place and size stay).

Each is scored like a method of the privacy scorecard: person AP50 and count MAE of YOLOX-Nano on the PETS test split
(relative to its own boxes on the clean frames), the re-ID attack with the scorecard's recipe (clean-trained and
adaptive), and the post-hoc reconstruction attack with the scorecard's U-Net recipe trained from scratch (its identity
start means nothing on a silhouette). If an attacker recovers identity or appearance from silhouettes alone, no
obfuscator that keeps people as silhouettes can meet issue #5's targets for it.

    .venv/bin/python experiments/silhouette_floor.py                 # the committed run (see the JSON's command)
    .venv/bin/python experiments/silhouette_floor.py --smoke         # plumbing check: tiny attackers, few frames
    .venv/bin/python experiments/silhouette_floor.py --styles mask:4 # add a style; the others' results are kept

A phase whose result is already in the output JSON (detection + re-ID, reconstruction) is kept, not rerun (`--redo`
reruns everything); the reconstruction attackers checkpoint under runs/silhouette_floor/ and resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from silhouette.evaluation import silhouettes as S
from silhouette.evaluation.silhouettes import PERSON_GREY, silhouette_masks
from silhouette.silhouettes import parse_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' shared helpers: _common
import _common  # noqa: E402
from _common import REPO_ROOT, log  # noqa: E402

Transform = Callable[[torch.Tensor], torch.Tensor]
PETS = "runs/data/pets2009"


def median_background(ds: object, stride: int) -> torch.Tensor:
    """Per-pixel median of every `stride`-th frame of a dataset: the empty scene of a static camera."""
    return S.median_background(torch.stack([ds[i]["image"] for i in range(0, len(ds), stride)]))  # type: ignore


def silhouette(name: str, background: torch.Tensor, tau: float) -> S.BackgroundSilhouette:
    """The silhouette output 'STYLE[:BLOCK]' (mask, scene, mask:4, ...) against a background."""
    style, block = parse_spec(f"bgsub:{name}")
    return S.BackgroundSilhouette(background, style, tau, block)


def variants(background: torch.Tensor, tau: float, names: Sequence[str]) -> dict[str, Transform]:
    """The named silhouette outputs as frame transforms."""
    return {name: silhouette(name, background, tau) for name in names}


def clip_faces(style: str, tau: float, every: int = 1, reconstructor: Transform | None = None) -> dict:
    """The scorecard's face columns for one silhouette style: each face clip against the median of its own frames,
    on the silhouettes and (given the style's reconstruction attacker) on what it paints back from them."""
    from silhouette.privacy import faces as F

    footage = F.resolve_footage(None)
    detectors = [F.build_face_detector(n) for n, why in F.available_face_detectors().items() if not why]
    out: dict = {"key": {"detectors": [d.name for d in detectors], "every": every, "background": "median of the clip"},
                 "clips": [f.label for f in footage]}
    for f in footage:
        frames = F.load_footage([f], every=every)
        transform = silhouette(style, S.median_background(torch.stack(frames[f.label])), tau)
        with torch.no_grad():
            res = F.run_face_attack(detectors, frames, transform, reconstructor)
        variants = ("obfuscated", "reconstructed") if reconstructor is not None else ("obfuscated",)
        for d in detectors:
            acc = out.setdefault(d.name, {"detector": d.name, "frames": 0, "reference_faces": 0})
            acc["frames"] += res[d.name]["frames"]
            acc["reference_faces"] += res[d.name]["reference_faces"]
            for v in variants:
                o = acc.setdefault(v, {"reference_faces": 0, "found_again": 0})
                for k in ("reference_faces", "found_again"):
                    o[k] += res[d.name][v][k]
    for d in detectors:
        for v in variants:
            o = out[d.name][v]
            o["fraction"] = o["found_again"] / o["reference_faces"] if o["reference_faces"] else float("nan")
    return out


def write_rows(folder: Path, results: dict, args: argparse.Namespace, prior: dict | None) -> None:
    """The silhouettes as rows `silhouette scorecard --from` merges (bgsub:mask, bgsub:scene), attack by attack."""
    from silhouette.privacy.scorecard import write_scorecard

    rows = [{"method": f"bgsub:{name}", "family": "bgsub", "setting": f"background subtraction, {name}, tau {args.tau}",
             "reid": r["reid"], "reconstruction": r.get("reconstruction"), "faces": r.get("faces"), "utility": None}
            for name, r in results.items()]
    write_scorecard(folder, rows, {"scene_prior": prior, "device": "cpu",
                                   "data": args.data, "background": "per-pixel median of every 8th train frame"})


def mask_coverage(ds: object, background: torch.Tensor, tau: float, every: int = 10) -> dict[str, float]:
    """Fraction of GT-box pixels marked foreground, and of the pixels outside every box (false alarms)."""
    inside = outside = n_in = n_out = 0.0
    for i in range(0, len(ds), every):  # type: ignore[arg-type]
        item = ds[i]  # type: ignore[index]
        m = silhouette_masks(item["image"][None], background, tau)[0, 0]
        box = torch.zeros_like(m)
        # rounded edges, not privacy.reconstruction.person_mask: that one counts every pixel a box touches, which
        # is right for scoring reconstructions but dilutes the in-box fraction here
        for x0, y0, x1, y1 in item["gt_boxes"].reshape(-1, 4).round().int().tolist():
            box[y0:y1, x0:x1] = 1
        inside += float((m * box).sum())
        n_in += float(box.sum())
        outside += float((m * (1 - box)).sum())
        n_out += float((1 - box).sum())
    return {"in_boxes": inside / max(n_in, 1.0), "outside_boxes": outside / max(n_out, 1.0)}


def results_names(out: Path) -> list[str]:
    """The styles an earlier run in `out` attacked (the example shows every style of the results)."""
    from silhouette.fileio import read_json

    path = out / "silhouette_floor.json"
    return list(read_json(path).get("results", {})) if path.is_file() else []


def save_example(ds: object, fns: dict[str, Transform], path: Path) -> None:
    """One test frame beside its silhouette outputs (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from silhouette.fileio import atomic_path

    img = ds[len(ds) // 2]["image"][None]  # type: ignore[index,arg-type]
    panels = {"clean": img, **{k: fn(img) for k, fn in fns.items()}}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 2.8))
    for ax, (name, x) in zip(axes, panels.items()):
        ax.imshow(x[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Score both silhouette variants; print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=PETS, help="prepared pets2009 dataset (it has identity ids)")
    ap.add_argument("--tau", type=float, default=0.06, help="foreground threshold on the max channel difference")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--smoke", action="store_true", help="tiny attackers and few frames (plumbing only)")
    ap.add_argument("--recon-epochs", type=int, default=None,
                    help="reconstruction attacker epochs (default: the scorecard's 20; smoke: 1)")
    ap.add_argument("--styles", default="mask,scene", help="silhouette styles to (re)attack, comma-separated "
                                                               "(default: both; the other's results are kept)")
    ap.add_argument("--redo", action="store_true", help="rerun the phases already in the output JSON")
    ap.add_argument("--out", default=None, help="results folder (default: results/experiments/silhouette_floor, "
                                                "with --smoke a temporary one)")
    args = ap.parse_args(argv)
    styles = [t.strip() for t in args.styles.split(",") if t.strip()]
    for t in styles or [""]:
        try:
            parse_spec(f"bgsub:{t}")
        except ValueError:
            ap.error(f"--styles {args.styles}: expected one or more of {', '.join(S.STYLES)}, each optionally :BLOCK "
                     "(e.g. mask:4)")
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from silhouette.data.torch_dataset import FrameDataset
    from silhouette.evaluation.evaluate import evaluate_obfuscator
    from silhouette.fileio import read_json, write_json
    from silhouette.privacy import reconstruction as R
    from silhouette.privacy import reid as I
    from silhouette.privacy.attack_suite import gt_boxes, uint8_frames

    out = Path(args.out) if args.out else (
        Path("/tmp/silhouette_floor_smoke") if args.smoke else REPO_ROOT / "results" / "experiments" / "silhouette_floor")
    out.mkdir(parents=True, exist_ok=True)
    train_ds, test_ds = FrameDataset(args.data, "train"), FrameDataset(args.data, "test")
    background = median_background(train_ds, 8)
    fns = variants(background, args.tau, styles)
    save_example(test_ds, variants(background, args.tau, list(dict.fromkeys([*S.STYLES, *results_names(out), *styles]))),
                 out / "example.png")
    coverage = mask_coverage(test_ds, background, args.tau)
    log(f"silhouette masks cover {coverage['in_boxes']:.0%} of the person boxes, {coverage['outside_boxes']:.2%} elsewhere")

    recipe = I.QUICK_REID if args.smoke else I.ReIDRecipe()
    tr_stride, te_stride = (8, 2) if args.smoke else (2, 1)  # as `silhouette attack`
    reid_train = [train_ds[i] for i in range(0, len(train_ds), tr_stride)]
    reid_test = [test_ds[i] for i in range(0, len(test_ds), te_stride)]
    json_path = out / "silhouette_floor.json"
    previous = read_json(json_path) if json_path.is_file() and not args.redo else {}
    if previous and (previous.get("smoke") != args.smoke or previous.get("tau") != args.tau):
        previous = {}  # another setting: nothing in it applies
    results: dict[str, dict] = previous.get("results", {})
    phases: dict[str, dict] = previous.get("phases", {})
    if results and "phases" not in previous:  # a run from before phases were recorded
        phases["detection_reid"] = {k: previous[k] for k in ("command", "date", "machine")}

    def save() -> None:
        payload = {
            **_common.run_info(load_before, versions=_common.versions("python", "torch", "opencv")),
            "data": args.data, "tau": args.tau, "background": "per-pixel median of every 8th train frame",
            "person_grey": PERSON_GREY, "mask_coverage": coverage, "smoke": args.smoke,
            "detector": "yolox_nano (relative AP50 vs its boxes on the clean test frames)",
            "reid_frames": {"train_stride": tr_stride, "test_stride": te_stride}, "results": results,
            "phases": phases, "scene_prior": prior, "verdict": verdict,
        }
        write_json(json_path, payload)

    prior, verdict = previous.get("scene_prior"), previous.get("verdict")
    clean_model, cache = None, {}
    for name, fn in fns.items():
        if "reid" in results.get(name, {}):
            continue
        log(f"{name}: detection")
        ev = evaluate_obfuscator(fn, args.data, "test", ["yolox_nano"], max_frames=12 if args.smoke else None,
                                 progress=False)
        det = ev["detectors"]["yolox_nano"]
        log(f"{name}: re-ID")
        reid, clean_model = I.run_reid_attack(reid_train, reid_test, fn, None, recipe, clean_model, name,
                                              progress=False, cache=cache)
        results[name] = {"ap50": det["relative"]["ap50"], "count_mae": det["count"]["obf_vs_clean"]["mae"],
                         "ssim": ev["similarity"]["ssim"], "reid": reid}
        log(f"{name}: AP50 {results[name]['ap50']:.3f}, adaptive rank-1 {reid['adaptive']['obfuscated']['rank1']:.3f}")
        phases["detection_reid"] = _common.run_info(load_before)
        save()

    recon_recipe = R.QUICK_RECIPE if args.smoke else R.ReconstructionRecipe()
    recon_recipe = dataclasses.replace(recon_recipe, residual=False,
                                       epochs=args.recon_epochs or (1 if args.smoke else recon_recipe.epochs))
    train_idx = list(range(len(train_ds)))[: recon_recipe.max_train_frames]
    test_idx = list(range(len(test_ds)))[: recon_recipe.max_test_frames]
    train_u8, test_u8 = uint8_frames(train_ds, train_idx), uint8_frames(test_ds, test_idx)
    boxes = gt_boxes(test_ds, test_idx)
    if prior is None:
        prior = R.scene_prior_floor(train_u8, test_u8, boxes)
    ckpt_dir = REPO_ROOT / "runs" / ("silhouette_floor_smoke" if args.smoke else "silhouette_floor")
    for name, fn in fns.items():
        done, ckpt = results[name].get("reconstruction"), ckpt_dir / f"reconstruction_{name.replace(':', '_')}.pt"
        if done and recon_recipe.to_dict() == done["recipe"] and ckpt.is_file():
            continue  # without its checkpoint the attacker is retrained: the faces phase paints with it
        log(f"{name}: reconstruction attacker ({recon_recipe.epochs} epochs, from scratch)")
        res, _ = R.run_reconstruction_attack(fn, (x.float() / 255 for x in train_u8), (x.float() / 255 for x in test_u8),
                                             recon_recipe, ckpt, name,
                                             progress=not args.smoke, test_boxes=boxes)
        results[name]["reconstruction"] = res
        log(f"{name}: people reconstructed at {res['test']['person_psnr']:.2f} dB, SSIM {res['test']['person_ssim']:.3f}")
        phases["reconstruction"] = _common.run_info(load_before)
        save()

    for name in fns:
        faces = results[name].get("faces") or {}
        if not any("reconstructed" in v for v in faces.values() if isinstance(v, dict)):
            log(f"{name}: faces (MTCNN and Haar on the shared face clips, each against its own background, "
                "on the silhouettes and on their reconstructions)")
            attacker = R.load_attacker(ckpt_dir / f"reconstruction_{name.replace(':', '_')}.pt")[0].to("cpu")
            results[name]["faces"] = clip_faces(name, args.tau, every=20 if args.smoke else 1,
                                                reconstructor=lambda x, m=attacker: R.reconstruct(m, x))
            phases["faces"] = _common.run_info(load_before)
            save()
    write_rows(out / "scorecard", results, args, prior)

    chance = next(iter(results.values()))["reid"]["adaptive"]["obfuscated"]["chance_rank1"]
    lines = ["| output | person AP50 | count MAE | re-ID R1 clean-trained | re-ID R1 adaptive | adaptive mAP | chance R1 "
             "| people reconstructed, PSNR dB / SSIM |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ad, ct = r["reid"]["adaptive"]["obfuscated"], r["reid"]["clean_trained"]["obfuscated_query"]
        rec = r["reconstruction"]["test"]
        lines.append(f"| {name} | {r['ap50']:.3f} | {r['count_mae']:.2f} | {ct['rank1']:.3f} | {ad['rank1']:.3f} | "
                     f"{ad['map']:.3f} | {ad['chance_rank1']:.3f} | {rec['person_psnr']:.2f} / {rec['person_ssim']:.3f} |")
    lines.append(f"| *zero-information floor (mean train frame)* | | | | | | | {prior['person_psnr']:.2f} / "
                 f"{prior['person_ssim']:.3f} |")
    best = min(r["reid"]["adaptive"]["obfuscated"]["rank1"] for r in results.values())
    worst_rec = max(r["reconstruction"]["test"]["person_psnr"] for r in results.values())
    verdict = (f"adaptive re-ID on ideal silhouettes: rank-1 {best:.3f} at best, {best / chance:.1f}x chance "
               f"(issue #5 target: <= 2x chance); people reconstructed from them at up to {worst_rec:.2f} dB "
               f"(floor {prior['person_psnr']:.2f} dB)")
    _common.print_report("\n".join(lines), verdict)
    save()
    log(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
