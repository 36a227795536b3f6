"""Fuzzing the loaders a user (or an attacker) hands files to: random and mutated bytes are one-line errors, never a
traceback, a hang or code execution."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from silhouette.errors import SilhouetteError
from silhouette.paths import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_yaml_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=12))
_yaml_tree = st.recursive(_yaml_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                              st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                          max_leaves=12)
_keys = st.sampled_from(["data", "detector", "model", "train", "eval", "mode", "name", "seed"])
_fields = st.sampled_from(["lr_obf", "lr_decay_obf", "grad_clip", "threads", "epochs", "crop", "spec", "targets",
                           "lr", "face_weight", "obfuscator_kwargs", "root", "batch_size", "min_ap50"])


def _mutate(data: st.DataObject, blob: bytes, edits: int, inserts: list[bytes]) -> bytes:
    """Up to `edits` byte flips, cuts to the end, and (when `inserts` is given) insertions of those snippets."""
    b = bytearray(blob)
    ops = ["flip", "cut"] + (["insert"] if inserts else [])
    for _ in range(data.draw(st.integers(1, edits))):
        if not b:
            break
        i, op = data.draw(st.integers(0, len(b) - 1)), data.draw(st.sampled_from(ops))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i : i + data.draw(st.integers(1, len(b)))]
        else:
            b[i:i] = data.draw(st.sampled_from(inserts))
    return bytes(b)


def _one_line(exc: SilhouetteError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(str(exc))


@FUZZ
@given(st.dictionaries(_keys, st.one_of(_yaml_leaf, st.dictionaries(_fields, _yaml_tree, max_size=4)), max_size=5))
def test_config_dicts_validate_or_fail_in_one_line(data: dict) -> None:
    """Any YAML-shaped config either loads into a valid Config or raises one clear SilhouetteError."""
    from silhouette.training.config import config_from_dict

    try:
        cfg = config_from_dict(data)
    except SilhouetteError as exc:
        _one_line(exc)
        return
    t = cfg.train
    assert t.lr_obf > 0 and t.lr_deobf > 0 and t.grad_clip >= 0 and t.threads >= 0  # what loaded is sane


@FUZZ
@given(st.binary(max_size=400))
def test_config_files_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    from silhouette.training.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(blob)
    try:
        load_config(path)
    except SilhouetteError as exc:
        _one_line(exc)


@FUZZ
@given(st.data())
def test_mutated_shipped_config_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Byte flips, cuts and insertions in a real config: valid YAML or not, the answer is a config or one line."""
    from silhouette.training.config import load_config

    text = (REPO / "configs" / data.draw(st.sampled_from(["tiny.yaml", "default.yaml", "private.yaml"]))).read_bytes()
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(_mutate(data, text, 6, [b": ", b"- ", b".inf", b"-1", b"{", b"[", b"'", b"\x00", b"\n  x: 1"]))
    try:
        load_config(path)
    except SilhouetteError as exc:
        _one_line(exc)


@FUZZ
@given(st.data())
def test_mutated_checkpoints_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """A shipped checkpoint with bytes flipped, cut or spliced loads (if untouched where it matters) or is refused."""
    from silhouette.models.checkpoint import load_obfuscator

    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    path.write_bytes(_mutate(data, DEFAULT_CHECKPOINT.read_bytes(), 4, []))
    try:
        load_obfuscator(path)
    except SilhouetteError as exc:
        _one_line(exc)


@FUZZ
@given(st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.floats()),
                    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                    max_leaves=10))
def test_well_formed_files_with_the_wrong_content(tmp_path_factory: pytest.TempPathFactory, obj: object) -> None:
    """A valid torch file holding anything but a checkpoint is refused by name, not with a KeyError."""
    from silhouette.models.checkpoint import load_obfuscator

    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(SilhouetteError) as err:
        load_obfuscator(path)
    _one_line(err.value)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    """A YAML tag that would construct a Python object is an error, not an object."""
    from silhouette.training.config import load_config

    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(f"name: !!python/object/apply:builtins.open ['{marker}', 'w']\n", encoding="utf-8")
    with pytest.raises(SilhouetteError):
        load_config(path)
    assert not marker.exists()
    assert yaml.safe_load("a: 1") == {"a": 1}
