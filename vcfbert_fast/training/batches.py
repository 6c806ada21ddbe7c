"""How batches reach the training step: the DataLoader over a window-grouped batch sampler,
skipping the batches a resumed epoch already saw, and the host -> device copy."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["SkipBatches", "batch_to_device", "make_loader"]


class SkipBatches(torch.utils.data.Sampler):
    """A batch sampler without its first ``skip`` batches (resume mid-epoch), at most ``limit`` in all."""

    def __init__(self, sampler, skip: int, limit: int | None = None):
        self.sampler, self.skip, self.limit = sampler, int(skip), limit

    def __len__(self) -> int:
        n = len(self.sampler)
        if self.limit is not None:
            n = min(n, self.limit)
        return max(0, n - self.skip)

    def __iter__(self) -> Iterator[list]:
        for i, b in enumerate(self.sampler):
            if self.limit is not None and i >= self.limit:
                return
            if i >= self.skip:
                yield b


def make_loader(
    sampler,
    dataset,
    *,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    skip: int = 0,
    limit: int | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader of collated batches; its own seeded generator, so it never touches the global RNG."""
    from ..dataset import embedding_rag_collate_fn

    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=SkipBatches(sampler, skip, limit),
        collate_fn=embedding_rag_collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def batch_to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to ``device``, except ``window_idx``: the step reads it as an int (retrieval,
    references), which on a device tensor would be a host synchronisation per read."""
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k != "window_idx" else v)
        for k, v in batch.items()
    }
