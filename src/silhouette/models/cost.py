"""Parameter and MAC counting (torch.utils.flop_counter; MACs = FLOPs / 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: tuple[int, int] = (200, 320), batch: int = 1, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass at `size` = (H, W)."""
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(batch, in_channels, *size, device=p.device if p is not None else "cpu")
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)
