"""Distil an obfuscator into another layout: the student learns the teacher's output image (no labels, no detector).

Run: .venv/bin/python experiments/distill_fused.py [--teacher CKPT] [--student obf_fused] [--minutes 10]
     (writes --out/obfuscator.pt and results/experiments/distill_fused.json)

Why: `obf_fused` runs the paper's MAC budget 1.8x faster than `obf_paper`, but trained adversarially on PETS it does
not carry over to other cameras. Copying the shipped `obf_paper`'s mapping, on frames of both datasets, tests whether
the fast layout can carry a mapping that does. Score the result with `silhouette evaluate --checkpoint OUT/obfuscator.pt`.
Training: random 160x256 crops and flips of every 2nd PETS train frame and every 6th Intel train frame, MSE to the
teacher's output in [0,1] pixel space (the teacher runs in ONNX Runtime), Adam with cosine decay, for a fixed wall-clock budget; the held-out score is
the MSE/PSNR to the teacher on the PETS and Intel validation splits (whole frames).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' shared helpers: _common
from _common import print_report, run_info  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "experiments" / "distill_fused.json"


def _frames(roots: list[tuple[Path, int]], split: str) -> torch.Tensor:
    """uint8 frames of `split` from each (prepared dataset, stride), stacked (all datasets share 320x200)."""
    from silhouette.training.frames import load_frame_set

    return torch.cat([load_frame_set(root, split, stride).images for root, stride in roots])


@torch.no_grad()
def _held_out(student: torch.nn.Module, teacher: Callable[[np.ndarray], np.ndarray], images: torch.Tensor) -> dict[str, float]:
    """MSE and PSNR of the student's output against the teacher's on whole frames."""
    student.eval()
    se, n = 0.0, 0
    for i in range(0, len(images), 8):
        x = images[i : i + 8].float().div(255.0)
        se += float(((student(x) - torch.from_numpy(teacher(x.numpy()))) ** 2).sum())
        n += x.numel()
    student.train()
    mse = se / n
    return {"mse": round(mse, 6), "psnr": round(10 * math.log10(1.0 / mse), 2), "frames": len(images)}


def main(argv: list[str] | None = None) -> int:
    """Distil for --minutes, save the student, print and write the held-out agreement."""
    from silhouette.edge.export import cached_onnx
    from silhouette.edge.runtime import OnnxRunner
    from silhouette.fileio import write_json
    from silhouette.models import build_obfuscator, count_macs, count_params, load_obfuscator, save_checkpoint
    from silhouette.training.augment import crop_and_flip

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the shipped obfuscator)")
    p.add_argument("--student", default="obf_fused", help="registered obfuscator preset to train (default obf_fused)")
    p.add_argument("--pets", type=Path, default=Path("runs/data/pets2009"), help="prepared pets2009 folder")
    p.add_argument("--intel", type=Path, default=Path("runs/data/intel"), help="prepared intel folder")
    p.add_argument("--init", type=Path, default=None, help="start from this student checkpoint (continue a distillation)")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget (default 10)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/distill_fused"), help="folder for obfuscator.pt")
    p.add_argument("--json", type=Path, default=RESULTS, help="results JSON")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    student = (load_obfuscator(args.init) if args.init else build_obfuscator(args.student)).train()
    # the teacher runs in ONNX Runtime, ~6x torch's speed for this net
    teacher = OnnxRunner(cached_onnx(args.teacher), threads=args.threads)
    train = _frames([(args.pets, 2), (args.intel, 6)], "train")
    val = {"pets2009 val": _frames([(args.pets, 1)], "val"), "intel val": _frames([(args.intel, 1)], "val")}
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    budget, start, step, losses = args.minutes * 60.0, time.time(), 0, []
    while time.time() - start < budget:
        frac = min(1.0, (time.time() - start) / budget)
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(0, len(train), (args.batch,), generator=gen).tolist()
        x = crop_and_flip(train[idx].float().div(255.0), [160, 256], True, gen)
        target = torch.from_numpy(teacher(x.numpy()))
        loss = torch.nn.functional.mse_loss(student(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            print(f"step {step}  {time.time() - start:5.0f}s  mse {sum(losses[-50:]) / 50:.5f}", flush=True)
    seconds = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(
        args.out / "obfuscator.pt", obfuscator=student.eval(), obfuscator_spec={"name": args.student, "kwargs": {}},
        config={"name": "distill", "detector": {"spec": "yolox_nano"}, "teacher": str(args.teacher or "shipped default")},
        step=step, metrics={"distill_mse": losses[-1] if losses else None},
    )
    held = {name: _held_out(student, teacher, imgs) for name, imgs in val.items()}
    result = {
        **run_info(load_before),
        "teacher": str(args.teacher or "shipped default"), "student": args.student,
        "init": str(args.init) if args.init else None,
        "params": count_params(student), "macs_320x200": count_macs(student),
        "train_frames": len(train), "steps": step, "batch": args.batch, "seconds": round(seconds, 1),
        "final_train_mse": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 6), "held_out": held,
        "checkpoint": str(ckpt),
    }
    table = "\n".join(["| split | frames | MSE to teacher | PSNR to teacher (dB) |", "|---|---:|---:|---:|"]
                      + [f"| {name} | {h['frames']} | {h['mse']} | {h['psnr']} |" for name, h in held.items()])
    print_report(table, f"{args.student} distilled from {result['teacher']}: {step} steps of {args.batch} crops in "
                 f"{seconds / 60:.1f} min; score it with `silhouette evaluate --checkpoint {ckpt}`")
    write_json(args.json, result)
    print(f"wrote {args.json} and {ckpt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
