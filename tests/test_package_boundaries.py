"""The camera/cloud boundary, read from the source: edge and serve never import each other (they meet in
silhouette.wire and silhouette.imaging), the edge package has no import cycle, and the camera's modules import no torch
at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "silhouette"
# what a camera imports to run `obfuscate` and `edge`: none of it may import torch (or a web framework) at import time
CAMERA_MODULES = (
    "silhouette.wire", "silhouette.imaging", "silhouette.paths", "silhouette.fileio", "silhouette.data.sources",
    "silhouette.edge.checkpoint", "silhouette.edge.export", "silhouette.edge.runtime", "silhouette.edge.sinks",
    "silhouette.edge.pipeline", "silhouette.edge.client", "silhouette.edge.cli", "silhouette.edge.fleet",
    "silhouette.edge.spool", "silhouette.serve.cli", "silhouette.cli", "silhouette.provenance", "silhouette.lazy",
)
HEAVY = ("torch", "torchvision", "onnx", "onnx2torch", "fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "ray")


def module_name(path: Path) -> str:
    """silhouette.x.y of a source file."""
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Imports(ast.NodeVisitor):
    """Collects imported module names; optionally skips the fallbacks in `except ImportError:` handlers."""

    def __init__(self, package: str, skip_guarded: bool) -> None:
        self.package, self.skip_guarded, self.found = package, skip_guarded, set()

    def visit_Try(self, node: ast.Try) -> None:  # noqa: N802 - ast.NodeVisitor's naming
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        guarded = self.skip_guarded and caught & {"ImportError", "ModuleNotFoundError"}
        for child in [*node.body, *([] if guarded else node.handlers), *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        base = node.module or ""
        if node.level:  # relative: resolve against this file's package
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        self.found.add(base)
        self.found.update(f"{base}.{alias.name}" for alias in node.names)  # `from silhouette import serve`


def imports(path: Path, top_level_only: bool = False, skip_guarded: bool = False) -> set[str]:
    """Every module a source file imports, lazy imports inside functions included unless `top_level_only`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path) if path.is_relative_to(PKG) else path.stem
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    visitor = _Imports(package, skip_guarded)
    if top_level_only:
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                visitor.visit(node)
    else:
        visitor.visit(tree)
    return visitor.found


def package_files(name: str) -> list[Path]:
    """Source files of silhouette.<name> (a package folder or a module)."""
    folder = PKG / name
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PKG / f"{name}.py"]


def reaches(found: set[str], target: str) -> list[str]:
    """The imported names that are `target` or inside it."""
    return sorted(m for m in found if m == target or m.startswith(target + "."))


@pytest.mark.parametrize(("side", "other"), [("edge", "serve"), ("serve", "edge")])
def test_edge_and_serve_never_import_each_other(side: str, other: str) -> None:
    """Not even lazily: what they share lives in silhouette.wire (the protocol) and silhouette.imaging (the bytes)."""
    offenders = {module_name(f): reaches(imports(f), f"silhouette.{other}") for f in package_files(side)}
    assert not {m: hits for m, hits in offenders.items() if hits}, f"silhouette.{side} must reach silhouette.{other} only through silhouette.wire / silhouette.imaging"


def test_wire_imports_neither_side_nor_heavy_packages() -> None:
    """The wire format must load on a camera and in the service alike."""
    found = imports(PKG / "wire.py")
    for banned in ("silhouette.edge", "silhouette.serve", *HEAVY):
        assert not reaches(found, banned), f"silhouette.wire imports {reaches(found, banned)}"


def test_imaging_imports_neither_side_nor_a_web_framework() -> None:
    """The frame bytes are encoded on the camera and decoded in the service by the same module; torch only lazily."""
    found = imports(PKG / "imaging.py")
    for banned in ("silhouette.edge", "silhouette.serve", *(h for h in HEAVY if h != "torch")):
        assert not reaches(found, banned), f"silhouette.imaging imports {reaches(found, banned)}"


def test_nothing_imports_the_old_deploy_package() -> None:
    """src/, tests/ and the scripts (benchmarks/, experiments/, tools/) use the new packages (guarded fallbacks are fine)."""
    repo = PKG.parents[1]
    scripts = [f for d in ("benchmarks", "experiments", "tools") for f in (repo / d).glob("*.py")]
    files = [*PKG.rglob("*.py"), *(repo / "tests").rglob("*.py"), *scripts]
    offenders = [str(f.relative_to(repo)) for f in files if reaches(imports(f, skip_guarded=True), "silhouette.deploy")]
    assert not offenders, f"silhouette.deploy is gone; import from silhouette.edge / silhouette.serve: {offenders}"


def test_edge_package_has_no_import_cycle() -> None:
    """Lazy imports count too: pipeline <-> export went both ways before the split."""
    graph = {module_name(f): {m for m in imports(f) if m.startswith("silhouette.edge.")} for f in package_files("edge")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        """Depth-first walk; `path` is the chain of imports that led here."""
        assert node not in path, f"import cycle: {' -> '.join(path[path.index(node):] + (node,))}"
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, path + (node,))
        done.add(node)

    for name in graph:
        visit(name, ())


def test_camera_modules_import_no_heavy_package_at_import_time() -> None:
    """Heavy imports live inside the functions that need them (a .pt model, --backend torch, serve)."""
    for name in CAMERA_MODULES:
        path = PKG.parent / (name.replace(".", "/") + ".py")
        heavy = [m for m in imports(path, top_level_only=True) if m.split(".")[0] in HEAVY]
        assert not heavy, f"{name} imports {heavy} at import time; import it inside the function that needs it"


def test_cli_registers_every_command_without_torch() -> None:
    """Building the parser (all sub-commands) and importing the camera modules leaves torch and fastapi unimported."""
    code = (
        "import sys, importlib\n"
        "from silhouette.cli import build_parser\n"
        "build_parser()\n"
        f"for m in {CAMERA_MODULES!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]", f"imported at CLI start: {out.strip()}"
