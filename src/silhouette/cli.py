"""The `silhouette` command: parses arguments, then hands off to one function per command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from silhouette import __version__
from silhouette.errors import SilhouetteError

# Each module defines `register(subparsers)`, adding its commands with set_defaults(func=...).
COMMAND_MODULES = [
    "silhouette.data.cli",
    "silhouette.detectors.cli",
    "silhouette.models.cli",
    "silhouette.training.cli",
    "silhouette.evaluation.cli",
    "silhouette.privacy.cli",
    "silhouette.edge.cli",
    "silhouette.serve.cli",
    "silhouette.demo",
]
# what `pip install 'silhouette[EXTRA]'` brings for a module a command imports when it runs (core: the camera only)
EXTRA_OF = {
    "torch": "train", "torchvision": "train", "onnx": "train", "onnx2torch": "train", "tensorboard": "train",
    "torchmetrics": "eval", "faster_coco_eval": "eval", "skimage": "eval", "matplotlib": "eval",
    "facenet_pytorch": "privacy",
    "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "h11": "serve", "python_multipart": "serve",
    "multipart": "serve", "prometheus_client": "serve", "pydantic": "serve", "sqlalchemy": "serve",
}


def _whole_number(text: str, minimum: int) -> int:
    """`text` as a whole number >= minimum, else argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="silhouette",
        description=(
            "Privacy-preserving person detection. A tiny learned obfuscator turns frames into silhouettes "
            "on the camera; unmodified detectors in the cloud still find every person."
        ),
        epilog="Run 'silhouette COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"silhouette {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from silhouette import provenance

    # result files record the command as typed, also when main() runs in-process (tests, notebooks)
    provenance.COMMAND = ["silhouette", *(sys.argv[1:] if argv is None else argv)]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except SilhouetteError as exc:
        print(f"silhouette {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:  # not an optional dependency: a real bug, keep its traceback
            raise
        print(f"silhouette {args.command}: error: needs the {exc.name.split('.')[0]} package, which is not installed: "
              f"pip install 'silhouette[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"silhouette {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
