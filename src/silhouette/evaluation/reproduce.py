"""`silhouette reproduce`: every table and figure of the paper into one report folder.

The report folder (REPORT.md, metrics.json, PNG figures) is built in a hidden sibling folder and
swapped in only when complete, so a reader never sees a half-written report.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from silhouette.errors import SilhouetteError
from silhouette.fileio import read_yaml
from silhouette.evaluation.tables import Context, Section, TestSet

SECTIONS = ("generalisation", "cross_detector", "baselines", "cost", "width_sweep", "examples")
TOP_KEYS = {"name", "frames", "quick", "batch_size", "pred_threshold", "label_threshold", "datasets", "test_sets",
            "checkpoint", "detector", "tables"}
TABLE_KEYS: dict[str, set[str]] = {
    "generalisation": {"train", "test", "detector"},
    "cross_detector": {"checkpoints", "test", "detectors"},
    "baselines": {"checkpoint", "test", "detector", "methods", "tol", "picture_frame"},
    "cost": {"checkpoint", "detectors", "torchvision", "variants", "frame_size"},
    "width_sweep": {"checkpoints", "test", "detector", "frame_size"},
    "examples": {"checkpoint", "tests", "n", "detector"},
}
QUICK_DEFAULTS = {"max_frames": 4, "tune_evals": 6, "examples": 2, "torchvision_cost": False}
VERSION_PACKAGES = ("torch", "torchvision", "numpy", "onnxruntime", "onnx", "onnx2torch", "torchmetrics",
                    "faster-coco-eval", "scikit-image", "opencv-python-headless", "matplotlib")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a reproduce YAML; unknown keys are errors naming the key."""
    return check_config(read_yaml(path, "reproduce config") or {}, str(path))


def check_config(cfg: Any, where: str = "config") -> dict[str, Any]:
    """Validate the layout of a reproduce config dict."""
    if not isinstance(cfg, dict):
        raise SilhouetteError(f"{where}: top level must be a mapping")
    bad = sorted(set(cfg) - TOP_KEYS)
    if bad:
        raise SilhouetteError(f"{where}: unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    tables = cfg.get("tables") or {}
    if not isinstance(tables, dict):
        raise SilhouetteError(f"{where}: 'tables' must be a mapping of section name -> options")
    for name, opts in tables.items():
        if name not in TABLE_KEYS:
            raise SilhouetteError(f"{where}: unknown table {name!r}; choose from: {', '.join(SECTIONS)}")
        if opts is not None and not isinstance(opts, dict):
            raise SilhouetteError(f"{where}: tables.{name} must be a mapping")
        bad = sorted(set(opts or {}) - TABLE_KEYS[name])
        if bad:
            raise SilhouetteError(f"{where}: tables.{name}: unknown key(s) {', '.join(bad)}; "
                                  f"allowed: {', '.join(sorted(TABLE_KEYS[name]))}")
    for key in ("datasets", "test_sets"):
        if not isinstance(cfg.get(key) or {}, dict):
            raise SilhouetteError(f"{where}: '{key}' must be a mapping")
    for name, ds in (cfg.get("datasets") or {}).items():
        if not isinstance(ds, dict) or "root" not in ds:
            raise SilhouetteError(f"{where}: datasets.{name} needs a 'root' folder")
    for name, ts in (cfg.get("test_sets") or {}).items():
        if not isinstance(ts, dict) or "dataset" not in ts:
            raise SilhouetteError(f"{where}: test_sets.{name} needs a 'dataset'")
        if ts["dataset"] not in (cfg.get("datasets") or {}):
            raise SilhouetteError(f"{where}: test_sets.{name}.dataset {ts['dataset']!r} is not under 'datasets'")
    return cfg


def software_versions() -> dict[str, str]:
    """Python, silhouette, git commit and the versions of the libraries behind the numbers."""
    from importlib import metadata

    from silhouette import __version__

    out = {"python": platform.python_version(), "silhouette": __version__, "platform": platform.platform()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        repo = Path(__file__).resolve().parents[3]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            out["git"] = commit + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _ensure_datasets(cfg: Mapping[str, Any], used: set[str], progress: bool) -> dict[str, str]:
    """Prepare configured datasets that are used but missing; returns name -> reason for those still missing."""
    from silhouette.data import prepare_dataset
    from silhouette.data.manifest import manifest_path

    missing: dict[str, str] = {}
    for name, ds in (cfg.get("datasets") or {}).items():
        if name not in used:
            continue
        root = Path(ds["root"])
        if manifest_path(root).is_file():
            continue
        prep = ds.get("prepare")
        if not prep:
            missing[name] = f"dataset {root} is not prepared and datasets.{name} has no 'prepare' entry"
            continue
        opts = dict(prep)
        ds_name = opts.pop("name", name)
        try:
            prepare_dataset(ds_name, root, progress=progress, **opts)
        except SilhouetteError as exc:
            # e.g. the shared footage is absent here: the sections that need this dataset say why
            missing[name] = f"preparing dataset {name} into {root} failed: {exc}"
    return missing


def _test_sets(cfg: Mapping[str, Any]) -> dict[str, TestSet]:
    datasets = cfg.get("datasets") or {}
    out = {}
    for name, ts in (cfg.get("test_sets") or {}).items():
        cams = ts.get("cameras")
        out[name] = TestSet(name, Path(datasets[ts["dataset"]]["root"]), ts.get("split", "test"),
                            [str(c) for c in cams] if cams else None, str(ts.get("label", "")))
    return out


def _used_datasets(cfg: Mapping[str, Any], names: Sequence[str]) -> set[str]:
    tables = cfg.get("tables") or {}
    sets = cfg.get("test_sets") or {}
    used: set[str] = set()
    for sec in names:
        opts = tables.get(sec) or {}
        refs = opts.get("test") if sec != "examples" else opts.get("tests")
        for r in ([refs] if isinstance(refs, str) else list(refs or [])):
            if r in sets:
                used.add(sets[r]["dataset"])
    return used


SECTION_TITLES = {
    "generalisation": "Table 1 — Generalisation across cameras and datasets",
    "cross_detector": "Table 2 — Cross-detector accuracy",
    "baselines": "Table 3 — Obfuscation baselines at matched accuracy",
    "cost": "Table 4 — Computational cost",
    "width_sweep": "Figure 2 — Accuracy vs obfuscator cost (width sweep)",
    "examples": "Figures 3–4 — Example frames",
}


def _section_builders(cfg: Mapping[str, Any], ctx: Context, quick: bool,
                      tests: Mapping[str, TestSet]) -> dict[str, Callable[[dict[str, Any]], Section]]:
    """Each section's builder: its `tables.<section>` options -> the section, defaults from the config's top level."""
    quick_cfg = {**QUICK_DEFAULTS, **(cfg.get("quick") or {})}
    default_ckpt = cfg.get("checkpoint")
    default_det = cfg.get("detector")

    def test_ref(sec: str, ref: Any) -> TestSet | None:
        if ref is None:
            return None
        if ref not in tests:
            raise SilhouetteError(f"tables.{sec}: test set {ref!r} is not under 'test_sets' ({', '.join(tests) or 'none'})")
        return tests[ref]

    def tests_ref(sec: str, refs: Any) -> list[TestSet]:
        return [t for t in (test_ref(sec, r) for r in ([refs] if isinstance(refs, str) else list(refs or []))) if t]

    return {
        "generalisation": lambda o: _tables().generalisation_table(
            ctx, o.get("train") or {}, tests_ref("generalisation", o.get("test")), o.get("detector") or default_det),
        "cross_detector": lambda o: _tables().cross_detector_table(
            ctx, o.get("checkpoints") or {}, test_ref("cross_detector", o.get("test")), o.get("detectors", "all")),
        "baselines": lambda o: _tables().baselines_table(
            ctx, o.get("checkpoint", default_ckpt), test_ref("baselines", o.get("test")),
            o.get("detector") or default_det, o.get("methods") or ("blur", "noise", "quantize", "pixelate"),
            float(o.get("tol", 0.02)), int(o.get("picture_frame", 0))),
        "cost": lambda o: _tables().cost_table(
            ctx, o.get("checkpoint", default_ckpt), o.get("detectors", "zoo"),
            (o.get("torchvision") or []) if not quick or quick_cfg["torchvision_cost"] else [],
            o.get("variants") or [], tuple(o.get("frame_size") or (200, 320))),  # type: ignore[arg-type]
        "width_sweep": lambda o: _tables().width_sweep(
            ctx, o.get("checkpoints") or {}, test_ref("width_sweep", o.get("test")), o.get("detector") or default_det,
            tuple(o.get("frame_size") or (200, 320))),  # type: ignore[arg-type]
        "examples": lambda o: _tables().examples_figure(
            ctx, o.get("checkpoint", default_ckpt), tests_ref("examples", o.get("tests")),
            int(quick_cfg["examples"]) if quick else int(o.get("n", 4)), o.get("detector") or default_det),
    }


def run_sections(
    cfg: Mapping[str, Any], ctx: Context, only: Sequence[str] | None = None, quick: bool = False
) -> list[Section]:
    """Build every requested section; a missing input makes that section 'not run', never the whole report."""
    from tqdm import tqdm

    names = list(only or SECTIONS)
    tables = cfg.get("tables") or {}
    tests = _test_sets(cfg)
    missing_ds = _ensure_datasets(cfg, _used_datasets(cfg, names), ctx.progress)
    builders = _section_builders(cfg, ctx, quick, tests)
    sections = []
    for name in tqdm(names, desc="reproduce", unit="section", disable=not ctx.progress):
        opts = dict(tables.get(name) or {})
        if name not in tables:
            sections.append(Section(name, SECTION_TITLES[name], not_run=f"not configured (add tables.{name} to the config)"))
            continue
        refs = opts.get("tests") if name == "examples" else opts.get("test")
        used = [cfg["test_sets"][r]["dataset"] for r in ([refs] if isinstance(refs, str) else list(refs or [])) if r in tests]
        blocked = [missing_ds[d] for d in used if d in missing_ds]
        if blocked:
            sections.append(Section(name, SECTION_TITLES[name], not_run=blocked[0]))
            continue
        try:
            sections.append(builders[name](opts))
        except SilhouetteError as exc:
            # a broken input (corrupt checkpoint, unknown camera) stops this section only
            sections.append(Section(name, SECTION_TITLES[name], not_run=str(exc)))
    return sections


def _tables():  # noqa: ANN202 - the module, imported lazily
    from silhouette.evaluation import tables

    return tables


def render_report(sections: Sequence[Section], header: Mapping[str, Any]) -> str:
    """REPORT.md text: command, versions, settings, then every section."""
    lines = [f"# silhouette reproduction report: {header['name']}", ""]
    lines += ["Command:", "", "```", header["command"], "```", ""]
    lines += [f"Generated {header['generated']} on {header['host']}.", ""]
    mode = "**quick** (a few frames per test set; numbers are smoke-test only)" if header["quick"] else "full"
    lines += [f"Mode: {mode}. Frame subsampling: {header['frames']}. Config: `{header['config']}`.", ""]
    lines += ["| software | version |", "|---|---|"] + [f"| {k} | {v} |" for k, v in header["versions"].items()] + [""]
    lines += ["Contents:", ""]
    for s in sections:
        lines.append(f"- {s.title}" + (f" — not run: {s.not_run}" if s.not_run else ""))
    lines.append("")
    lines += [s.markdown() for s in sections]
    lines += ["## Configuration used", "", "```yaml", yaml.safe_dump(header["config_data"], sort_keys=False).rstrip(),
              "```", ""]
    return "\n".join(lines)


def _report_header(cfg: Mapping[str, Any], out: Path, config: str | Path | Mapping[str, Any], command: str | None,
                   quick: bool, max_frames: int | None, stride: int) -> dict[str, Any]:
    """What the report's head says: its name, the command, when and where it ran, the frames used, the versions."""
    return {
        "name": cfg.get("name") or out.name,
        "command": command or shlex.join(["silhouette", *sys.argv[1:]]),
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "quick": quick,
        "frames": f"at most {max_frames} frames per test set (evenly spaced), stride {stride}"
        if max_frames else f"every {stride}. frame",
        "config": str(config) if not isinstance(config, Mapping) else "<in-memory>",
        "config_data": cfg,
        "versions": software_versions(),
    }


def reproduce(
    out: str | Path,
    config: str | Path | Mapping[str, Any],
    quick: bool = False,
    only: Sequence[str] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> Path:
    """Run the configured sections and write out/REPORT.md, out/metrics.json and the PNG figures atomically."""
    from silhouette.evaluation.evaluate import PRED_THRESHOLD, jsonable
    from silhouette.fileio import write_json
    from silhouette.provenance import provenance

    cfg = load_config(config) if not isinstance(config, Mapping) else check_config(dict(config))
    for s in only or []:
        if s not in SECTIONS:
            raise SilhouetteError(f"--only {s!r}: unknown section; choose from: {', '.join(SECTIONS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SilhouetteError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "REPORT.md").is_file():
        # the folder is replaced as a whole, so never take over one that is not an earlier report
        raise SilhouetteError(f"--out {out}: folder exists and is not a silhouette report; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = dict(cfg.get("frames") or {})
    quick_cfg = {**QUICK_DEFAULTS, **(cfg.get("quick") or {})}
    max_frames = int(quick_cfg["max_frames"]) if quick else frames.get("max_frames")
    stride = 1 if quick else int(frames.get("stride", 1))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ctx = Context(
            out=tmp, quick=quick, progress=progress, max_frames=max_frames, stride=stride,
            batch_size=int(cfg.get("batch_size", 8)),
            pred_threshold=cfg.get("pred_threshold", PRED_THRESHOLD), label_threshold=cfg.get("label_threshold"),
            tune_evals=int(quick_cfg["tune_evals"]) if quick else 14,
        )
        sections = run_sections(cfg, ctx, only, quick)
        header = _report_header(cfg, out, config, command, quick, max_frames, stride)
        (tmp / "REPORT.md").write_text(render_report(sections, header), encoding="utf-8")
        write_json(tmp / "metrics.json", jsonable({
            "name": header["name"], "command": header["command"], "generated": header["generated"],
            "quick": quick, "versions": header["versions"], "config": cfg,
            "sections": {s.key: s.to_json() for s in sections},
            "provenance": provenance(shlex.split(header["command"])),
        }))
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` folder with renames only."""
    import os

    # mkdtemp/mkstemp create owner-only entries; give the report the permissions of a normal folder
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for f in tmp.iterdir():
        f.chmod(0o666 & ~umask)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        old.rmdir()
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
