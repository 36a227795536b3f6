"""Re-identification attacker on real PETS crops: beats chance on clean crops; protocol and metrics are sound."""

from __future__ import annotations

import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.privacy.reid import (
    ReIDRecipe,
    batched,
    evaluate_reid,
    extract_crops,
    rank_metrics,
    run_reid_attack,
    split_gallery_query,
    train_reid,
)

SMALL = ReIDRecipe(width=8, epochs=3, embedding_dim=32)


def _split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    return [it for it in items if it["frame_index"] < 220], [it for it in items if it["frame_index"] >= 250]


def test_crops_follow_gt_boxes(pets_items: list[dict]) -> None:
    crops = extract_crops(pets_items[:10])
    n_expected = sum(int(((it["gt_boxes"][:, 3] - it["gt_boxes"][:, 1]) >= 16).sum()) for it in pets_items[:10])
    assert len(crops) == n_expected > 0
    assert crops.crops.shape[1:] == (3, 64, 32) and crops.crops.dtype == torch.uint8
    assert len(crops.identities()) >= 2


def test_batches_do_not_change_the_crops(pets_items: list[dict]) -> None:
    assert list(batched(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]] and list(batched([], 3)) == []
    one, uneven = extract_crops(iter(pets_items[:7]), batch_size=16), extract_crops(iter(pets_items[:7]), batch_size=3)
    assert torch.equal(one.crops, uneven.crops) and torch.equal(one.ids, uneven.ids)
    assert torch.equal(one.frames, uneven.frames)


def test_reid_attacker_beats_chance_on_clean_crops(pets_items: list[dict]) -> None:
    train_items, test_items = _split(pets_items)
    train = extract_crops(train_items)
    assert 300 <= len(train) <= 600
    model, hist = train_reid(train, SMALL, progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"]
    gallery, query = split_gallery_query(extract_crops(test_items))
    assert int(gallery.frames.max()) + 10 < int(query.frames.min())  # queries come from later frames
    res = evaluate_reid(model, gallery, query)
    assert res["rank1"] > 2 * res["chance_rank1"], res
    assert res["map"] > res["chance_map"], res


def test_rank_metrics_perfect_and_chance() -> None:
    g_ids = torch.tensor([0, 1, 2, 3])
    g = torch.eye(4)
    q_ids = torch.tensor([2, 0])
    res = rank_metrics(g[q_ids], q_ids, g, g_ids)
    assert res["rank1"] == 1.0 and abs(res["map"] - 1.0) < 1e-6 and res["chance_rank1"] == 0.25
    wrong = rank_metrics(g[[1, 3]], q_ids, g, g_ids)
    assert wrong["rank1"] == 0.0 and wrong["map"] < 1.0
    assert 0.3 < res["chance_map"] < 0.7  # one relevant among four: expected AP = (1+1/2+1/3+1/4)/4 ~ 0.52


def test_run_reid_attack_both_threat_models(pets_items: list[dict]) -> None:
    from silhouette.evaluation.baselines import pixelate

    train_items, test_items = _split(pets_items[::2] + pets_items[1::4])
    recipe = ReIDRecipe(width=8, epochs=1, embedding_dim=16)
    res, clean_model = run_reid_attack(train_items, test_items, lambda x: pixelate(x, 8), reconstructor=lambda x: x,
                                       recipe=recipe, method="pixelate", progress=False)
    for key in ("clean_query", "obfuscated_query", "reconstructed_query"):
        r = res["clean_trained"][key]
        assert 0 <= r["rank1"] <= 1 and r["chance_rank1"] == 1 / r["gallery_identities"]
    assert res["clean_trained"]["reconstructed_query"] == res["clean_trained"]["obfuscated_query"]
    assert 0 <= res["adaptive"]["obfuscated"]["rank1"] <= 1
    assert res["recipe"]["epochs"] == 1 and clean_model is not None


def test_items_without_identities_are_a_clear_error(pets_items: list[dict]) -> None:
    empty = [{**pets_items[0], "gt_boxes": torch.zeros(0, 4), "gt_ids": torch.zeros(0, dtype=torch.long)}]
    with pytest.raises(SilhouetteError, match="no person crops"):
        extract_crops(empty)
