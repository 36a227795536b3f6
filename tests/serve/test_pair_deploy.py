"""Private mode deployed: a camera with a pair's obfuscator and a service with its detector count people; any other
combination is refused with one clear line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable, Iterator

import pytest

from silhouette.cli import main
from silhouette.serve.app import app_from_config
from silhouette.serve.config import ServiceConfig
from silhouette.serve.server import ServerThread



@pytest.fixture(scope="module")
def pair(tiny_pair: Callable[..., Path]) -> Path:
    """A one-epoch private pair with the shipped private bottlenecks (grey, 4x4 cells, 4 levels)."""
    return tiny_pair("model.obfuscator_kwargs={grey: true, output_scale: 4, output_levels: 4}")


@contextlib.contextmanager
def _service(pair: Path | None) -> Iterator[str]:
    app = app_from_config(ServiceConfig(no_auth=True, pair=str(pair) if pair else None))
    with ServerThread(app) as server:
        yield server.url


def _run(*argv: str) -> tuple[int, str, str]:
    if argv[0] == "edge" and "--spool" not in argv:
        # a refused frame stays in the spool and would be sent by the next run of that camera: one spool per call
        import tempfile

        argv = (*argv, "--spool", tempfile.mkdtemp(prefix="spool-"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _frame(shared: Path) -> str:
    return str(shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_camera_and_service_of_one_pair_count_people(pair: Path, shared: Path, tmp_path: Path, backend: str) -> None:
    import json

    with _service(pair) as url:
        code, out, err = _run("edge", "--source", _frame(shared), "--server", url, "--pair", str(pair),
                              "--backend", backend, "--report", str(tmp_path / "r.json"), "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sent"] == 1 and report["failed"] == 0


def test_health_names_the_pair(pair: Path) -> None:
    import httpx

    from silhouette.detectors.adapt import pair_id_of

    with _service(pair) as url:
        health = httpx.get(url + "/healthz").json()
    assert health["pair"] == pair_id_of(pair) and len(health["pair"]) == 16


def test_compatible_camera_is_refused_by_a_private_service(pair: Path, shared: Path) -> None:
    with _service(pair) as url:
        code, _, err = _run("edge", "--source", _frame(shared), "--server", url, "--backend", "torch")
    assert code == 2 and "this service runs private pair" in err and "(409)" in err
    assert len(err.strip().splitlines()) <= 2  # the no-key warning may precede the one error line


def test_private_camera_is_refused_by_a_compatible_service(pair: Path, shared: Path) -> None:
    with _service(None) as url:
        code, _, err = _run("edge", "--source", _frame(shared), "--server", url, "--pair", str(pair), "--backend", "torch")
    assert code == 2 and "start it with `silhouette serve --pair`" in err


def test_mismatched_pair_files_refused_before_serving(pair: Path, shared: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "last.pt"
    shutil.copy(pair, bad)
    shutil.copy(shared / "weights" / "yolox_nano.onnx", tmp_path / "last.detector.onnx")
    code, _, err = _run("serve", "--pair", str(bad), "--no-auth", "--port", "1")
    assert code == 2 and "is not the detector this obfuscator was trained with" in err


def test_private_checkpoint_as_plain_checkpoint_is_refused(pair: Path, shared: Path) -> None:
    code, _, err = _run("edge", "--source", _frame(shared), "--server", "http://127.0.0.1:9", "--checkpoint", str(pair))
    assert code == 2 and "pass it as --pair" in err
