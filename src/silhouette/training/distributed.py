"""torchrun / DistributedDataParallel helpers (one process per device; gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and runs validation."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); single process when absent."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (or spawn with the env set); no-op otherwise."""
    import torch.distributed as dist

    info = dist_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def shutdown() -> None:
    """Leave the process group if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Wrap `model` in DDP when distributed (obfuscator and deobfuscator are wrapped separately)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Send a picklable object from rank 0 to every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank, so all ranks hold the same model."""
    if not info.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
