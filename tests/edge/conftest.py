"""Fixtures of the camera tests: a seeded obfuscator checkpoint, its ONNX export, real frames, a loopback service to send to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

API_KEY = "test-key-0123456789"
# narrow registered variant: the deploy tests check plumbing, privacy of what is sent and parity, not model quality
TEST_VARIANT = "obf_w025"


@pytest.fixture(scope="session")
def deploy_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def obf_model() -> torch.nn.Module:
    """A freshly built, seeded obfuscator (the shipped default is not required by these tests)."""
    from silhouette.models import build_obfuscator

    torch.manual_seed(0)
    model = build_obfuscator(TEST_VARIANT).eval()
    # random BN statistics so the output is an actual image transform, not a constant gray frame
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="session")
def checkpoint(obf_model: torch.nn.Module, deploy_tmp: Path) -> Path:
    from silhouette.models import save_checkpoint

    return save_checkpoint(deploy_tmp / "obf.pt", obfuscator=obf_model, obfuscator_spec={"name": TEST_VARIANT, "kwargs": {}})


@pytest.fixture(scope="session")
def onnx_path(checkpoint: Path) -> Path:
    """The cached fp32 export of the checkpoint (exported once per session)."""
    from silhouette.edge.export import cached_onnx

    return cached_onnx(checkpoint)


@pytest.fixture(scope="session")
def camera_frames(shared: Path) -> list[np.ndarray]:
    """Four full-resolution (768x576) PETS camera frames decoded from vtest.avi."""
    from silhouette.data.sources import iter_frames

    frames = []
    for frame in iter_frames(str(shared / "data" / "pets2009" / "vtest.avi"), every=100):
        frames.append(frame.image)
        if len(frames) == 4:
            break
    return frames


@pytest.fixture(scope="session")
def detector():
    """YOLOX-Nano from the shared zoo (the service's default detector)."""
    from silhouette.detectors import create_detector

    return create_detector("yolox_nano")


@pytest.fixture(scope="session")
def server(detector):
    """A real uvicorn server on 127.0.0.1 (ephemeral port) with small limits, in a background thread."""
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    app = create_app("yolox_nano", API_KEY, detector=detector, batch_size=4, max_bytes=300_000, max_pixels=1_000_000)
    srv = ServerThread(app).start()
    yield srv
    srv.stop()
