"""Shared fixtures: the shared asset folder (footage, weights) and the three PETS test frames of the weights zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from silhouette.errors import SilhouetteError

PETS_FRAMES = ("f0000", "f0400", "f0794")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared read-only folder; missing shared assets FAIL the test (never skip), with the fix in the message."""
    from silhouette.paths import shared_dir

    try:
        path = shared_dir()
    except SilhouetteError as exc:
        pytest.fail(f"shared assets are required by this test: {exc}", pytrace=False)
    for sub in ("weights", "data"):
        if not (path / sub).is_dir():
            msg = f"shared folder {path} has no {sub}/; set SILHOUETTE_SHARED to the complete shared folder"
            pytest.fail(msg, pytrace=False)
    return path


@pytest.fixture(scope="session")
def pets_frames(shared: Path) -> dict[str, torch.Tensor]:
    """The three 320x200 PETS frames of weights/testdata as float RGB [3, 200, 320], keyed 'pets_f0000' etc."""
    from silhouette.imaging import read_image

    frames = {}
    for f in PETS_FRAMES:
        path = shared / "weights" / "testdata" / f"pets2009_s2l1_v1_{f}_320x200.png"
        if not path.is_file():
            pytest.fail(f"test frame {path} is missing from the shared weights folder", pytrace=False)
        frames[f"pets_{f}"] = read_image(path)
    return frames


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every test's camera cache (ONNX exports, spools) out of the user's: a refused frame spooled there by one
    run would be resent by the next."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("silhouette_cache")
    mp.setenv("SILHOUETTE_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(autouse=True)
def _autograd_stays_on() -> Iterator[None]:
    """Fail the test that leaves autograd switched off: later tests in the same process would train nothing."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test (or the code it ran) left torch autograd disabled globally", pytrace=False)


@pytest.fixture(scope="session")
def pets_every(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Callable[[int], Path]:
    """Factory: the PETS footage prepared at 320x200 keeping every N-th frame, built once per N per session."""
    from silhouette.data import prepare_dataset

    built: dict[int, Path] = {}

    def get(every: int) -> Path:
        if every not in built:
            built[every] = prepare_dataset("pets2009", tmp_path_factory.mktemp(f"pets_every{every}") / "pets", every=every, progress=False)
        return built[every]

    return get


@pytest.fixture(scope="session")
def tiny_pair(pets_every: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: a one-epoch private pair (last.pt + last.detector.onnx) on sparse PETS frames, built once per overrides."""
    from silhouette.training.config import load_config
    from silhouette.training.trainer import train

    built: dict[tuple[str, ...], Path] = {}

    def get(*overrides: str) -> Path:
        if overrides not in built:
            out = tmp_path_factory.mktemp("pair") / "run"
            cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", [
                f"data.root={pets_every(40)}", "detector.spec=yolox_nano", "data.crop=[96, 128]", "data.frame_stride=1",
                "mode=private", "detector.targets=gt", *overrides])
            train(cfg, out, progress=False)
            built[overrides] = out / "last.pt"
        return built[overrides]

    return get


@pytest.fixture(scope="session")
def testdata_bgr(shared: Path) -> list[Any]:
    """The three 320x200 PETS frames of weights/testdata, uint8 BGR."""
    import cv2

    frames = []
    for f in PETS_FRAMES:
        img = cv2.imread(str(shared / "weights" / "testdata" / f"pets2009_s2l1_v1_{f}_320x200.png"))
        assert img is not None, f"missing test frame {f}"
        frames.append(img)
    return frames


@pytest.fixture(scope="session")
def silhouette_pair(pets_every: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch silhouette pair (bgsub:mask + YOLOX-Nano fine-tuned on it): its pair.json beside detector.onnx."""
    from silhouette.training.config import load_config
    from silhouette.training.finetune import Finetuner

    out = tmp_path_factory.mktemp("silhouette_pair") / "run"
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", [
        f"data.root={pets_every(40)}", "detector.spec=yolox_nano", "data.crop=[96, 128]", "data.frame_stride=1",
        "detector.targets=gt"])
    Finetuner(cfg, "bgsub:mask", out, progress=False).run()
    return out / "pair.json"
