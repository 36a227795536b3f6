"""Check that every relative Markdown link in the docs points at a file (and heading) that exists.

Usage: python tools/check_links.py [REPO_ROOT]; exit status 1 when a link is broken.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
ROOT = Path(__file__).resolve().parents[1] if len(sys.argv) < 2 else Path(sys.argv[1]).resolve()


def anchors(md: Path) -> set[str]:
    """GitHub-style anchors of the headings of one Markdown file."""
    out: set[str] = set()
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for line in text.splitlines():
        if line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            n = 0
            while (slug if n == 0 else f"{slug}-{n}") in out:  # GitHub numbers repeated headings
                n += 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken(md: Path) -> list[str]:
    """Links in one file whose relative target (or anchor) does not exist."""
    bad = []
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("mailto"):
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{md.relative_to(ROOT)}: {target} (missing)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    return bad


def main() -> int:
    """Print every broken link; exit 1 if there is one."""
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "results").rglob("*.md")) + sorted((ROOT / "checkpoints").rglob("*.md"))
    bad = [b for f in files if f.exists() for b in broken(f)]
    print("\n".join(bad) or "no broken links")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
