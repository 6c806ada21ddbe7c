"""The module one training step runs: reference embeddings and ``forward_logits`` together, so
that DistributedDataParallel sees every parameter use (the live references go through the
model's embedding layer)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["StepModule"]


class StepModule(nn.Module):
    """``forward(batch, rows_h1, rows_h2)``: with retrieved rows ``[B, K]``, adds
    ``rag_emb_h1/h2`` (from ``references(window, rows, layer, pos, af)``) to the batch; with
    :class:`~vcfbert_fast.matching.SiteDonors` (the pbwt engine), the donors' ``rag_emb``,
    ``rag_feat`` and ``rag_allele`` (``matching.donor_inputs``); then runs
    the model's ``forward_logits`` (``torch.compile``-d when ``compile_model``)."""

    def __init__(self, model: nn.Module, references: Callable, compile_model: bool):
        super().__init__()
        self.model = model
        self.references = references
        self._fwd = torch.compile(model.forward_logits) if compile_model else model.forward_logits

    def forward(self, batch: dict, rows_h1=None, rows_h2=None):
        from ..matching import SiteDonors, donor_inputs

        if isinstance(rows_h1, SiteDonors):  # pbwt: per-site donors, their match lengths and alleles
            batch = dict(batch)
            batch.update(donor_inputs(rows_h1, rows_h2, self.model.bert.embedding, batch["pos"], batch["af"]))
        elif rows_h1 is not None:
            w = int(batch["window_idx"][0])
            emb = self.model.bert.embedding
            batch = dict(batch)
            batch["rag_emb_h1"] = self.references(w, rows_h1, emb, batch["pos"], batch["af"])
            batch["rag_emb_h2"] = self.references(w, rows_h2, emb, batch["pos"], batch["af"])
        return self._fwd(batch, hidden=False)  # the loss reads logits only
