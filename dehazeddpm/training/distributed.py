"""Several processes under torchrun: the process group, DistributedDataParallel, barriers.

One process (no ``WORLD_SIZE``, or 1) needs none of it and every helper is a no-op there.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch

from ..utils import torchrun_env

__all__ = ["Dist", "RankStopped", "barrier", "on_termination", "setup_distributed", "wrap"]


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


# How long a rank waits for the others to meet (torch's own default is 30 minutes of silence).
RENDEZVOUS_TIMEOUT_ENV = "DEHAZEDDPM_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_TIMEOUT = 300.0


def _wait_for_rank0(addr: str, port: int, timeout: float, who: str) -> None:
    """Return once rank 0's rendezvous port accepts connections; a RuntimeError after ``timeout``
    seconds (before torch's own attempt, whose failure prints a C++ stack trace)."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(1.0, max(timeout, 0.1))):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{who}: no rank 0 answered at {addr}:{port} within {timeout:g} s; start all "
                                   "ranks with torchrun, or unset RANK and WORLD_SIZE to run one process") from None
            time.sleep(0.2)


def setup_distributed() -> Dist:
    """Init the process group when launched by torchrun with WORLD_SIZE > 1 (gloo on CPU,
    nccl on CUDA, one GPU per local rank). A rank says where it waits for the others, and gives up
    after ``DEHAZEDDPM_RENDEZVOUS_TIMEOUT`` seconds (default 300) with a RuntimeError saying so."""
    rank, world, local = torchrun_env()
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist
    if not dist.is_initialized():
        text = os.environ.get(RENDEZVOUS_TIMEOUT_ENV, "").strip()
        try:
            timeout = float(text) if text else DEFAULT_RENDEZVOUS_TIMEOUT
        except ValueError:
            raise ValueError(f"{RENDEZVOUS_TIMEOUT_ENV}={text!r} is not a number of seconds") from None
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not addr or not (port or "").isdigit():
            raise ValueError(f"RANK/WORLD_SIZE say rank {rank} of {world}, but MASTER_ADDR and MASTER_PORT are not "
                             "set: start all ranks with torchrun, or unset RANK and WORLD_SIZE to run one process")
        where = f"{addr}:{port}"
        if rank != 0:
            print(f"rank {rank} of {world}: waiting up to {timeout:g} s for rank 0 at {where}", file=sys.stderr)
            _wait_for_rank0(addr, int(port), timeout, f"rank {rank} of {world}")
        try:
            dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as exc:  # no rank 0, a wrong address, or missing variables
            raise RuntimeError(f"rank {rank} of {world} could not meet the other ranks at {where} within "
                               f"{timeout:g} s ({' '.join(str(exc).split())[:200]}); start all ranks with "
                               "torchrun, or unset RANK and WORLD_SIZE to run one process") from None
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, local, torch.device(f"cuda:{local}" if cuda else "cpu"))


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else itself.

    ``static_graph``: every step uses the same parameters, and some never: stage 1 keeps both a
    conv and a transposed conv in each airlight block because the released weights carry both,
    and uses one. DDP's default then fails on the second step ("parameters that were not used").
    """
    if d.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                                   static_graph=True)


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op for one process)."""
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


class RankStopped(RuntimeError):
    """This rank cannot go on because the run as a whole failed: another rank died, and torchrun
    is stopping the rest, or a collective lost its peer."""


@contextlib.contextmanager
def on_termination(d: Dist) -> Iterator[None]:
    """Within the block, SIGTERM (what torchrun sends the other ranks when one dies) raises
    :class:`RankStopped` instead of ending the process without a word. If the block fails, any
    further SIGTERM is ignored, so that the rank can say why before it exits (torchrun may signal
    more than once, and a dead peer's error can come first). One process: no change."""
    if d.world <= 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RankStopped("torchrun is stopping the run: another rank failed")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, before)
