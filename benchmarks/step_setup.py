"""Shared setup of the step benchmarks: the two configurations, synthetic batches, the steps timed.

``CPU_SMALL`` runs anywhere in seconds; ``SEED`` is the design's headline configuration
(batch 32, dims 192, 10 layers, 6 heads, L = 1030, K = 1), timed on a GPU only. Only torch
and this package are imported, so the GPU machine (no cyvcf2/faiss/msprime) can run it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vcfbert_fast.loss import imputation_loss
from vcfbert_fast.model import BERTFoundationModel, BERTWithEmbeddingRAG, BERTWithRAG
from vcfbert_fast.vocab import ALLELE_0, MASK, VOCAB_SIZE


@dataclass(frozen=True)
class StepConfig:
    name: str
    batch: int
    dims: int
    layers: int
    heads: int
    length: int  # framed tokens per haplotype (sites + 2)
    k: int = 1
    dropout: float = 0.1


CPU_SMALL = StepConfig("cpu-small", batch=4, dims=32, layers=2, heads=2, length=66, k=1)
SEED = StepConfig("seed", batch=32, dims=192, layers=10, heads=6, length=1030, k=1)


def make_batch(cfg: StepConfig, device: torch.device, length: int | None = None) -> dict[str, torch.Tensor]:
    """A random window-grouped batch (one window, one length) with a 50% shared mask.

    ``rag_idx_h1/h2`` [B, K] stand for the retriever's answer: rows of ``ref_tokens``
    (a 2 * B-row reference view of the same window).
    """
    b, n = cfg.batch, (length or cfg.length)
    g = torch.Generator().manual_seed(int(torch.randint(2**31, ()).item()))  # from the test's printed seed
    alleles = torch.randint(0, 2, (2, b, n), generator=g)
    mask = torch.rand(n, generator=g) < 0.5
    mask[0] = mask[-1] = False  # SOS/EOS are never masked
    tokens = torch.where(mask, torch.full_like(alleles, MASK), alleles + ALLELE_0)
    batch = {
        "hap_1": tokens[0],
        "hap_2": tokens[1],
        "hap_1_label": torch.where(mask, alleles[0], -100),
        "hap_2_label": torch.where(mask, alleles[1], -100),
        "gt_label": torch.where(mask, 2 * alleles[0] + alleles[1], -100),
        "mask": mask.expand(b, n).clone(),
        "ref_tokens": torch.randint(0, 2, (2 * b, n), generator=g) + ALLELE_0,
        "rag_idx_h1": torch.randint(0, 2 * b, (b, cfg.k), generator=g),
        "rag_idx_h2": torch.randint(0, 2 * b, (b, cfg.k), generator=g),
    }
    for key in ("pos", "af", "af_p", "ref", "het", "hom"):
        batch[key] = torch.rand(b, n, generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def build_model(cfg: StepConfig, version: str, device: torch.device) -> BERTFoundationModel:
    cls = {"v18": BERTWithEmbeddingRAG, "v17": BERTWithRAG}[version]
    bert = cls(VOCAB_SIZE, dims=cfg.dims, n_layers=cfg.layers, attn_heads=cfg.heads, dropout=cfg.dropout)
    return BERTFoundationModel(bert).to(device)


def rag_inputs(model: BERTFoundationModel, batch: dict, version: str) -> dict[str, torch.Tensor]:
    """The retrieved references as the model takes them: live embeddings (V18) or tokens (V17)."""
    refs = batch["ref_tokens"]
    out = {}
    for hap in ("h1", "h2"):
        rows = batch[f"rag_idx_{hap}"]  # [B, K]
        b, k = rows.shape
        seg = refs[rows.reshape(-1)]  # [B*K, L]
        if version == "v17":
            out[f"rag_seg_{hap}"] = seg.view(b, k, -1)
        else:
            pos = batch["pos"].repeat_interleave(k, dim=0)
            af = batch["af"].repeat_interleave(k, dim=0)
            out[f"rag_emb_{hap}"] = model.bert.embedding(seg, pos, af).view(b, k, seg.shape[1], -1)
    return out


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def step_fns(model, opt, batch, version: str, device: torch.device, forward=None):
    """``(forward_loss, backward, optimizer_step)``: the three parts of one training step."""
    forward = forward or model.forward_logits
    state: dict[str, torch.Tensor] = {}

    def fwd():
        with autocast(device):
            x = dict(batch)
            x.update(rag_inputs(model, batch, version))
            loss, _ = imputation_loss(forward(x), batch)
        state["loss"] = loss
        return loss

    def bwd():
        state["loss"].backward()

    def opt_step():
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fwd, bwd, opt_step


def full_step(model, opt, batch, version: str, device: torch.device, forward=None) -> Callable[[], None]:
    fwd, bwd, opt_step = step_fns(model, opt, batch, version, device, forward)

    def step():
        fwd()
        bwd()
        opt_step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest_s(*fns: Callable[[], object], repeats: int = 9) -> list[float]:
    """Fastest call of each function (seconds), calls interleaved so a burst of load hits all of
    them: the same-process CPU speed ratios of the op benchmarks."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[j] = min(best[j], time.perf_counter() - t0)
    return best


def median_ms(fn: Callable[[], object], device: torch.device, reps: int = 10, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in ms (CUDA events on GPU), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class StockEncoder(nn.Module):
    """``nn.TransformerEncoder`` (pre-LN, GELU, same sizes) behind our encoder's call signature."""

    def __init__(self, cfg: StepConfig):
        super().__init__()
        d = cfg.dims
        layer = nn.TransformerEncoderLayer(
            d, cfg.heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, cfg.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if attention_mask is None else ~attention_mask.bool()
        return self.encoder(x, src_key_padding_mask=pad)


def build_plain_model(cfg: StepConfig, device: torch.device) -> BERTFoundationModel:
    """The plain-PyTorch equivalent: the same V18 model with its encoder swapped for stock PyTorch's.

    Embedding, fusion, heads and loss are identical (they are plain torch already), so the
    comparison isolates what this package does differently in the step.
    """
    model = build_model(cfg, "v18", torch.device("cpu"))
    model.bert.encoder = StockEncoder(cfg)
    return model.to(device)
