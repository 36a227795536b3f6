"""Person re-identification attack: can an adversary tell *who* a detected person is?

Persons are cropped by their ground-truth boxes (PETS 2009 has identity ids) and resized to 64x32.
An embedding CNN is trained with identity classification (cross-entropy) on train-split crops; at
test time only its L2-normalised embedding is used, so identities absent from training still work.
Test protocol: gallery = crops from the first part of the test frames, queries = crops from later
frames (after a gap, so no near-duplicate neighbours), ranked by cosine similarity; rank-1 and mAP,
with the chance level beside them. Two threat models:
  (a) clean-trained: the attacker trained on clean crops matches obfuscated queries to a clean gallery;
  (b) adaptive: the attacker is trained on crops of the method under attack and matches within it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from silhouette.errors import SilhouetteError

CROP_SIZE = (64, 32)  # (H, W)
Transform = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")


@dataclass
class CropSet:
    """Person crops (uint8 [N,3,H,W]) with their identity ids and source frame indices."""

    crops: torch.Tensor
    ids: torch.Tensor
    frames: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: torch.Tensor) -> "CropSet":
        """The crops where `mask` is true (or at the given indices)."""
        return CropSet(self.crops[mask], self.ids[mask], self.frames[mask])

    def identities(self) -> list[int]:
        """Distinct identity ids, sorted."""
        return sorted(int(i) for i in torch.unique(self.ids))


def roi_crops(images: torch.Tensor, boxes: list[torch.Tensor], size: tuple[int, int] = CROP_SIZE) -> torch.Tensor:
    """RoIAlign crops [N,3,*size] of per-image xyxy boxes, cut the same way for the attack and for training."""
    from torchvision.ops import roi_align

    return roi_align(images, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily from any iterable."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_crops(
    items: Iterable[Mapping[str, Any]],
    transform: Transform | None = None,
    size: tuple[int, int] = CROP_SIZE,
    min_height: float = 16.0,
    batch_size: int = 16,
) -> CropSet:
    """Crop every GT person (items: image [3,H,W], gt_boxes [K,4], gt_ids [K], frame_index) after `transform` of the full frame.

    The transform runs on whole frames (as on the camera), then boxes are cut out with RoIAlign;
    persons shorter than `min_height` pixels are skipped (too few pixels to identify anyone).
    """
    crops: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    frames: list[torch.Tensor] = []
    for batch in batched(items, batch_size):
        images = torch.stack([it["image"] for it in batch])
        if transform is not None:
            with torch.no_grad():
                images = transform(images).clamp(0, 1)
        boxes, keep_ids, keep_frames = [], [], []
        for it in batch:
            b = torch.as_tensor(it["gt_boxes"], dtype=torch.float32).reshape(-1, 4)
            i = torch.as_tensor(it["gt_ids"], dtype=torch.long).reshape(-1)
            ok = (b[:, 3] - b[:, 1]) >= min_height
            boxes.append(b[ok])
            keep_ids.append(i[ok])
            keep_frames.append(torch.full((int(ok.sum()),), int(it["frame_index"]), dtype=torch.long))
        if sum(len(b) for b in boxes):
            out = roi_crops(images, boxes, size)
            crops.append(out.clamp(0, 1).mul(255).round().to(torch.uint8))
            ids.extend(keep_ids)
            frames.extend(keep_frames)
    if not crops:
        raise SilhouetteError("no person crops: the frames carry no ground-truth boxes with identities (use pets2009)")
    return CropSet(torch.cat(crops), torch.cat(ids), torch.cat(frames))


class ReIDNet(nn.Module):
    """Small VGG-style CNN -> global average pool -> embedding (BN) -> identity classifier."""

    def __init__(self, num_classes: int, embedding_dim: int = 128, width: int = 32) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(3, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.MaxPool2d(2),
            *block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embedding = nn.Sequential(nn.Linear(8 * w, embedding_dim), nn.BatchNorm1d(embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of float [0,1] crops."""
        return F.normalize(self.embedding(self.features(x - 0.5)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity logits (training only)."""
        return self.classifier(self.embedding(self.features(x - 0.5)))


@dataclass
class ReIDRecipe:
    """How the re-ID attacker is trained; recorded with every result."""

    # the network and what it sees
    embedding_dim: int = 128
    width: int = 32
    crop: tuple[int, int] = CROP_SIZE
    # how it is trained
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d


QUICK_REID = ReIDRecipe(width=16, epochs=3)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # horizontal flips and small shifts: the same person seen a few pixels off or walking the other way
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = 3
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_reid(crops: CropSet, recipe: ReIDRecipe | None = None, progress: bool = True, desc: str = "re-ID attacker",
               device: str | torch.device = "cpu") -> tuple[ReIDNet, list[dict[str, float]]]:
    """Train the embedding CNN by identity classification on `crops`; returns (model in eval mode, per-epoch history).

    On `device` the crops live there for the whole run; augmentation draws stay on a CPU generator (same as CPU runs).
    """
    from tqdm import tqdm

    recipe = recipe or ReIDRecipe()
    classes = crops.identities()
    if len(classes) < 2:
        raise SilhouetteError(f"re-ID training needs at least 2 identities, got {len(classes)}")
    lookup = {c: i for i, c in enumerate(classes)}
    device = torch.device(device)
    labels = torch.tensor([lookup[int(i)] for i in crops.ids], dtype=torch.long).to(device)
    images = crops.crops.to(device)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model = ReIDNet(len(classes), recipe.embedding_dim, recipe.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    n = len(crops)
    steps = math.ceil(n / recipe.batch_size)
    history: list[dict[str, float]] = []
    bar = tqdm(total=recipe.epochs * steps, desc=desc, disable=not progress, unit="step", leave=False)
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        # accumulated on the device in float64 (a Python float's arithmetic), read once per epoch
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        for s in range(steps):
            idx = order[s * recipe.batch_size : (s + 1) * recipe.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            didx = idx.to(device)
            x = _augment(images[didx].float() / 255, gen)
            logits = model(x)
            loss = F.cross_entropy(logits, labels[didx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
            correct += (logits.argmax(1) == labels[didx]).sum().double()
            bar.update(1)
        total, correct = float(total), float(correct)
        history.append({"epoch": epoch + 1, "loss": total / n, "train_acc": correct / n})
        bar.set_postfix(epoch=epoch + 1, loss=f"{total / n:.3f}")
    bar.close()
    return model.eval(), history


def embed(model: ReIDNet, crops: CropSet, batch_size: int = 256) -> torch.Tensor:
    """Embeddings [N, D] of a crop set, computed on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            out.append(model.embed(crops.crops[i : i + batch_size].to(device).float() / 255).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.classifier.in_features)


def split_gallery_query(crops: CropSet, gallery_fraction: float = 0.3, gap_frames: int = 10,
                        gallery_per_id: int | None = 5) -> tuple[CropSet, CropSet]:
    """Gallery from the earliest test frames, queries from frames after a gap; queries only of gallery identities.

    At most `gallery_per_id` gallery crops per identity (evenly spread over its gallery frames).
    """
    if len(crops) == 0:
        raise SilhouetteError("re-ID: no test crops")
    first, last = int(crops.frames.min()), int(crops.frames.max())
    cut = first + gallery_fraction * (last - first)
    g_mask = crops.frames <= cut
    q_mask = crops.frames > cut + gap_frames
    gallery = crops.subset(g_mask)
    if gallery_per_id:
        keep: list[int] = []
        for pid in gallery.identities():
            idx = torch.nonzero(gallery.ids == pid).flatten()
            pick = np.unique(np.linspace(0, len(idx) - 1, min(gallery_per_id, len(idx))).round().astype(int))
            keep.extend(int(idx[p]) for p in pick)
        gallery = gallery.subset(torch.tensor(sorted(keep), dtype=torch.long))
    query = crops.subset(q_mask)
    query = query.subset(torch.isin(query.ids, gallery.ids))
    if len(gallery.identities()) < 2 or len(query) == 0:
        raise SilhouetteError(
            f"re-ID: test split too short for a gallery/query protocol ({len(gallery.identities())} gallery identities, "
            f"{len(query)} queries); use a longer test split"
        )
    return gallery, query


def _map(sim: torch.Tensor, relevant: torch.Tensor) -> float:
    from torchmetrics.retrieval import RetrievalMAP

    metric = RetrievalMAP()
    indexes = torch.arange(sim.shape[0])[:, None].expand_as(sim)
    return float(metric(sim.flatten(), relevant.flatten(), indexes=indexes.flatten()))


_CHANCE: dict[tuple[Any, ...], float] = {}


def _chance_map(relevant: torch.Tensor, trials: int, seed: int) -> float:
    # depends only on which gallery entries match each query: the same for every method and threat model of a
    # run (same test crops), so the random rankings are scored once instead of for every evaluation
    import hashlib

    key = (tuple(relevant.shape), hashlib.sha1(relevant.cpu().numpy().tobytes()).hexdigest(), trials, seed)
    if key not in _CHANCE:
        gen = torch.Generator().manual_seed(seed)
        _CHANCE[key] = float(np.mean([_map(torch.rand(relevant.shape, generator=gen), relevant) for _ in range(trials)]))
    return _CHANCE[key]


def rank_metrics(query_emb: torch.Tensor, query_ids: torch.Tensor, gallery_emb: torch.Tensor, gallery_ids: torch.Tensor,
                 chance_trials: int = 20, seed: int = 0) -> dict[str, float]:
    """Rank-1 and mAP by cosine similarity, plus their chance levels (random ranking)."""
    sim = query_emb @ gallery_emb.T
    relevant = query_ids[:, None] == gallery_ids[None, :]
    rank1 = float(relevant[torch.arange(len(sim)), sim.argmax(1)].float().mean())
    chance_map = _chance_map(relevant, chance_trials, seed)
    n_ids = len(torch.unique(gallery_ids))
    return {"rank1": rank1, "map": _map(sim, relevant), "chance_rank1": 1.0 / n_ids, "chance_map": chance_map,
            "queries": len(query_ids), "gallery": len(gallery_ids), "gallery_identities": n_ids}


def evaluate_reid(model: ReIDNet, gallery: CropSet, query: CropSet) -> dict[str, float]:
    """Rank-1/mAP of `query` crops against `gallery` crops under `model`'s embedding."""
    return rank_metrics(embed(model, query), query.ids, embed(model, gallery), gallery.ids)


def _same_people(a: CropSet, b: CropSet) -> None:
    if not (torch.equal(a.ids, b.ids) and torch.equal(a.frames, b.frames)):
        raise SilhouetteError("re-ID: crop sets of one split do not line up (same frames and boxes needed)")


def run_reid_attack(
    train_items: list[Mapping[str, Any]],
    test_items: list[Mapping[str, Any]],
    transform: Transform,
    reconstructor: Transform | None = None,
    recipe: ReIDRecipe | None = None,
    clean_model: ReIDNet | None = None,
    method: str = "method",
    progress: bool = True,
    gallery_fraction: float = 0.3,
    gap_frames: int = 10,
    device: str | torch.device = "cpu",
    cache: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ReIDNet]:
    """Both threat models for one method. Returns (results, clean-trained model) so the clean model can be reused.

    `cache` (a dict kept by the caller across methods of the same items) holds the clean crops, cut once.
    """
    recipe = recipe or ReIDRecipe()
    cache = {} if cache is None else cache

    def quantised(x: torch.Tensor) -> torch.Tensor:
        # what leaves the camera is an 8-bit image
        return torch.round(transform(x).clamp(0, 1) * 255) / 255

    if cache.get("crop") != recipe.crop:
        cache.clear()
        cache.update(crop=recipe.crop, train=extract_crops(train_items, None, recipe.crop),
                     test=extract_crops(test_items, None, recipe.crop))
    train_clean, test_clean = cache["train"], cache["test"]
    test_obf = extract_crops(test_items, quantised, recipe.crop)
    _same_people(test_clean, test_obf)
    if clean_model is None:
        clean_model, _ = train_reid(train_clean, recipe, progress, desc="re-ID attacker [clean]", device=device)
    g_clean, q_clean = split_gallery_query(test_clean, gallery_fraction, gap_frames)

    def aligned(cs: CropSet, ref: CropSet) -> CropSet:
        # pick the crops of `cs` that correspond to `ref` (same frame, same identity)
        key = {(int(f), int(i)): k for k, (f, i) in enumerate(zip(cs.frames, cs.ids))}
        return cs.subset(torch.tensor([key[(int(f), int(i))] for f, i in zip(ref.frames, ref.ids)], dtype=torch.long))

    results: dict[str, Any] = {
        "method": method,
        "recipe": recipe.to_dict(),
        "protocol": {"gallery_fraction": gallery_fraction, "gap_frames": gap_frames, "gallery_per_id": 5,
                     "similarity": "cosine", "train_crops": len(train_clean), "train_identities": len(train_clean.identities()),
                     "test_crops": len(test_clean)},
        "clean_trained": {
            "clean_query": evaluate_reid(clean_model, g_clean, q_clean),
            "obfuscated_query": evaluate_reid(clean_model, g_clean, aligned(test_obf, q_clean)),
        },
    }
    train_obf = extract_crops(train_items, quantised, recipe.crop)
    adaptive_model, hist = train_reid(train_obf, recipe, progress, desc=f"re-ID attacker [{method}]", device=device)
    results["adaptive"] = {"obfuscated": evaluate_reid(adaptive_model, aligned(test_obf, g_clean), aligned(test_obf, q_clean)),
                           "final_train_acc": hist[-1]["train_acc"]}
    if reconstructor is not None:
        test_rec = extract_crops(test_items, lambda x: reconstructor(quantised(x)), recipe.crop)
        results["clean_trained"]["reconstructed_query"] = evaluate_reid(clean_model, g_clean, aligned(test_rec, q_clean))
    return results, clean_model
