"""Privacy scorecard: one row per method (ours, clean, each baseline setting), utility beside attack success.

Writes `scorecard.md` (table for humans), `scorecard.json` (full results) and `tradeoff.png`
(person AP50 against attack success, one line per method family across its settings), atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from silhouette.errors import SilhouetteError

# (key in the flat row, column header, format); higher attack numbers = more private information leaks
COLUMNS: list[tuple[str, str, str]] = [
    ("ap50", "person AP50 ↑", "{:.3f}"),
    ("count_mae", "count MAE ↓", "{:.2f}"),
    ("gt_ap50", "GT AP50 ↑", "{:.3f}"),
    ("gt_count_mae", "count MAE vs GT ↓", "{:.2f}"),
    ("obf_ssim", "SSIM obf↔orig", "{:.3f}"),
    ("rec_psnr", "recon PSNR (dB)", "{:.2f}"),
    ("rec_ssim", "recon SSIM", "{:.3f}"),
    ("rec_psnr_person", "recon PSNR persons (dB)", "{:.2f}"),
    ("rec_ssim_person", "recon SSIM persons", "{:.3f}"),
    ("face_obf", "faces found (obf)", "{:.2f}"),
    ("face_rec", "faces found (recon)", "{:.2f}"),
    ("reid_obf", "re-ID R1 clean-trained (obf)", "{:.3f}"),
    ("reid_rec", "re-ID R1 clean-trained (recon)", "{:.3f}"),
    ("reid_adaptive", "re-ID R1 adaptive", "{:.3f}"),
    ("reid_adaptive_map", "re-ID mAP adaptive", "{:.3f}"),
    ("reid_chance", "re-ID R1 chance", "{:.3f}"),
]
AXIS_LABELS = {
    "reid_adaptive": "re-ID rank-1, adaptive attacker",
    "face_obf": "faces found again on obfuscated frames",
    "rec_ssim": "reconstruction SSIM (post-hoc attacker)",
    "rec_ssim_person": "reconstruction SSIM on person boxes",
    "face_rec": "faces found again on reconstructions",
    "rec_psnr_person": "reconstruction PSNR on person boxes (dB)",
}
ATTACK_AXES = ("reid_adaptive", "face_obf", "rec_ssim", "rec_ssim_person", "face_rec")  # the scorecard's panels
# the scene-prior floor (mean train frame) drawn on these panels: (panel key, key in meta["scene_prior"])
FLOOR_KEYS = {"rec_ssim": "ssim", "rec_ssim_person": "person_ssim", "rec_psnr_person": "person_psnr"}


def _get(d: Any, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return float(d) if isinstance(d, (int, float)) and d is not None else None


def _face(faces: Mapping[str, Any] | None, variant: str) -> float | None:
    # pooled over detectors: the attacker uses whichever detector finds more
    if not faces:
        return None
    vals = [_get(v, variant, "fraction") for k, v in faces.items() if isinstance(v, Mapping) and variant in v]
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return max(vals) if vals else None


def flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """One method's nested results -> the flat scorecard row (None where an attack was not run)."""
    rec, faces, reid, util = row.get("reconstruction"), row.get("faces"), row.get("reid"), row.get("utility") or {}
    return {
        "method": row["method"],
        "family": row.get("family", str(row["method"]).split(":")[0]),
        "setting": row.get("setting"),
        "ap50": _get(util, "ap50"),
        "count_mae": _get(util, "count_mae"),
        "gt_ap50": _get(util, "gt_ap50"),
        "gt_count_mae": _get(util, "gt_count_mae"),
        "obf_ssim": _get(rec, "test", "obfuscated_ssim"),
        "rec_psnr": _get(rec, "test", "psnr"),
        "rec_ssim": _get(rec, "test", "ssim"),
        "rec_psnr_person": _get(rec, "test", "person_psnr"),
        "rec_ssim_person": _get(rec, "test", "person_ssim"),
        "face_obf": _face(faces, "obfuscated"),
        "face_rec": _face(faces, "reconstructed"),
        "reid_obf": _get(reid, "clean_trained", "obfuscated_query", "rank1"),
        "reid_rec": _get(reid, "clean_trained", "reconstructed_query", "rank1"),
        "reid_adaptive": _get(reid, "adaptive", "obfuscated", "rank1"),
        "reid_adaptive_map": _get(reid, "adaptive", "obfuscated", "map"),
        "reid_chance": _get(reid, "adaptive", "obfuscated", "chance_rank1"),
        "reid_clean_reference": _get(reid, "clean_trained", "clean_query", "rank1"),
    }


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def floor_row(prior: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The scene-prior floor (meta["scene_prior"]) as a flat row with only the reconstruction columns."""
    if not prior:
        return None
    return {"method": "zero-information floor", "setting": "mean train frame", "rec_psnr": _get(prior, "psnr"),
            "rec_ssim": _get(prior, "ssim"), "rec_psnr_person": _get(prior, "person_psnr"),
            "rec_ssim_person": _get(prior, "person_ssim")}


def floor_line(prior: Mapping[str, Any] | None) -> str | None:
    """One sentence with the zero-information floor, whole frame and person boxes."""
    if not prior:
        return None
    text = f"zero-information floor (mean train frame, no look at the obfuscated frame): PSNR {prior['psnr']:.2f} dB, SSIM {prior['ssim']:.3f}"
    if prior.get("person_psnr") is not None:
        text += f"; on person boxes PSNR {prior['person_psnr']:.2f} dB, SSIM {prior['person_ssim']:.3f}"
    return text + ". A reconstruction only reveals something where it beats these numbers."


def failed_attacker_notes(flat: Sequence[Mapping[str, Any]], prior: Mapping[str, Any] | None) -> list[str]:
    """A note per row whose reconstruction attacker scored below the mean train frame on whole frames (an undertrained attacker)."""
    floor = _get(prior, "psnr")
    if floor is None:
        return []
    return [f"{r['method']}: the reconstruction attacker stayed below the zero-information floor on whole frames "
            f"({r['rec_psnr']:.2f} vs {floor:.2f} dB PSNR): it did not even learn the public background, so its "
            "reconstruction figures, and the attacks on its reconstructions, are lower bounds on what leaks; "
            "attack it longer (--epochs) or from scratch (--recon-scratch)"
            for r in flat if r.get("rec_psnr") is not None and r["rec_psnr"] < floor]


def to_markdown(flat: Sequence[Mapping[str, Any]], notes: Sequence[str] = (), prior: Mapping[str, Any] | None = None) -> str:
    """The scorecard as a GitHub markdown table (columns with no value anywhere are left out).

    `prior` = meta["scene_prior"]: adds the zero-information floor as a last row and as a sentence.
    """
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in flat)]
    lines = ["# Privacy scorecard", "", "| method | " + " | ".join(h for _, h, _ in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    floor = floor_row(prior)
    for r in list(flat) + ([floor] if floor else []):
        name = r["method"] + (f" ({r['setting']})" if r.get("setting") else "")
        if r is floor:
            name = f"*{name}*"
        lines.append(f"| {name} | " + " | ".join(_cell(r.get(k), f) for k, _, f in cols) + " |")
    refs = [r.get("reid_clean_reference") for r in flat if r.get("reid_clean_reference") is not None]
    lines += ["", "Reference levels: clean frames leak everything (see the `clean` row); "
              f"re-ID chance = 1 / number of gallery identities"
              + (f"; clean-trained attacker on clean queries: rank-1 {refs[0]:.3f}" if refs else "") + "."]
    line = floor_line(prior)
    if line:
        lines += ["", line[0].upper() + line[1:]]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_tradeoff(flat: Sequence[Mapping[str, Any]], path: str | Path, attacks: Sequence[str] = ATTACK_AXES,
                  prior: Mapping[str, Any] | None = None, utility: str = "ap50") -> None:
    """Person AP50 (y; `utility` "gt_ap50": against human boxes) against attack success (x), one panel per attack.

    Each `ours*` checkpoint is its own labelled star (checkpoints are not one parameter sweep), a family named
    `ours, SETTING` is a line of stars (one trained obfuscator per value of that setting); `prior`
    (meta["scene_prior"]) draws the zero-information floor on the reconstruction panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from silhouette.fileio import atomic_path

    # a panel per attack that was run on a row with utility: a run of two attacks draws two panels, not five
    attacks = [k for k in attacks if any(r.get(k) is not None and r.get(utility) is not None for r in flat)] or list(attacks[:1])
    fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 4), squeeze=False)
    # one colour per family across all panels; past ten families a wider map, so no two lines share a colour
    families = sorted({r["family"] for r in flat})
    colours = dict(zip(families, plt.get_cmap("tab20" if len(families) > 10 else "tab10")(range(len(families)))))
    for ax, key in zip(axes[0], attacks):
        drawn = False
        for fam in families:
            pts = sorted((r[key], r[utility], r["method"]) for r in flat
                         if r["family"] == fam and r.get(key) is not None and r.get(utility) is not None)
            if not pts:
                continue
            xs, ys, names = zip(*pts)
            if fam == "ours":
                ax.plot(xs, ys, marker="*", markersize=12, linestyle="none", label=fam, color=colours.get(fam))
            elif fam.startswith("ours"):
                ax.plot(xs, ys, marker="*", markersize=11, linewidth=2, label=fam, color=colours.get(fam))
            else:  # baselines recede: thin dashed lines, so the trained obfuscators stand out
                ax.plot(xs, ys, marker="o", markersize=5, linewidth=1, linestyle="--", alpha=0.7, label=fam, color=colours.get(fam))
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            drawn = True
        floor = _get(prior, FLOOR_KEYS[key]) if prior and key in FLOOR_KEYS else None
        if drawn and floor is not None:
            ax.axvline(floor, color="grey", linestyle="--", linewidth=1, label="zero-information floor")
        ax.set_xlabel(AXIS_LABELS.get(key, key) + "  (← more private)")
        ax.set_ylabel(("person AP50 vs human boxes" if utility == "gt_ap50" else "person AP50") + "  (↑ more useful)")
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no rows with both utility and this attack", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.suptitle("Utility vs. privacy: best is top-left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_scorecard(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None,
                    notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write scorecard.md, scorecard.json, tradeoff.png and, when rows have GT AP50, frontier.png; returns their paths."""
    from silhouette.fileio import atomic_open, write_json

    if not rows:
        raise SilhouetteError("scorecard: no methods were attacked, nothing to write")
    out = Path(out_dir)
    flat = [flatten(r) for r in rows]
    paths = {"json": out / "scorecard.json", "markdown": out / "scorecard.md", "plot": out / "tradeoff.png"}
    prior = (meta or {}).get("scene_prior")
    notes = [*notes, *failed_attacker_notes(flat, prior)]
    from silhouette.provenance import provenance

    write_json(paths["json"], {"meta": dict(meta or {}), "rows": flat, "results": list(rows), "notes": notes,
                               "provenance": provenance()})
    with atomic_open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write(to_markdown(flat, notes, prior))
    plot_tradeoff(flat, paths["plot"], prior=prior)
    if any(r.get("gt_ap50") is not None for r in flat):
        # against human boxes both modes share one axis: a co-trained detector's own boxes are no reference
        paths["frontier"] = out / "frontier.png"
        plot_tradeoff(flat, paths["frontier"], prior=prior, utility="gt_ap50")
    return paths


def load_utility(path: str | Path) -> dict[str, dict[str, float]]:
    """Utility per method from an evaluation JSON: {method: {ap50, count_mae}} or a list/`rows` of {method, ap50, count_mae}."""
    from silhouette.fileio import read_json

    data = read_json(path)
    rows = data.get("rows", data.get("methods", data)) if isinstance(data, dict) else data
    out: dict[str, dict[str, float]] = {}
    if isinstance(rows, dict):
        items = rows.items()
    elif isinstance(rows, list):
        items = ((r.get("method"), r) for r in rows if isinstance(r, dict))
    else:
        raise SilhouetteError(f"{path}: expected {{method: {{ap50, count_mae}}}} or a list of rows with 'method'")
    for name, r in items:
        if not isinstance(r, dict) or name is None:
            continue
        ap = r.get("ap50", _get(r, "utility", "ap50"))
        mae = r.get("count_mae", _get(r, "count", "mae"))
        out[str(name)] = {"ap50": None if ap is None else float(ap), "count_mae": None if mae is None else float(mae)}
    if not out:
        raise SilhouetteError(f"{path}: no per-method utility found (want 'method', 'ap50', 'count_mae' per row)")
    return out


def utility_from_evaluation(path: str | Path, detector: str | None = None) -> dict[str, float | None]:
    """AP50 and count MAE (relative to clean-frame pseudo-labels, and against GT) of one `silhouette evaluate` evaluation.json."""
    from silhouette.fileio import read_json

    data = read_json(path)
    dets = data.get("detectors") if isinstance(data, dict) else None
    if not isinstance(dets, dict) or not dets:
        raise SilhouetteError(f"{path}: not an evaluation.json of `silhouette evaluate` (no 'detectors')")
    name = detector or next(iter(dets))
    if name not in dets:
        raise SilhouetteError(f"{path}: no detector {name!r}; it has {', '.join(dets)}")
    row = dets[name]
    # against human boxes where the footage has them: the only fair utility when the detector itself was adapted
    return {"ap50": _get(row, "relative", "ap50"), "count_mae": _get(row, "count", "obf_vs_clean", "mae"),
            "gt_ap50": _get(row, "gt", "obfuscated", "ap50"), "gt_count_mae": _get(row, "count", "obf_vs_gt", "mae")}


def _merge_row(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """`new` over `old`, keeping `old`'s results for attacks `new` did not run and its other face detectors.

    An old detector's faces on reconstructions are dropped when `new` reconstructed with another attacker.
    """
    if old is None:
        return dict(new)
    merged = {**old, **{k: v for k, v in new.items() if v is not None}}
    if isinstance(old.get("faces"), Mapping) and isinstance(new.get("faces"), Mapping):
        old_key, new_key = old["faces"].get("key") or {}, new["faces"].get("key") or {}
        merged["faces"] = {**old["faces"], **new["faces"]}
        dets = [*old_key.get("detectors", []), *new_key.get("detectors", [])]
        made_by_old, made_by_new = old_key.get("reconstructed"), new_key.get("reconstructed")
        # another attacker made the old reconstructions: their face counts no longer describe this row's attacker
        stale = bool(made_by_old and made_by_new and made_by_old != made_by_new)
        for det in dict.fromkeys(dets):
            o, n = old["faces"].get(det), new["faces"].get(det)
            if not isinstance(o, Mapping):
                continue
            det_merged = {**o, **n} if isinstance(n, Mapping) else dict(o)
            if stale and not (isinstance(n, Mapping) and "reconstructed" in n):
                det_merged.pop("reconstructed", None)
            merged["faces"][det] = det_merged
        merged["faces"]["key"] = {**new_key, "detectors": list(dict.fromkeys(dets)),
                                  "reconstructed": made_by_new or made_by_old}
    merged["source"] = f"{old.get('source')} + {new.get('source')}"
    return merged


def parse_rename(spec: str) -> tuple[str, str, str]:
    """`METHOD@DIR=NEW` -> (DIR, METHOD, NEW): rename one run's row before merging."""
    left, sep, new = spec.rpartition("=")
    method, at, src = left.partition("@")
    if not sep or not at or not method or not src or not new:
        raise SilhouetteError(f"--rename {spec!r}: expected METHOD@DIR=NEW, e.g. ours@runs/attack_old=ours:old")
    return src, method, new


def _scorecard_path(src: str | Path) -> Path:
    """The scorecard.json of an attack folder (or the file itself)."""
    return Path(src) / "scorecard.json" if Path(src).is_dir() else Path(src)


def merge_scorecards(sources: Sequence[str | Path], out_dir: str | Path,
                     utility: Mapping[str, Mapping[str, Any]] | None = None,
                     renames: Sequence[tuple[str, str, str]] = ()) -> dict[str, Path]:
    """One scorecard from several `attack` outputs (say, baselines attacked on a GPU, ours on a CPU).

    Rows are taken in source order; a method present in a later source updates the earlier row attack by attack
    (an attack the later run did not do is kept, face detectors are combined). Rows whose reconstruction recipe
    differs from the first row's are named in a note, so mixed recipes are never silent. `renames` are
    (source, method, new name) triples, applied to that source's rows first: an old run of `ours` stays its own
    row after the shipped obfuscator changes.
    """
    from silhouette.fileio import read_json

    paths = [_scorecard_path(src) for src in sources]
    resolved = {p.resolve() for p in paths}
    by_source: dict[Path, dict[str, str]] = {}
    for src, method, new in renames:
        key = _scorecard_path(src).resolve()
        if key not in resolved:
            raise SilhouetteError(f"--rename {method}@{src}={new}: {src} is not one of the --from runs")
        by_source.setdefault(key, {})[method] = new
    rows: dict[str, dict[str, Any]] = {}
    metas: list[dict[str, Any]] = []
    for src, path in zip(sources, paths):
        if not path.is_file():
            raise SilhouetteError(f"--from {src}: no scorecard.json there; run `silhouette attack --out {src}` first")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise SilhouetteError(f"{path}: not a scorecard.json written by `silhouette attack`")
        metas.append({**data.get("meta", {}), "source": str(path)})
        rename = by_source.get(path.resolve(), {})
        missing = set(rename) - {row["method"] for row in data["results"]}
        if missing:
            raise SilhouetteError(f"--rename: {path} has no row {sorted(missing)[0]!r}")
        for row in data["results"]:
            name = rename.get(row["method"], row["method"])
            extra = {}
            if name != row["method"] and row.get("setting"):
                # "default checkpoint" was true when that run was made; say which run so it is not misread today
                extra["setting"] = f"{row['setting']} of {path.parent.name}"
            rows[name] = _merge_row(rows.get(name), {**row, **extra, "method": name, "source": str(path)})
    for name, u in (utility or {}).items():
        if name in rows:
            rows[name]["utility"] = dict(u)
    notes = [f"merged from {len(metas)} attack runs: " + "; ".join(
        f"{m['source']} ({m.get('device', 'cpu')}{', ' + m['gpu'] if m.get('gpu') else ''})" for m in metas)]
    recipes = {n: (r.get("reconstruction") or {}).get("recipe") for n, r in rows.items()}
    first = next((v for v in recipes.values() if v), None)
    for n, rec in recipes.items():
        if rec and first and rec != first:
            diff = ", ".join(f"{k} {rec.get(k)} (others {first.get(k)})" for k in sorted(set(rec) | set(first)) if rec.get(k) != first.get(k))
            notes.append(f"{n}: reconstruction attacker recipe differs: {diff}")
    meta = {**metas[0], "merged_from": [m["source"] for m in metas], "metas": metas}
    meta.setdefault("scene_prior", next((m["scene_prior"] for m in metas if m.get("scene_prior")), None))
    return write_scorecard(out_dir, list(rows.values()), meta, notes)
