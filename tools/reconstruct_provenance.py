"""Give legacy result JSONs an honest provenance block from git history, and drop scorecard rows nobody can rerun.

Results made before every writer recorded its commit lack `commit`/`dirty` (and often command, date, machine). For
each such file under results/ this adds

    "provenance": {"commit": <the commit that first added the file>, "dirty": null,
                   "command": <the file's own command if recorded, else the README documenting its folder>,
                   "date": <that commit's date>, "machine": <the file's own machine or device if recorded, else null>,
                   "reconstructed": "from git history"}

and, with --drop-uncommitted-rows, removes from the merged scorecard (JSON and Markdown) the rows of our own
checkpoints that are not committed, since nobody can recompute them.

    .venv/bin/python tools/reconstruct_provenance.py [--check] [--drop-uncommitted-rows]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
KEYS = ("commit", "dirty", "command", "date", "machine")
SCORECARD = RESULTS / "privacy" / "scorecard.json"


def dump(path: Path, data: Any) -> None:
    """Rewrite a JSON file in its own indentation and escaping, so that its diff is the new block alone."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    second = lines[1] if len(lines) > 1 else ""
    indent = (len(second) - len(second.lstrip(" "))) or 2
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=text.isascii()) + "\n", encoding="utf-8")


def git(*args: str) -> str:
    """Output of one git command in the checkout."""
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def has_provenance(data: Any) -> bool:
    """True when the file carries every key, at the top level or in a `provenance` block."""
    if not isinstance(data, dict):
        return False
    return all(k in data for k in KEYS) or all(k in (data.get("provenance") or {}) for k in KEYS)


def first_commit(path: Path) -> tuple[str, str]:
    """(hash, ISO date) of the commit that first added `path`, following renames."""
    log = git("log", "--diff-filter=A", "--follow", "--format=%H %cI", "--", str(path.relative_to(REPO)))
    if not log:
        raise SystemExit(f"{path.relative_to(REPO)}: not in git history; commit it or make it again")
    commit, date = log.splitlines()[-1].split()
    return commit, date


def documented_command(path: Path) -> str | None:
    """The README nearest to the file inside results/ that documents how its folder was made, if any."""
    for folder in path.parents:
        if folder == RESULTS.parent:
            return None
        if (folder / "README.md").is_file() and folder != RESULTS:
            return f"documented in {(folder / 'README.md').relative_to(REPO)}"
    return None


def reconstructed(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The provenance block of one legacy file."""
    commit, date = first_commit(path)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    machine = data.get("machine") or meta.get("machine") or (
        {"device": meta["device"]} if meta.get("device") else None)
    return {"commit": commit, "dirty": None,
            "command": data.get("command") or meta.get("command") or documented_command(path),
            "date": date, "machine": machine, "reconstructed": "from git history"}


def drop_uncommitted_rows(json_path: Path) -> list[str]:
    """Remove our own rows whose checkpoint is not in git from a merged scorecard and its .md; returns their names."""
    tracked = set(git("ls-files").splitlines())
    data = json.loads(json_path.read_text(encoding="utf-8"))

    def gone(row: dict[str, Any]) -> bool:
        setting = str(row.get("setting") or "")
        return row.get("family") == "ours" and setting.endswith((".pt", ".onnx", ".json")) and setting not in tracked

    dropped = [r["method"] for r in data["results"] if gone(r)]
    if not dropped:
        return []
    data["results"] = [r for r in data["results"] if r["method"] not in dropped]
    data["rows"] = [r for r in data["rows"] if r["method"] not in dropped]
    note = f"rows dropped, their checkpoints are not committed: {', '.join(dropped)}"
    data["notes"] = [*data.get("notes", []), note]
    dump(json_path, data)
    md = json_path.with_suffix(".md")
    if md.is_file():
        lines = [ln for ln in md.read_text(encoding="utf-8").splitlines()
                 if not any(ln.startswith(f"| {m} (") or ln.startswith(f"| {m} |") for m in dropped)]
        md.write_text("\n".join(lines) + f"\n\n- {note}\n", encoding="utf-8")
    return dropped


def main() -> int:
    """Add the reconstructed blocks (or, with --check, list the files that still need one)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only list the files lacking provenance; exit 1 if any")
    ap.add_argument("--drop-uncommitted-rows", action="store_true", help=f"also clean {SCORECARD.relative_to(REPO)}")
    args = ap.parse_args()
    if args.drop_uncommitted_rows and not args.check:
        print("dropped scorecard rows:", ", ".join(drop_uncommitted_rows(SCORECARD)) or "none")
    lacking = []
    for path in sorted(RESULTS.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if has_provenance(data):
            continue
        lacking.append(path)
        if not args.check:
            data["provenance"] = reconstructed(path, data)
            dump(path, data)
    for path in lacking:
        print(("lacks provenance: " if args.check else "reconstructed: ") + str(path.relative_to(REPO)))
    return 1 if args.check and lacking else 0


if __name__ == "__main__":
    sys.exit(main())
