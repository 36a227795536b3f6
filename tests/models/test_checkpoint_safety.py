"""A checkpoint that carries a pickled code payload is refused, before the payload runs, by every command that loads one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.models.checkpoint import FORMAT, read_checkpoint, save_checkpoint
from silhouette.paths import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "src" / "silhouette" / "assets"


class _Payload:
    """Unpickling this calls open(marker, 'w'): a file appears exactly when the payload runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _evil(path: Path, marker: Path, **extra: object) -> Path:
    """A checkpoint that looks right (format, obfuscator entry) but carries the payload."""
    good = read_checkpoint(DEFAULT_CHECKPOINT)
    torch.save({**good, **extra, "payload": _Payload(marker)}, path)
    return path


def _cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI in a fresh process (so the refusal is tested as a user meets it)."""
    return subprocess.run([sys.executable, "-m", "silhouette", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, **(env or {})})


def _refused(proc: subprocess.CompletedProcess[str], marker: Path) -> None:
    assert not marker.exists(), "the pickled payload ran"
    assert proc.returncode == 2, proc.stderr
    assert "refused" in proc.stderr and "nothing in it was run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_payload_runs_under_plain_pickle(tmp_path: Path) -> None:
    """The probe is real: loading it the old way creates the marker file."""
    marker = tmp_path / "pwned"
    path = _evil(tmp_path / "evil.pt", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("asset", sorted(p.name for p in ASSETS.glob("*.pt")))
def test_shipped_checkpoints_load_safely(asset: str) -> None:
    ckpt = read_checkpoint(ASSETS / asset)
    assert ckpt["format"] == FORMAT and "obfuscator" in ckpt


def test_read_checkpoint_refuses(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SilhouetteError, match="refused.*nothing in it was run"):
        read_checkpoint(_evil(tmp_path / "evil.pt", marker))
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["info", "{ckpt}"],
    ["obfuscate", "{frame}", "--checkpoint", "{ckpt}", "--backend", "torch", "--out", "{out}/o.png"],
    ["obfuscate", "{frame}", "--checkpoint", "{ckpt}", "--backend", "onnx", "--out", "{out}/o.png"],
    ["obfuscate", "{frame}", "--checkpoint", "{ckpt}", "--backend", "onnx-int8", "--out", "{out}/o.png"],
    ["edge", "--source", "{frame}", "--server", "http://127.0.0.1:9", "--checkpoint", "{ckpt}", "--backend", "torch"],
    ["edge", "--source", "{frame}", "--server", "http://127.0.0.1:9", "--checkpoint", "{ckpt}"],
    ["export", "--checkpoint", "{ckpt}", "--out", "{out}/o.onnx"],
    ["evaluate", "--data", "{data}", "--checkpoint", "{ckpt}"],
    ["attack", "--data", "{data}", "--checkpoint", "{ckpt}", "--attacks", "faces", "--out", "{out}/a"],
], ids=lambda a: "-".join(x for x in a if not x.startswith(("{", "http"))))
def test_cli_refuses(argv: list[str], tmp_path: Path, shared: Path, pets_every: Callable[[int], Path]) -> None:
    marker = tmp_path / "pwned"
    ckpt = _evil(tmp_path / "evil.pt", marker)
    frame = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png"
    data = pets_every(40) if "{data}" in argv else None
    args = [a.format(ckpt=ckpt, frame=frame, out=tmp_path, data=data) for a in argv]
    _refused(_cli(*args, env={"SILHOUETTE_API_KEY": "k" * 32}), marker)
    assert not list(tmp_path.glob("o.*"))


def test_train_resume_refuses(tmp_path: Path, pets_every: Callable[[int], Path]) -> None:
    pets_train = pets_every(40)
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    _evil(out / "last.pt", marker, training_state={"rng": {}})
    proc = _cli("train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(out), "--resume", "--no-progress",
                "--set", f"data.root={pets_train}", "--set", "detector.spec=fastestdet")
    _refused(proc, marker)


def test_train_init_from_refuses(tmp_path: Path, pets_every: Callable[[int], Path]) -> None:
    pets_train = pets_every(40)
    marker = tmp_path / "pwned"
    ckpt = _evil(tmp_path / "evil.pt", marker)
    proc = _cli("train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                "--set", f"data.root={pets_train}", "--set", "detector.spec=fastestdet", "--set", f"model.init_from={ckpt}")
    _refused(proc, marker)


def test_attacker_checkpoint_refuses(tmp_path: Path) -> None:
    """A planted reconstruction-attacker checkpoint is refused on load and on resume."""
    from silhouette.privacy.reconstruction import ReconstructionRecipe, load_attacker, train_attacker

    marker = tmp_path / "pwned"
    path = tmp_path / "attacker.pt"
    torch.save({"kind": "silhouette-reconstruction-attacker", "payload": _Payload(marker)}, path)
    with pytest.raises(SilhouetteError, match="refused"):
        load_attacker(path)
    frames = [torch.rand(3, 32, 48) for _ in range(2)]
    with pytest.raises(SilhouetteError, match="refused"):
        train_attacker(lambda x: x, frames, ReconstructionRecipe(epochs=1), checkpoint=path, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) // 2],
    lambda b: b"not a zip at all",
    lambda b: b"",
])
def test_damaged_checkpoint_is_one_line(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(damage(DEFAULT_CHECKPOINT.read_bytes()))
    with pytest.raises(SilhouetteError, match="cannot be read"):
        read_checkpoint(path)


def test_rng_state_survives_a_safe_round_trip(tmp_path: Path) -> None:
    """The training state (python, numpy and torch RNGs) is plain data: it loads with weights_only and restores exactly."""
    import random

    import numpy as np

    from silhouette.models import build_model
    from silhouette.training.rng import rng_state, set_rng_state

    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    model = build_model("obf_w025")
    path = save_checkpoint(tmp_path / "c.pt", obfuscator=model, obfuscator_spec={"name": "obf_w025", "kwargs": {}},
                           training_state={"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(read_checkpoint(path)["training_state"]["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
