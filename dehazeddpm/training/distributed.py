"""Several processes under torchrun: the process group, DistributedDataParallel, barriers.

One process (no ``WORLD_SIZE``, or 1) needs none of it and every helper is a no-op there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils import torchrun_env

__all__ = ["Dist", "barrier", "setup_distributed", "wrap"]


@dataclass
class Dist:
    """This process's place among the ranks, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Init the process group when launched by torchrun with WORLD_SIZE > 1 (gloo on CPU,
    nccl on CUDA, one GPU per local rank)."""
    rank, world, local = torchrun_env()
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, local, torch.device(f"cuda:{local}" if cuda else "cpu"))


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else itself."""
    if d.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op for one process)."""
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()
