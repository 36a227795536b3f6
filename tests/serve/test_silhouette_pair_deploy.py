"""Private mode with a silhouette pair: the camera learns its background and sends masks, the service counts them
with the fine-tuned detector, and the two name the same pair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from test_pair_deploy import _run, _service  # the same service and CLI helpers: one pair, one spool per call


def test_camera_and_service_of_a_silhouette_pair_count_people(silhouette_pair: Path, pets_every: Callable[[int], Path],
                                                              tmp_path: Path) -> None:
    import httpx

    from silhouette.detectors.adapt import pair_id_of

    frames = pets_every(40) / "frames"
    with _service(silhouette_pair) as url:
        assert httpx.get(url + "/healthz").json()["pair"] == pair_id_of(silhouette_pair)
        code, _, err = _run("edge", "--source", str(next(frames.iterdir())), "--server", url, "--pair",
                            str(silhouette_pair), "--report", str(tmp_path / "r.json"), "--quiet", "--spool", str(tmp_path / "spool"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sent"] >= 10 and report["failed"] == 0


def test_obfuscate_with_a_silhouette_pair_writes_only_masks(silhouette_pair: Path, pets_every: Callable[[int], Path],
                                                            tmp_path: Path) -> None:
    import cv2

    src = next((pets_every(40) / "frames").iterdir())
    code, _, err = _run("obfuscate", str(src), "--checkpoint", str(silhouette_pair), "--out", str(tmp_path / "o"),
                        "--format", "png", "--no-progress")
    assert code == 0, err
    outs = [cv2.imread(str(p)) for p in sorted((tmp_path / "o").iterdir())]
    assert len(outs) >= 10 and all(set(np.unique(o).tolist()) <= {0, 255} for o in outs)
    assert not outs[0].any() and any(o.any() for o in outs[1:])  # nothing before the scene is known, then people


def test_a_classic_pair_json_is_refused_by_the_camera(silhouette_pair: Path, tmp_path: Path) -> None:
    pair = json.loads(silhouette_pair.read_text())
    other = tmp_path / "pair.json"
    other.write_text(json.dumps({**pair, "baseline": "greypix:4"}))
    code, _, err = _run("edge", "--source", "0", "--server", "http://127.0.0.1:9", "--pair", str(other))
    assert code == 2 and "not a silhouette pair" in err and len(err.strip().splitlines()) == 1
