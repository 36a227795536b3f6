"""Compare the two post-hoc reconstruction recipes (identity start vs from scratch) row by row, from committed runs.

No training: it reads the `scorecard.json` of attack runs already in results/privacy/ and prints, per method,
the people's PSNR / SSIM on the person boxes for each recipe and the stronger of them (an attacker may pick either).
Rows are renamed as `silhouette scorecard --rename` does (METHOD@DIR=NEW). Writes results/experiments/attacker_recipes.json.

    .venv/bin/python experiments/attacker_recipes.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
R = "results/privacy"
# identity start (`residual: true`), 20 epochs unless the row says otherwise
IDENTITY = [f"{R}/gpu_session/attack_run1", f"{R}/attack_fused_default_cpu", f"{R}/attack_default_cpu",
            f"{R}/attack_fold_cpu", f"{R}/attack_baselines95_cpu/blur1", f"{R}/attack_baselines95_cpu/noise0625",
            f"{R}/attack_baselines95_cpu/quantize5", f"{R}/attack_levels2_cpu"]
SCRATCH_GPU = [f"{R}/gpu_session_2026-11-27/attack_run1", f"{R}/gpu_session_2026-11-27/attack_run2"]
SCRATCH_CPU = [f"{R}/attack_default_scratch_cpu", f"{R}/attack_levels2_scratch_cpu", f"{R}/attack_quantize2_scratch_cpu"]
RENAMES = [f"ours@{R}/attack_default_cpu=ours:obf_paper", f"ours:default@{R}/gpu_session_2026-11-27/attack_run1=ours"]
OUT = REPO / "results/experiments/attacker_recipes.json"


def person_scores(sources: list[str]) -> dict[str, dict]:
    """method -> the reconstruction attack's person-box PSNR/SSIM, whole-frame PSNR and recipe (later sources win)."""
    from silhouette.privacy.scorecard import parse_rename

    renames: dict[str, dict[str, str]] = {}
    for spec in RENAMES:
        folder, method, new = parse_rename(spec)
        renames.setdefault(folder, {})[method] = new
    out: dict[str, dict] = {}
    for folder in sources:
        path = REPO / folder / "scorecard.json"
        if not path.is_file():
            sys.exit(f"{path}: not found; this script reads committed attack runs")
        for row in json.loads(path.read_text(encoding="utf-8"))["results"]:
            rec = row.get("reconstruction") or {}
            test = rec.get("test") or {}
            if "person_psnr" not in test:
                continue
            name = renames.get(folder, {}).get(row["method"], row["method"])
            out[name] = {"person_psnr": test["person_psnr"], "person_ssim": test["person_ssim"], "psnr": test["psnr"],
                         "epochs": rec["recipe"]["epochs"], "residual": rec["recipe"]["residual"], "source": folder}
    return out


def main() -> int:
    """Print the comparison table and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"results JSON (default {OUT.relative_to(REPO)})")
    args = ap.parse_args()
    cols = {"identity start": person_scores(IDENTITY), "from scratch (H100)": person_scores(SCRATCH_GPU),
            "from scratch (CPU)": person_scores(SCRATCH_CPU)}
    for name, rows in cols.items():
        want = name == "identity start"
        wrong = [m for m, r in rows.items() if r["residual"] != want]
        if wrong:
            sys.exit(f"{name}: rows {wrong} were attacked with the other recipe; fix the source lists")
    methods = list(cols["from scratch (H100)"]) + [m for m in cols["identity start"] if m not in cols["from scratch (H100)"]]
    table = []
    print("| method | " + " | ".join(cols) + " | stronger |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for m in methods:
        cells = {c: rows.get(m) for c, rows in cols.items()}
        best = max((r["person_psnr"] for r in cells.values() if r), default=None)
        text = ["–" if r is None else f"{r['person_psnr']:.1f} / {r['person_ssim']:.3f}" + (
            f" ({r['epochs']} epochs)" if r["epochs"] != 20 else "") for r in cells.values()]
        print(f"| {m} | " + " | ".join(text) + f" | {best:.1f} |")
        table.append({"method": m, **cells, "stronger_person_psnr": best})
    from silhouette.fileio import write_json
    from silhouette.provenance import provenance

    write_json(args.out, {**provenance([Path(sys.executable).name, *sys.argv]), "sources": {
        "identity start": IDENTITY, "from scratch (H100)": SCRATCH_GPU, "from scratch (CPU)": SCRATCH_CPU},
        "renames": RENAMES,
        "metric": "post-hoc reconstruction of the ground-truth person boxes of the PETS test split, PSNR dB / SSIM",
        "rows": table})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
