"""Fixtures of the service tests: real PETS frames, the default detector, a loopback server with small limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def testdata_bgr(shared: Path) -> list[np.ndarray]:
    """The three 320x200 PETS frames of weights/testdata, uint8 BGR."""
    import cv2

    frames = []
    for f in ("f0000", "f0400", "f0794"):
        img = cv2.imread(str(shared / "weights" / "testdata" / f"pets2009_s2l1_v1_{f}_320x200.png"))
        assert img is not None, f"missing test frame {f}"
        frames.append(img)
    return frames


@pytest.fixture(scope="session")
def detector() -> Any:
    """YOLOX-Nano from the shared zoo (the service's default detector)."""
    from silhouette.detectors import create_detector

    return create_detector("yolox_nano")


@pytest.fixture(scope="session")
def server(detector: Any) -> Iterator[Any]:
    """A real uvicorn server on 127.0.0.1 (ephemeral port) with small limits, in a background thread."""
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    app = create_app("yolox_nano", API_KEY, detector=detector, batch_size=4, max_bytes=300_000, max_pixels=1_000_000)
    srv = ServerThread(app).start()
    yield srv
    srv.stop()
