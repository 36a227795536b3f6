"""`silhouette detectors`: the table and its JSON form list every detector and where its weights are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from silhouette.cli import main
from silhouette.paths import weights_dir

ZOO = {"yolox_nano", "nanodet_m", "yolov5n", "yolo_fastest_xl", "fastestdet", "yolo_fastest_body"}
TORCHVISION = {
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "maskrcnn_resnet50_fpn",
    "retinanet_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
}


def _json_rows(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    assert main(["detectors", "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_table_lists_all_twelve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detectors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "FAMILY", "INPUT", "WEIGHTS"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip() and not line.startswith("No weights")}
    assert set(rows) == ZOO | TORCHVISION
    for name in ZOO:
        assert f"yes: {weights_dir() / (name + '.onnx')}" in rows[name]


def test_json_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty weights-API cache
    rows = _json_rows(capsys)
    assert set(rows) == ZOO | TORCHVISION
    for name in ZOO:
        assert rows[name]["family"] == "onnx_zoo" and rows[name]["weights_present"] is True
        assert Path(rows[name]["weights"]).is_file()
    for name in TORCHVISION:
        row = rows[name]
        assert row["family"] == "torchvision" and row["weights_present"] is False
        assert row["source"].startswith("torchvision ") and "weights API" in row["source"]
        assert Path(row["weights"]).parent == tmp_path / "checkpoints" and row["weights"].endswith(".pth")
    # A file in the cache under the weights API's name counts as present.
    ssd = Path(rows["ssdlite320_mobilenet_v3_large"]["weights"])
    ssd.parent.mkdir(parents=True)
    ssd.write_bytes(b"placeholder")
    assert _json_rows(capsys)["ssdlite320_mobilenet_v3_large"]["weights_present"] is True
