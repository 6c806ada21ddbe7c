"""Where this process stands among torchrun's ranks, and how the ranks agree.

Joining and leaving the process group, and the two collectives the trainer needs: the OR of a
flag (every rank stops together) and a sum of counters (validation metrics over all ranks).
Without ``RANK``/``WORLD_SIZE`` everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "any_rank", "barrier", "join_process_group", "leave_process_group", "sum_across_ranks"]


@dataclass
class DistContext:
    """This process's rank, the world size and whether we own the process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def join_process_group(device_pref: str) -> DistContext:
    """Join the torchrun process group when RANK/WORLD_SIZE say so (nccl on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local, True)


def leave_process_group(ctx: DistContext, synchronise: bool = True) -> None:
    """Destroy the process group if ``ctx`` created it (a group joined from outside stays).

    ``synchronise``: wait at a barrier first, so no rank tears its sockets down while another is
    still finishing (rank 0 writes the checkpoint): a gloo peer closing early aborts the other
    ("terminate called without an active exception", seen once in CI). Pass False on an error
    path, where the other ranks may never arrive.
    """
    if ctx.owns_group:
        if synchronise:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        ctx.owns_group = False


def barrier(ctx: DistContext) -> None:
    """Wait until every rank arrives (any backend: nccl or gloo); a no-op on one process."""
    if ctx.enabled:
        torch.distributed.barrier()


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """The OR of every rank's ``flag``, so that all ranks take the same branch (one all-reduce)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_across_ranks(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``t`` summed over the ranks, in place (returned for chaining); unchanged on one process."""
    if ctx.enabled:
        torch.distributed.all_reduce(t)
    return t
