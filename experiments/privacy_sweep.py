"""The privacy trade-off across the obfuscator's settings: train, evaluate and attack one point per setting.

Each point is the shipped default's recipe (configs/default.yaml, obf_fused) with one setting changed: λ (weight
of the deobfuscator's MSE in the obfuscator loss), the width multiplier, β (the silhouette prior) or γ (the
identity-confusion term); one more line varies γ with the obfuscator's learning rate raised to 1e-3. The shipped
default itself is the point λ=1, width 1, β=0, γ=0. Every point is evaluated on the PETS 2009 test split and attacked
by the same adversaries in one `silhouette attack` run; the table, the JSON and a trade-off plot (one line per
setting, the baselines and the ideal silhouettes of experiments/silhouette_floor.py beside them) come out at the end.
Every phase skips what is already done, so a stopped sweep resumes where it stopped (an unfinished training run
continues from its last.pt).

    .venv/bin/python experiments/privacy_sweep.py                        # the committed run (about 2 h on 2 cores)
    .venv/bin/python experiments/privacy_sweep.py --smoke --runs /tmp/sw  # plumbing check, minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' shared helpers: _common
import _common  # noqa: E402
from _common import REPO_ROOT, log, silhouette, wait_all  # noqa: E402

PETS = "runs/data/pets2009"
CONFIG = "configs/default.yaml"
DEFAULT_CKPT = "src/silhouette/assets/obfuscator_default.pt"
# the shipped default's settings; each point changes one of them
DEFAULT = {"λ": 1.0, "width": 1.0, "β": 0.0, "γ": 0.0}


class Point(NamedTuple):
    """One trained obfuscator: the setting it varies, its value, the config overrides, and what else changed."""

    axis: str
    value: float
    overrides: list[str]
    also: str = ""  # a second change: the point then draws its own line, without the default on it


POINTS: dict[str, Point] = {
    "reid1": Point("γ", 1.0, ["train.reid_weight=1"]),
    "lam0": Point("λ", 0.0, ["train.lam=0"]),
    "lam10": Point("λ", 10.0, ["train.lam=10"]),
    "w050": Point("width", 0.5, ["model.obfuscator_kwargs.width=0.5"]),
    "b3": Point("β", 3.0, ["train.blank_weight=3"]),
    # a stronger identity term with the obfuscator learning 10x faster (cpu.yaml's rate): can the game hide identity
    # at all when the obfuscator is free to move?
    "reid3_lr3": Point("γ", 3.0, ["train.reid_weight=3", "train.lr_obf=1e-3"], also="lr_obf 1e-3"),
    # the controls for it: how much of its privacy is the faster rate alone (γ=0), and the γ between
    "lr3": Point("γ", 0.0, ["train.lr_obf=1e-3"], also="lr_obf 1e-3"),
    "reid05_lr3": Point("γ", 0.5, ["train.reid_weight=0.5", "train.lr_obf=1e-3"], also="lr_obf 1e-3"),
    "reid075_lr3": Point("γ", 0.75, ["train.reid_weight=0.75", "train.lr_obf=1e-3"], also="lr_obf 1e-3"),
    "reid1_lr3": Point("γ", 1.0, ["train.reid_weight=1", "train.lr_obf=1e-3"], also="lr_obf 1e-3"),
}
# the shipped default picked its best epoch (3) within the first 4 of 8; 4 epochs halve the game's cost
EPOCHS = 4
MAIN_SCORECARD = REPO_ROOT / "results" / "privacy" / "scorecard.json"
RESULTS = REPO_ROOT / "results" / "experiments" / "privacy_sweep"
PLOT = REPO_ROOT / "results" / "privacy" / "sweep.png"
SILHOUETTE_FLOOR = REPO_ROOT / "results" / "experiments" / "silhouette_floor" / "silhouette_floor.json"
PANELS = ("reid_adaptive", "face_obf", "rec_psnr_person")


def finished(run: Path, epochs: int) -> bool:
    """True when the run's metrics.csv has its last epoch and best.pt exists."""
    rows = run / "metrics.csv"
    if not (run / "best.pt").is_file() or not rows.is_file():
        return False
    last = list(csv.DictReader(rows.open(encoding="utf-8")))[-1:]
    return bool(last) and int(last[0]["epoch"]) >= epochs


def train_phase(runs: Path, names: list[str], parallel: int, epochs: int, smoke: bool, env: dict[str, str]) -> dict:
    """Train every point not yet finished, `parallel` at a time, resuming any that has a last.pt."""
    threads = max(1, (os.cpu_count() or 2) // parallel)
    pending = [n for n in names if not finished(runs / n, epochs)]
    out: dict[str, dict] = {n: {"rc": "already done"} for n in names if n not in pending}
    jobs = []
    for name in pending:
        sets = [*POINTS[name].overrides, f"train.epochs={epochs}", f"train.threads={threads}"]
        if smoke:
            sets += ["train.warmup_steps=4", "data.max_train_frames=8", "data.max_val_frames=4"]
        cmd = ["train", "--config", CONFIG, "--out", str(runs / name), "--no-progress"]
        cmd += ["--resume"] if (runs / name / "last.pt").is_file() else []
        for s in sets:
            cmd += ["--set", s]
        jobs.append((name, cmd, runs / f"{name}.log"))
    out.update(run_pool(jobs, parallel, {**env, "OMP_NUM_THREADS": str(threads)}))
    return out


def run_pool(jobs: list[tuple[str, list[str], Path]], parallel: int, env: dict[str, str]) -> dict[str, dict]:
    """Run (name, silhouette args, log) jobs with at most `parallel` at once, starting the next as one ends."""
    out: dict[str, dict] = {}
    running: dict[str, tuple] = {}
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < parallel:
            name, cmd, logfile = queue.pop(0)
            running[name] = (silhouette(cmd, logfile, env), time.time())
        for name, (p, t0) in list(running.items()):
            if p.poll() is not None:
                out[name] = {"rc": p.returncode, "seconds": round(time.time() - t0, 1)}
                log(f"done {name}: rc={p.returncode} in {out[name]['seconds']} s")
                del running[name]
        time.sleep(1)
    return out


def eval_phase(runs: Path, checkpoints: dict[str, str], parallel: int, smoke: bool, env: dict[str, str]) -> dict[str, Path]:
    """`silhouette evaluate` (yolox_nano, test split) for every checkpoint without an evaluation.json yet."""
    paths = {m: runs / "eval" / m.replace(":", "_") / "evaluation.json" for m in checkpoints}
    threads = max(1, (os.cpu_count() or 2) // parallel)
    jobs = [(m, ["evaluate", "--checkpoint", checkpoints[m], "--data", PETS, "--detectors", "yolox_nano",
                 "--out", str(paths[m].parent), "--no-progress", *(["--max-frames", "8"] if smoke else [])],
             paths[m].parent.with_suffix(".log")) for m in checkpoints if not paths[m].is_file()]
    for m, res in run_pool(jobs, parallel, {**env, "OMP_NUM_THREADS": str(threads)}).items():
        if res["rc"] != 0:
            raise SystemExit(f"evaluate {m} failed (rc {res['rc']}); see {paths[m].parent.with_suffix('.log')}")
    return paths


def attack_phase(runs: Path, checkpoints: dict[str, str], evals: dict[str, Path], epochs: int, attacks: str,
                 smoke: bool, env: dict[str, str]) -> Path:
    """One `silhouette attack` over every checkpoint (it caches each attack, so a rerun only does what is missing)."""
    out = runs / "attack"
    cmd = ["attack", "--data", PETS, "--methods", ",".join(f"{m}={c}" for m, c in checkpoints.items()),
           "--attacks", attacks, "--epochs", str(epochs), "--device", "cpu", "--threads", str(os.cpu_count() or 2), "--out", str(out),
           "--no-progress", *(["--quick"] if smoke else [])]
    for m, p in evals.items():
        cmd += ["--utility", f"{m}={p}"]
    res = wait_all({"attack": (silhouette(cmd, runs / "attack.log", env), time.time())}, float("inf"))["attack"]
    if res["rc"] != 0:
        raise SystemExit(f"attack failed (rc {res['rc']}); see {runs / 'attack.log'}")
    return out / "scorecard.json"


def sweep_rows(scorecard: dict) -> list[dict]:
    """The attacked points as flat scorecard rows, one line (family) per setting with the default on it; a point
    that also changes something else is a line of its own."""
    by_method = {r["method"]: r for r in scorecard["rows"]}
    lines: dict[str, list[tuple[str, float, str]]] = {}
    for axis, value in DEFAULT.items():
        lines.setdefault(f"ours, {axis}", []).append(("default", value, "default"))
    for name, p in POINTS.items():
        family = f"ours, {p.axis}" + (f" ({p.also})" if p.also else "")
        lines.setdefault(family, []).append((name, p.value, f"{p.axis}={p.value:g}" + (f", {p.also}" if p.also else "")))
    rows: list[dict] = []
    named_default = False
    for family, points in lines.items():
        for name, value, label in sorted(points, key=lambda p: p[1]):
            row = by_method.get(f"ours:{name}")
            if row is None:
                continue
            if name == "default":
                # one point on every line: named once, so the plot does not print it four times
                label, named_default = ("" if named_default else label), True
            rows.append({**row, "method": label, "family": family, "point": name, "value": value})
    return rows


def baseline_rows(recipe: dict | None) -> list[dict]:
    """Rows of the committed privacy scorecard that are not trained checkpoints; reconstruction columns only where
    their attacker recipe equals the sweep's (a 20-epoch attacker is not comparable with a 1-epoch one)."""
    if not MAIN_SCORECARD.is_file():
        return []
    data = json.loads(MAIN_SCORECARD.read_text(encoding="utf-8"))
    recipes = {r["method"]: (r.get("reconstruction") or {}).get("recipe") for r in data["results"]}
    rows = []
    for r in data["rows"]:
        if r["family"] == "ours":
            continue
        r = dict(r)
        if recipes.get(r["method"]) != recipe:
            r.update({k: None for k in ("rec_psnr", "rec_ssim", "rec_psnr_person", "rec_ssim_person", "face_rec", "reid_rec")})
        rows.append(r)
    return rows


def silhouette_rows() -> list[dict]:
    """The ideal silhouettes of experiments/silhouette_floor.py as rows with person AP50 and adaptive re-ID only."""
    if not SILHOUETTE_FLOOR.is_file():
        return []
    data = json.loads(SILHOUETTE_FLOOR.read_text(encoding="utf-8"))
    return [{"method": name, "family": "ideal silhouette", "ap50": r["ap50"],
             "reid_adaptive": r["reid"]["adaptive"]["obfuscated"]["rank1"]} for name, r in data["results"].items()]


def training_log(runs: Path) -> dict[str, dict | None]:
    """Per point (and the shipped default): seconds its training loop took (sum of epoch_s) and the epoch its best.pt
    holds with that epoch's validation AP50 (best.pt is the highest validation AP50, so a point that loses detection
    keeps an early epoch)."""
    from silhouette.models.checkpoint import read_checkpoint

    out: dict[str, dict | None] = {}
    for name in POINTS:
        rows_path, best = runs / name / "metrics.csv", runs / name / "best.pt"
        if not rows_path.is_file() or not best.is_file():
            out[name] = None
            continue
        rows = list(csv.DictReader(rows_path.open(encoding="utf-8")))
        epoch = int(read_checkpoint(best)["epoch"])
        val = next((float(r["val_ap50"]) for r in rows if int(r["epoch"]) == epoch), None)
        out[name] = {"loop_s": round(sum(float(r["epoch_s"] or 0) for r in rows), 1), "best_epoch": epoch,
                     "best_val_ap50": val, "val_ap50": [round(float(r["val_ap50"]), 3) for r in rows]}
    out["default"] = {"best_epoch": int(read_checkpoint(REPO_ROOT / DEFAULT_CKPT)["epoch"]), "of": 8}
    return out


def table(rows: list[dict]) -> str:
    """Markdown table of the sweep points."""
    cols = [("best_epoch", "epoch", "{}"), ("ap50", "AP50", "{:.3f}"), ("count_mae", "count MAE", "{:.2f}"), ("obf_ssim", "SSIM obf↔orig", "{:.3f}"),
            ("rec_psnr_person", "recon PSNR persons (dB)", "{:.2f}"), ("rec_ssim_person", "recon SSIM persons", "{:.3f}"),
            ("face_obf", "faces found (obf)", "{:.2f}"), ("reid_obf", "re-ID R1 clean-trained", "{:.3f}"),
            ("reid_adaptive", "re-ID R1 adaptive", "{:.3f}"), ("reid_chance", "chance", "{:.3f}")]
    lines = ["| setting | " + " | ".join(h for _, h, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        if r["point"] == "default" and not r["method"]:
            continue
        cells = ["–" if r.get(k) is None else f.format(r[k]) for k, _, f in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attack_recipe(scorecard: dict) -> dict | None:
    """The sweep's reconstruction attacker recipe (that of its first row)."""
    return (scorecard["results"][0].get("reconstruction") or {}).get("recipe")


def draw(rows: list[dict], scorecard: dict) -> None:
    """sweep.png: the sweep's rows with the committed baselines and the ideal silhouettes beside them."""
    from silhouette.privacy.scorecard import plot_tradeoff

    plot_tradeoff(rows + baseline_rows(attack_recipe(scorecard)) + silhouette_rows(), PLOT, attacks=PANELS,
                  prior=scorecard["meta"].get("scene_prior"))


def replot() -> int:
    """Redraw sweep.png from the committed sweep results, with today's baselines and silhouettes beside them."""
    if not (RESULTS / "sweep.json").is_file() or not (RESULTS / "scorecard.json").is_file():
        raise SystemExit(f"--replot: no committed results in {RESULTS}; run the sweep first")
    scorecard = json.loads((RESULTS / "scorecard.json").read_text(encoding="utf-8"))
    epochs = {r["point"]: r.get("best_epoch") for r in json.loads((RESULTS / "sweep.json").read_text(encoding="utf-8"))["rows"]}
    rows = [{**r, "best_epoch": epochs.get(r["point"])} for r in sweep_rows(scorecard)]
    print(table(rows))
    draw(rows, scorecard)
    print(f"\nwrote {PLOT}")
    return 0


def main() -> int:
    """Run the phases, then write the table, the JSON and the plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/sweep"), help="working folder (default runs/sweep)")
    ap.add_argument("--points", default=",".join(POINTS), help=f"comma-separated points (default: {','.join(POINTS)})")
    ap.add_argument("--parallel", type=int, default=2, help="training/evaluation jobs at a time (default 2)")
    ap.add_argument("--attack-epochs", type=int, default=1, help="reconstruction attacker epochs (default 1)")
    ap.add_argument("--attacks", default="reconstruction,faces,reid",
                    help="attacks to run (default: all); results cached by an earlier run are kept either way")
    ap.add_argument("--train-only", action="store_true", help="stop after training (run again without it for the rest)")
    ap.add_argument("--smoke", action="store_true", help="tiny runs and --quick attacks (plumbing check); writes no results")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plot from the committed results (after the main scorecard changed)")
    args = ap.parse_args()
    if args.replot:
        return replot()
    names = [n for n in args.points.split(",") if n]
    unknown = set(names) - set(POINTS)
    if unknown:
        ap.error(f"--points: unknown {sorted(unknown)[0]!r}; choose from {', '.join(POINTS)}")
    load = os.getloadavg()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = args.runs if args.runs.is_absolute() else REPO_ROOT / args.runs
    t0 = time.time()
    train = train_phase(runs, names, args.parallel, 1 if args.smoke else EPOCHS, args.smoke, env)
    if args.train_only:
        return 0
    ckpts = {"ours:default": DEFAULT_CKPT, **{f"ours:{n}": str(runs / n / "best.pt") for n in names}}
    evals = eval_phase(runs, ckpts, args.parallel, args.smoke, env)
    scorecard = json.loads(attack_phase(runs, ckpts, evals, args.attack_epochs, args.attacks, args.smoke, env).read_text(encoding="utf-8"))
    trained = training_log(runs)
    rows = [{**r, "best_epoch": (trained.get(r["point"]) or {}).get("best_epoch")} for r in sweep_rows(scorecard)]
    recipe = attack_recipe(scorecard)
    print()
    print(table(rows))
    if args.smoke:
        return 0
    draw(rows, scorecard)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(runs / "attack" / "scorecard.json", RESULTS / "scorecard.json")
    for m, p in evals.items():
        shutil.copy(p, RESULTS / f"evaluation_{m.split(':')[1]}.json")
    result = {**_common.run_info(load, versions=_common.versions("python", "torch")),
              "wall_s": round(time.time() - t0, 1), "config": CONFIG, "epochs": EPOCHS, "default": DEFAULT,
              "points": {n: POINTS[n]._asdict() for n in names},
              "train": train, "trained": trained, "attack_recipe": recipe,
              "rows": [{k: v for k, v in r.items() if k != "family"} for r in rows]}
    (RESULTS / "sweep.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'sweep.json'} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
