"""`silhouette detectors`: list every registered detector, where its weights come from and whether they are here."""

from __future__ import annotations

import argparse
from typing import Any

COLUMNS = [
    ("name", "NAME"),
    ("family", "FAMILY"),
    ("input_size", "INPUT"),
    ("weights", "WEIGHTS"),
    ("source", "SOURCE"),
    ("license", "LICENCE"),
]


def register(subparsers: Any) -> None:
    """Add the `detectors` command."""
    p = subparsers.add_parser(
        "detectors", help="list the registered detectors: family, input size, source, licence, weights present",
        description="List every detector usable with --detector (ensembles: 'a+b*0.5'). ONNX zoo weights are read "
                    "from the shared weights folder ($SILHOUETTE_SHARED/weights); torchvision weights from "
                    "torchvision's cache ($TORCH_HOME).")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    p.set_defaults(func=cmd_detectors)


def detector_rows() -> list[dict[str, Any]]:
    """One listing row per registered detector, without downloading or loading any weights."""
    from dataclasses import asdict

    from silhouette.detectors.registry import DETECTORS, create_detector, detector_names

    rows = []
    for name in detector_names():
        factory = DETECTORS.get(name)
        # Families whose construction would load/download weights expose a model-free `describe`.
        describe = getattr(factory, "describe", None)
        info = describe() if describe is not None else create_detector(name).info()
        rows.append(asdict(info))
    return rows


def cmd_detectors(args: argparse.Namespace) -> int:
    """Print the detector table (or JSON)."""
    import json

    rows = detector_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [[title for _, title in COLUMNS]]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            if key == "weights":
                cells.append(f"{'yes' if row['weights_present'] else 'no'}: {row['weights']}")
            else:
                cells.append(str(row[key]))
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    missing = [r["name"] for r in rows if not r["weights_present"]]
    if missing:
        print(
            f"\nNo weights here for {', '.join(missing)}: put the file at the path shown."
        )
    return 0
