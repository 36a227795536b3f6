"""`silhouette attack`: help text explains each attack; user mistakes are one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from silhouette.cli import main


def test_help_explains_every_attack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("reconstruction", "faces", "reid", "U-Net", "IoU >= 0.3", "rank-1", "chance", "adaptive", "--quick"):
        assert word in text, word


def test_missing_dataset_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["attack", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a prepared dataset" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unknown_method_and_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["attack", "--data", str(tmp_path), "--methods", "clean,blurr:2"]) == 2
    assert "blurr" in capsys.readouterr().err
    assert main(["attack", "--data", str(tmp_path), "--attacks", "faces,membership"]) == 2
    assert "membership" in capsys.readouterr().err
    assert main(["attack", "--data", str(tmp_path), "--methods", "blur:abc"]) == 2
    assert "METHOD:NUMBER" in capsys.readouterr().err
