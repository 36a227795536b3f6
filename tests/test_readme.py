"""The README is a short guide whose every measured number comes from the result file it links to."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from silhouette.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# a measured number: has a decimal point (integers in prose are counts, sizes and epochs, not measurements)
DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")


def readme() -> str:
    """The README text."""
    return README.read_text(encoding="utf-8")


def numbers_in(path: Path) -> list[float]:
    """Every number a result file holds: JSON leaves, else every number in its text (CSV, Markdown)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        found: list[float] = []

        def walk(node: object) -> None:
            if isinstance(node, bool):
                return
            if isinstance(node, (int, float)):
                found.append(float(node))
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(json.loads(text))
        return found
    return [float(m) for m in re.findall(r"-?\d+(?:\.\d+)?", text)]


def backed(quoted: str, values: list[float]) -> bool:
    """True when some value, as a fraction, percentage or KiB, rounds to the quoted number at its precision."""
    places = len(quoted.split(".")[1])
    q = float(quoted)
    tol = 0.5 * 10 ** -places + 1e-9
    return any(math.isfinite(v) and min(abs(v - q), abs(100 * v - q), abs(v / 1024 - q), abs(-v - q)) <= tol for v in values)


def result_lines() -> list[tuple[int, str, list[Path]]]:
    """README lines that link to a file under results/: (line number, line, linked files)."""
    out = []
    for i, line in enumerate(readme().splitlines(), 1):
        files = [REPO_ROOT / m for m in LINK.findall(line)
                 if m.startswith("results/") and Path(m).suffix in {".json", ".csv", ".md"} and not m.endswith("/README.md")]
        if files:
            out.append((i, line, files))
    return out


def test_readme_is_short_and_opens_with_the_picture() -> None:
    lines = readme().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; keep it to 150 and move the rest to docs/"
    first = [line for line in lines if line.strip()][1]
    m = re.match(r"!\[[^\]]*\]\(([^)]+)\)", first)
    assert m, "the README's first thing under the title must be the side-by-side picture"
    assert (REPO_ROOT / m.group(1)).is_file()


def test_readme_links_resolve() -> None:
    for target in LINK.findall(readme()):
        if "://" not in target:
            assert (REPO_ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_every_measured_number_comes_from_its_linked_result() -> None:
    rows = result_lines()
    assert len(rows) >= 5, "the README's results table must link its numbers to result files"
    checked = 0
    for i, line, files in rows:
        values = [v for f in files for v in numbers_in(f)]
        text = LINK.sub("]()", line)  # the link targets hold digits that are not quotes
        for quoted in DECIMAL.findall(text):
            assert backed(quoted, values), f"README.md:{i} quotes {quoted}, which {[str(f.relative_to(REPO_ROOT)) for f in files]} does not hold"
            checked += 1
    assert checked >= 10


def test_linked_results_record_their_provenance() -> None:
    for _, _, files in result_lines():
        for f in files:
            if f.suffix == ".json":
                data = json.loads(f.read_text(encoding="utf-8"))
                prov = data.get("provenance", data)  # benchmarks write the block's keys at the top level
                assert prov.get("commit") and prov.get("command"), f"{f} records no provenance"


def test_backed_is_strict() -> None:
    assert backed("0.95", [0.9504]) and backed("95.0", [0.9504]) and backed("7.2", [7372.0])
    assert not backed("0.96", [0.9504]) and not backed("0.950", [0.9494])


def test_python_example_runs(pets_frame_path: Path) -> None:
    """The README's Python example, on a real PETS frame, finds people."""
    code = re.search(r"```python\n(.*?)```", readme(), re.S)
    assert code, "the README must show a Python example"
    src = code.group(1).replace('"frame.jpg"', repr(str(pets_frame_path)))
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n = int(out.stdout.split()[0])
    assert 1 <= n <= 20, out.stdout


@pytest.fixture
def pets_frame_path(tmp_path: Path) -> Path:
    """One PETS 2009 frame at the training size, as a JPEG file."""
    import av
    import cv2

    from silhouette.paths import data_dir

    with av.open(str(data_dir() / "pets2009" / "vtest.avi")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), cv2.resize(frame, (320, 200), interpolation=cv2.INTER_AREA))
    return path
