"""Root modules: atomic writes, the image convention, the registry and the CLI shell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from silhouette.cli import main
from silhouette.errors import SilhouetteError
from silhouette.fileio import atomic_open, read_json, read_yaml, write_csv, write_json, write_yaml
from silhouette.imaging import bgr_to_tensor, check_image, read_image, tensor_to_bgr, write_image
from silhouette.paths import ENV_SHARED, shared_dir
from silhouette.registry import Registry


def test_atomic_open_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write('{"half": ')
            raise RuntimeError("crash mid-write")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SilhouetteError, match="bad.json"):
        read_json(bad)
    with pytest.raises(SilhouetteError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_yaml_roundtrip_and_one_line_errors(tmp_path: Path) -> None:
    doc = {"b": [1, 2.5, "x"], "a": {"nested": None}}
    write_yaml(tmp_path / "ok.yaml", doc)
    assert read_yaml(tmp_path / "ok.yaml", "config") == doc
    assert (tmp_path / "ok.yaml").read_text(encoding="utf-8").startswith("b:")  # keys in the order given
    (tmp_path / "bad.yaml").write_text("a: [1,\n b: 2", encoding="utf-8")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    for name, msg in [("missing.yaml", "file not found"), ("bad.yaml", "not valid YAML"), ("latin.yaml", "not UTF-8")]:
        with pytest.raises(SilhouetteError, match=f"^config .*{name}: {msg}") as exc:
            read_yaml(tmp_path / name, "config")
        assert "\n" not in str(exc.value)


def test_write_csv_quotes_and_reads_back(tmp_path: Path) -> None:
    rows = [{"name": 'a "quoted", cell', "n": 3}, ["line\nbreak", 4], {"n": 5}]
    write_csv(tmp_path / "t.csv", ["name", "n"], rows)
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert back == [{"name": 'a "quoted", cell', "n": "3"}, {"name": "line\nbreak", "n": "4"}, {"name": "", "n": "5"}]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


@pytest.mark.parametrize("package", ["silhouette", "silhouette.data", "silhouette.detectors", "silhouette.models",
                                     "silhouette.training"])
def test_every_lazy_export_resolves(package: str) -> None:
    import importlib

    mod = importlib.import_module(package)
    assert mod.__all__ and set(mod.__all__) <= set(dir(mod))
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(mod, "nope")


def test_image_roundtrip_on_real_frame(tmp_path: Path) -> None:
    src = shared_dir() / "weights" / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png"
    img = read_image(src)
    assert img.shape == (3, 200, 320) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    write_image(tmp_path / "copy.png", img)
    assert torch.equal(read_image(tmp_path / "copy.png"), img)  # PNG is lossless: bit-exact
    bgr = tensor_to_bgr(img)
    assert torch.equal(bgr_to_tensor(bgr), img)


def test_channel_order_is_rgb() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    t = bgr_to_tensor(bgr)
    assert t[0].min() == 1.0 and t[1:].max() == 0.0


@pytest.mark.parametrize(
    "bad, msg",
    [(torch.zeros(3, 10, 10), "shape"), (torch.zeros(1, 3, 10, 10, dtype=torch.uint8), "dtype"), (np.zeros((1, 3, 4, 4)), "Tensor")],
)
def test_check_image_rejects_bad_input(bad: object, msg: str) -> None:
    with pytest.raises(SilhouetteError, match=msg):
        check_image(bad)  # type: ignore[arg-type]


def test_read_image_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(b"not a png")
    with pytest.raises(SilhouetteError, match="x.png"):
        read_image(p)


def test_registry_suggests_close_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("yolox_nano")(lambda: 1)
    assert reg.create("yolox_nano") == 1
    with pytest.raises(SilhouetteError, match="did you mean 'yolox_nano'"):
        reg.create("yolox_nan")


def test_shared_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_SHARED, str(tmp_path))
    assert shared_dir() == tmp_path
    monkeypatch.setenv(ENV_SHARED, str(tmp_path / "nope"))
    with pytest.raises(SilhouetteError, match=ENV_SHARED):
        shared_dir()


def test_cli_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("prepare", "label", "detectors", "train", "info", "obfuscate", "export", "serve", "edge", "demo"):
        assert cmd in out, f"{cmd} missing from silhouette --help"


def test_cli_user_error_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["demo", "--out", str(tmp_path), "--detector", "no_such_detector", "--max-frames", "1", "--data", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
