"""End to end on a tiny prepared PETS dataset: `silhouette attack --quick` writes a scorecard and reuses its cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from silhouette.cli import main


@pytest.mark.slow
def test_attack_quick_end_to_end_and_resume(tiny_pets_factory, tmp_path: Path) -> None:  # noqa: ANN001
    tiny_pets = tiny_pets_factory(4)
    out = tmp_path / "attack"
    argv = ["attack", "--data", str(tiny_pets), "--methods", "clean,pixelate:8", "--attacks", "reconstruction,reid",
            "--quick", "--epochs", "1", "--reid-epochs", "1", "--out", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    card = json.loads((out / "scorecard.json").read_text())
    rows = {r["method"]: r for r in card["rows"]}
    assert set(rows) == {"clean", "pixelate:8"}
    assert rows["clean"]["obf_ssim"] == pytest.approx(1.0)
    assert rows["pixelate:8"]["obf_ssim"] < 0.9
    assert 0 <= rows["pixelate:8"]["reid_adaptive"] <= 1 and rows["clean"]["reid_chance"] > 0
    assert card["meta"]["attacker_params"] > card["meta"]["deobfuscator_params"]
    assert (out / "attackers" / "reconstruction_pixelate_8.pt").is_file() and (out / "tradeoff.png").is_file()
    before = (out / "methods" / "pixelate_8.json").read_text()
    t0 = time.perf_counter()
    assert main(argv) == 0  # everything cached: no retraining, same results
    assert (out / "methods" / "pixelate_8.json").read_text() == before
    assert time.perf_counter() - t0 < 30
    # a longer-trained attacker: the re-ID attack, which also scores its reconstructions, is redone
    assert main([*argv[:argv.index("--epochs") + 1], "2", *argv[argv.index("--epochs") + 2:]]) == 0
    row = json.loads((out / "methods" / "pixelate_8.json").read_text())
    assert row["reconstruction"]["recipe"]["epochs"] == 2
    prov = row["provenance"]  # each cached method row says which code, command and machine made it
    assert len(prov["commit"]) == 40 and "attack" in prov["command"] and prov["machine"]["cores"] >= 1
    assert row["reid"]["key"]["reconstructed"] == row["reconstruction"]["recipe"]
    assert json.loads(before)["reid"]["key"]["reconstructed"]["epochs"] == 1
