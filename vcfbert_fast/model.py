"""The drop-in models: V18 "Embedding RAG" BERT, the V17 "token RAG" baseline, and the heads.

Readable in one sitting (nanoGPT-style). Data shapes: B samples, two haplotypes each, L tokens
(``[SOS, a_1..a_n, EOS]``), D model dims, K retrieved references. Both haplotypes go through one
encoder pass as a ``[2B, L, D]`` batch. Deliberate differences from the original: docs/MODEL.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .vocab import ALLELE_0, ALLELE_1, MASK, VOCAB_SIZE

__all__ = [
    "BERTFoundationModel",
    "BERTWithEmbeddingRAG",
    "BERTWithRAG",
    "CopyHead",
    "DonorAttention",
    "HaplotypeEmbedding",
    "ModelConfig",
    "OpenSites",
    "RAGFusion",
    "TransformerEncoder",
    "count_parameters",
    "lookup_references",
    "sinusoidal_table",
    "stored_floats",
]


@dataclass
class ModelConfig:
    """Model hyper-parameters. ``to_dict()`` holds plain types only (weights_only-safe checkpoints)."""

    vocab_size: int = VOCAB_SIZE
    dims: int = 512
    n_layers: int = 12
    attn_heads: int = 16
    dropout: float = 0.1
    ffn_mult: int = 4
    n_af_freqs: int = 32
    max_len: int = 1030  # length of the precomputed sinusoidal table; longer inputs compute their own
    k_pool: str = "attention"  # how the K references are pooled: "attention", "mean" or "max"
    copy_head: bool = True  # mix the donors' alleles into the prediction (needs rag_allele_*)
    n_match_features: int = 6  # per-donor features in rag_feat_* (matching.MATCH_FEATURES)
    prior_hidden: int = 16  # hidden width of the per-(donor, site) prior MLP on the match features
    # one prior MLP scored once and used by both the donor attention and the copy head (the prior
    # runs on every donor x site: sharing it halves the cost that dominates a small model's forward)
    shared_prior: bool = False
    # which tokens the encoder attends over: "all", or "informative": the typed sites, SOS/EOS and
    # the sites where the donors disagree; elsewhere (an untyped site whose K donors all carry one
    # allele, ~90 % of a window) the heads read the site's fused embedding (docs/MODEL.md)
    encode: str = "all"

    def __post_init__(self) -> None:
        if self.dims % self.attn_heads:
            raise ValueError(f"dims ({self.dims}) must be divisible by attn_heads ({self.attn_heads})")
        if self.dims % 2:
            raise ValueError(f"dims ({self.dims}) must be even (sinusoidal positions pair sin/cos)")
        if self.k_pool not in ("attention", "mean", "max"):
            raise ValueError(f"k_pool must be 'attention', 'mean' or 'max', not {self.k_pool!r}")
        if self.encode not in ("all", "informative"):
            raise ValueError(f"encode must be 'all' or 'informative', not {self.encode!r}")
        if self.n_match_features < 1:
            raise ValueError(f"n_match_features must be >= 1, not {self.n_match_features}")
        if self.prior_hidden < 1:
            raise ValueError(f"prior_hidden must be >= 1, not {self.prior_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    def to_dict(self) -> dict:
        return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        d = dict(d)
        if "k_pool" in d and "copy_head" not in d:  # a checkpoint from before donors: as it was trained
            d["copy_head"] = False
        return cls(**d)


def sinusoidal_table(length: int, dims: int) -> torch.Tensor:
    """Classic Transformer positions ``[length, dims]`` float32: sin on even dims, cos on odd."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    inv = torch.exp(torch.arange(0, dims, 2, dtype=torch.float64) * (-math.log(10000.0) / dims))
    table = torch.zeros(length, dims, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table.float()


def _mlp(d_in: int, d_hidden: int, d_out: int, out_bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out, bias=out_bias))


# ----------------------------------------------------------------------------------------------
# Embedding (purely per-site: what makes retrieval an exact weighted Hamming search)
# ----------------------------------------------------------------------------------------------


class HaplotypeEmbedding(nn.Module):
    """token + sinusoidal position + AF Fourier features, then a per-site fusion with pos/af, LayerNorm.

    Output at site ``l`` depends only on ``tokens[:, l], pos[:, l], af[:, l]`` and ``l``: no
    attention or convolution across sites. So for a query and a reference that share the mask,
    ``||f(q) - f(r)||^2 = sum over mismatching unmasked sites of w_l`` (see ``site_weights``).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, nf = config.dims, config.n_af_freqs
        self.dims = d
        self.token = nn.Embedding(config.vocab_size, d)
        # Learnable AF frequencies, log-spaced 0.5..256 cycles per unit AF so that rare variants
        # (AF ~ 1e-3) are resolved as well as common ones.
        self.af_freqs = nn.Parameter(torch.logspace(-1.0, 8.0, nf, base=2.0))
        self.af_mlp = _mlp(2 * nf, d, d)
        self.site_mlp = _mlp(d + 2, d, d)  # per-site fusion of the embedding with pos and af
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.register_buffer("pe", sinusoidal_table(config.max_len, d), persistent=False)

    def positions(self, length: int, device: torch.device) -> torch.Tensor:
        if length <= self.pe.shape[0]:
            return self.pe[:length]
        return sinusoidal_table(length, self.dims).to(device)

    def af_features(self, af: torch.Tensor) -> torch.Tensor:
        """``[..., L] -> [..., L, 2F]`` sin/cos of 2*pi*f*af, computed in float32 (precision at high f)."""
        angle = (2.0 * math.pi) * af.float()[..., None] * self.af_freqs.float()
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
        """``tokens`` int64 ``[N, L]``, ``pos``/``af`` float ``[N, L]`` -> ``[N, L, D]``."""
        dtype = self.token.weight.dtype
        length = tokens.shape[-1]
        x = self.token(tokens)
        x = x + self.positions(length, tokens.device).to(dtype)
        x = x + self.af_mlp(self.af_features(af).to(dtype))
        site = torch.stack([pos, af], dim=-1).to(x.dtype)
        x = x + self.site_mlp(torch.cat([x, site], dim=-1))
        return self.drop(self.norm(x))

    @torch.no_grad()
    def site_weights(self, pos: torch.Tensor, af: torch.Tensor, dtype: torch.dtype = torch.float32):
        """Per-site weights ``w_l = ||f_l(ALLELE_1) - f_l(ALLELE_0)||^2`` for one framed window.

        ``pos``/``af`` are ``[L]`` (framed like the tokens; ``w`` at SOS/EOS/PAD is meaningless
        but harmless, since query and reference carry the same token there). Computed in eval
        mode (no dropout), autocast off, squared differences accumulated in float64; the
        Hamming retriever calls this at every refresh: O(L*D), not O(N*L*D).
        """
        if pos.dim() != 1 or pos.shape != af.shape:
            raise ValueError(
                f"site_weights wants pos and af of shape [L]; got {tuple(pos.shape)}, {tuple(af.shape)}"
            )
        device = self.token.weight.device
        length = pos.shape[0]
        tokens = torch.tensor([ALLELE_0, ALLELE_1], device=device)[:, None].expand(2, length)
        pos2 = pos.to(device).float()[None].expand(2, length)
        af2 = af.to(device).float()[None].expand(2, length)
        was_training = self.training
        self.eval()
        try:
            with torch.autocast(device_type=device.type, enabled=False):
                out = self.forward(tokens, pos2, af2)
        finally:
            self.train(was_training)
        diff = out[1].double() - out[0].double()
        return diff.pow(2).sum(-1).to(dtype)


# ----------------------------------------------------------------------------------------------
# RAG fusion (V18): pool the K references (attention over donors, or mean/max), AF-gated residual MLP
# ----------------------------------------------------------------------------------------------


class DonorAttention(nn.Module):
    """Per-site attention over the K donors: ``softmax_k(q(x_l) . r_kl / sqrt(D) + prior(f_kl))``.

    ``prior`` scores a donor by its match features (run lengths; ``rag_feat``), the dot product by
    its allele's embedding against the query's context. Linear maps commute with the weighted sum,
    so the keys are folded into the query (``q`` maps ``x`` into the references' space) and the
    values are one projection of the pooled references: the cost is one ``[N, K, L, D]`` product,
    not three projections of it. Returns ``(pooled [N, L, D], weights [N, K, L])``.
    """

    def __init__(self, dims: int, n_features: int, values: bool = True, prior_hidden: int | None = 16):
        super().__init__()
        self.q = nn.Linear(dims, dims)
        self.v = nn.Linear(dims, dims) if values else None  # the copy head needs only the weights
        # runs on every (donor, site): keep it small. No output bias: a constant added to every
        # donor's score cancels in the softmax over K, so it would never learn (its gradient is 0).
        # None: no MLP of its own; the caller passes a shared one's scores (ModelConfig.shared_prior)
        self.prior = None if prior_hidden is None else _mlp(n_features, prior_hidden, 1, out_bias=False)
        # A linear term on the features that starts as the donor vote: the last match feature is
        # (left + right - best) / 10, so weight 1 there gives softmax(0.1 * (left + right)), the
        # vote's weights (matching.VOTE_ALPHA). A Parameter, so the model's Linear init leaves it.
        vote = torch.zeros(n_features)
        vote[-1] = 1.0
        self.vote_weight = nn.Parameter(vote)
        self.scale = 1.0 / math.sqrt(dims)

    def prior_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """The prior MLP's score of each donor at each site, ``[N, K, L, F] -> [N, K, L]``."""
        return self.prior(feats.to(self.prior[0].weight.dtype)).squeeze(-1)

    def weights(self, x: torch.Tensor, refs: torch.Tensor, feats: torch.Tensor | None, prior: torch.Tensor | None = None):
        """``[N, K, L]`` softmax over donors of references ``[N, K, L, D]`` (the dense path; factored
        references take ``open_weights``). ``prior``: precomputed ``prior_scores(feats)`` (a shared
        prior's), else this module's own."""
        q = self.q(x)
        # elementwise, not einsum: einsum would permute [N, K, L, D] into a bmm layout (copies)
        score = (refs * q.to(refs.dtype).unsqueeze(1)).sum(-1).float() * self.scale
        return torch.softmax(self._add_prior(score, feats, prior), dim=1)

    def _add_prior(self, score: torch.Tensor, feats: torch.Tensor | None, prior: torch.Tensor | None):
        if feats is None:
            return score
        if prior is None:
            prior = self.prior_scores(feats)
        return score + (prior + feats.to(prior.dtype) @ self.vote_weight.to(prior.dtype)).float()

    def forward(self, x, refs: torch.Tensor, feats=None, prior=None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(x, refs, feats, prior)
        pooled = (w.unsqueeze(-1).to(refs.dtype) * refs).sum(1)
        return self.v(pooled.to(x.dtype)), w

    def open_weights(self, x: torch.Tensor, table: torch.Tensor, open_: OpenSites, feats=None, prior=None):
        """``[P, K]`` softmax over the donors of factored references (``table [L, V, D]``, donor
        tokens in ``open_``) at the open pairs only; ``feats``/``prior`` are theirs, ``[P, K, F]``/``[P, K]``.
        Scored by token (``V`` = 7 embeddings per site, not ``K`` = 32)."""
        return self.open_weights_of(x[open_.n, open_.l], table, open_, feats, prior)

    def open_weights_of(self, rows: torch.Tensor, table: torch.Tensor, open_: OpenSites, feats=None, prior=None):
        """``open_weights`` given the queries' rows at the open pairs, ``[P, D]``."""
        q = self.q(rows)  # [P, D]
        by_token = torch.einsum("pd,pvd->pv", q.float(), table[open_.l].float())
        score = by_token.gather(1, open_.tok) * self.scale
        return torch.softmax(self._add_prior(score, feats, prior), dim=1)

    def open_forward(self, x, table: torch.Tensor, open_: OpenSites, feats=None, prior=None) -> torch.Tensor:
        """Pooled factored references ``[N, L, D]`` (values applied): the first donor's embedding
        where all donors agree, the attention's mix at the open pairs."""
        length = open_.first.shape[1]
        pooled = table.float()[torch.arange(length, device=table.device)[None], open_.first]  # [N, L, D]
        if open_.size:
            mixed = self.open_mix(x[open_.n, open_.l], table, open_, feats, prior)
            pooled[open_.n[: open_.size], open_.l[: open_.size]] = mixed[: open_.size].to(pooled.dtype)
        return self.v(pooled.to(x.dtype))

    def open_mix(self, rows: torch.Tensor, table: torch.Tensor, open_: OpenSites, feats=None, prior=None):
        """The attention's mix of the donors' embeddings at the open pairs, ``[P, D]`` float32 (values
        not applied), given the queries' rows there ``[P, D]``."""
        tab = table.float()
        w = self.open_weights_of(rows, table, open_, feats, prior)
        per_token = torch.zeros(w.shape[0], tab.shape[1], dtype=w.dtype, device=w.device)
        per_token.scatter_add_(1, open_.tok, w)
        return torch.einsum("pv,pvd->pd", per_token, tab[open_.l])


def _bucket(p: int) -> int:
    """``p`` rounded up to one of 8 sizes per power of two (at most 12.5 % more), at least 64."""
    if p <= 64:
        return 64
    step = 1 << (p.bit_length() - 4)
    return -(-p // step) * step


class OpenSites:
    """Where a batch's donors disagree: the ``(row, site)`` pairs whose ``K`` donors do not all carry
    one token (and one allele), with the donors' tokens ``[P, K]`` there, and every row's first donor.

    A softmax over donors that all carry the same token mixes one embedding (and one allele) whatever
    its weights, so the factored path scores donors only at these pairs: with PBWT donors about 3 %
    of them at imputation (all 32 agree at the rest). Exact up to rounding; the materialised
    ``rag_emb`` path is its reference (tests/test_matching.py). The first ``size`` of the ``P``
    pairs are real; the rest pad ``P`` to a bucketed count, and their results are dropped."""

    def __init__(self, tok: torch.Tensor, alleles: torch.Tensor | None = None, same: torch.Tensor | None = None):
        """``same [N, L]``: where the donors agree, when the caller found it more cheaply (on uint8
        alleles: ``matching.donor_inputs``); else compared here."""
        if same is None:
            same = (tok == tok[:, :1]).all(1)  # [N, L]
            if alleles is not None:
                same &= (alleles == alleles[:, :1]).all(1)
        n, l = torch.nonzero(~same, as_tuple=True)  # row-major: first half's rows first
        # Padded to a bucketed count with inert pairs (last row, first site: sorted order holds)
        # whose results are dropped: a few tensor sizes per run instead of one per batch, so
        # glibc reuses freed blocks (a new size per batch grew the RSS by 0.3 GB over a 5 Mb run).
        self.size = n.numel()
        pad = _bucket(self.size) - self.size
        self.n = torch.cat([n, n.new_full((pad,), tok.shape[0] - 1)])
        self.l = torch.cat([l, l.new_full((pad,), min(1, tok.shape[2] - 1))])
        self.first = tok[:, 0]
        self.tok = tok[self.n, :, self.l]  # [P, K]
        self.alleles = None if alleles is None else alleles[self.n, :, self.l]
        self.first_allele = None if alleles is None else alleles[:, 0]
        # the donors' match features at the open pairs, [P, K, F], when the caller computed them
        # there only (matching.donor_inputs: rag_open); else the model takes them from rag_feat
        self.feats: torch.Tensor | None = None

    def to(self, device) -> OpenSites:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def split(self, b: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The pairs as ``(rows, sites)`` of the hap_1 half (rows ``< b``), then of the hap_2 half
        (its own row numbers): the pairs are sorted by row, so each half is one slice."""
        cut = int((self.n < b).sum())
        return (self.n[:cut], self.l[:cut]), (self.n[cut:] - b, self.l[cut:])

    def take(self, halves: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``[P, K, ...]`` of per-donor tensors ``[B, K, L, ...]`` given as (hap_1 rows, hap_2 rows)."""
        return torch.cat([t[n, :, l] for t, (n, l) in zip(halves, self.split(halves[0].shape[0]), strict=True)])


def lookup_references(refs) -> torch.Tensor:
    """Factored references ``(table [L, V, D], tokens [N, K, L])`` -> ``[N, K, L, D]``; a tensor as is."""
    if not isinstance(refs, tuple):
        return refs
    table, tok = refs
    sites = torch.arange(table.shape[0], device=tok.device)
    return table[sites[None, None, :], tok]


def rare_indicator(af: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """0 at MAF 0.5 rising log-like to 1 at MAF 0: ``log(0.5/(maf+eps)) / log(0.5/eps)``."""
    maf = torch.minimum(af, 1.0 - af).clamp(0.0, 0.5)
    return (torch.log(0.5 / (maf + eps)) / math.log(0.5 / eps)).clamp(0.0, 1.0)


class RAGFusion(nn.Module):
    """``fused = x + gate(af) * MLP([x, pooled])`` with ``gate = sigmoid(MLP([af, 1-af, rare]) + b*rare)``.

    The learnable ``rare_boost`` b starts at 1, so at initialisation rare sites (where the
    query's own context says least) take more of the references than common ones; training
    may change that. Purely per-site, like the embedding.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dims
        self.k_pool = config.k_pool
        self.attention = (
            DonorAttention(d, config.n_match_features, prior_hidden=config.prior_hidden)
            if config.k_pool == "attention"
            else None
        )
        self.update = _mlp(2 * d, d, d)
        self.gate = _mlp(3, 32, 1)
        self.rare_boost = nn.Parameter(torch.ones(()))
        self.drop = nn.Dropout(config.dropout)

    def pool(self, refs: torch.Tensor, dtype: torch.dtype, x=None, feats=None, prior=None) -> torch.Tensor:
        """``[N, K, L, D] -> [N, L, D]`` in ``dtype`` (a bf16 store is read as is, reduced in fp32).

        ``attention`` needs the queries' embeddings ``x [N, L, D]`` (and takes the optional match
        features ``feats [N, K, L, F]`` and their precomputed prior scores ``prior [N, K, L]``)."""
        refs = lookup_references(refs)  # factored references with attention take the model's open path
        if self.attention is not None:
            return self.attention(x, refs, feats, prior)[0].to(dtype)
        if self.k_pool == "max":
            return refs.amax(dim=1).to(dtype)
        if refs.dtype == dtype:
            return refs.mean(dim=1)
        return refs.mean(dim=1, dtype=torch.float32).to(dtype)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
        afc = af.float()
        rare = rare_indicator(afc)
        feats = torch.stack([afc, 1.0 - afc, rare], dim=-1).to(x.dtype)
        gate = torch.sigmoid(self.gate(feats) + self.rare_boost * rare[..., None].to(x.dtype))
        upd = self.update(torch.cat([x, pooled.to(x.dtype)], dim=-1))
        return x + gate * self.drop(upd)


# ----------------------------------------------------------------------------------------------
# Transformer encoder (pre-LN, SDPA, fused QKV)
# ----------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dims
        self.n_heads = config.attn_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(n, length, d)))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dims
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_mult * d),
            nn.GELU(),
            nn.Linear(config.ffn_mult * d, d),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.ffn(self.ln2(x))


class TransformerEncoder(nn.Module):
    """Pre-LN blocks then a final LayerNorm. ``attention_mask`` [N, L] bool, True = real token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.dims)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Only build an SDPA mask when asked: window-grouped batches need none, and without one
        # the flash/cuDNN kernels stay available.
        attn_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.norm(x)

    def forward_kept(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The blocks over each row's tokens ``keep [N, L]`` only (``forward_flat``); the other
        tokens skip the blocks and take the final norm of ``x``. Attention cost falls with the
        square of the kept share (~10 % of an imputation window)."""
        rows, sites = torch.nonzero(keep, as_tuple=True)
        slots = keep.cumsum(1)[rows, sites] - 1
        return self.norm(x).index_put((rows, sites), self.forward_flat(x[rows, sites], rows, slots, keep.sum(1)))

    def forward_flat(self, y: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, counts: torch.Tensor):
        """Encoder outputs ``[T, D]`` of tokens given flat, ``y [T, D]``, token ``t`` at place
        ``slots[t]`` of row ``rows[t]`` (``counts [N]`` per row): padded per row to the batch's most
        (a multiple of 8: few shapes) for the attention, with the padding's keys masked."""
        width = -(-int(counts.max()) // 8) * 8
        padded = y.new_zeros(counts.shape[0], width, y.shape[-1])
        padded[rows, slots] = y
        valid = torch.arange(width, device=y.device)[None] < counts[:, None]
        for block in self.blocks:
            padded = block(padded, valid[:, None, None, :])
        return self.norm(padded[rows, slots])


def _init_weights(module: nn.Module, n_layers: int) -> None:
    """nanoGPT-style: N(0, 0.02) linears, zero biases, residual projections scaled by 1/sqrt(2*layers).

    The token embedding keeps PyTorch's N(0, 1) so it is not drowned by the unit-amplitude
    sinusoidal positions before the LayerNorm.
    """
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            std = 0.02
            if name.endswith(("attn.proj", "ffn.2")):
                std = 0.02 / math.sqrt(2 * n_layers)
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# The drop-in BERTs
# ----------------------------------------------------------------------------------------------


class _HaplotypeBERT(nn.Module):
    """Shared body: embedding, RAG fusion, encoder; both haplotypes in one ``[2B, L, D]`` pass."""

    def __init__(
        self,
        vocab_size: int,
        dims: int = 512,
        n_layers: int = 12,
        attn_heads: int = 16,
        dropout: float = 0.1,
        *,
        config: ModelConfig | dict | None = None,
        **extra,
    ):
        super().__init__()
        if config is None:
            config = ModelConfig(vocab_size, dims, n_layers, attn_heads, dropout, **extra)
        else:  # a given config wins over the positional defaults; vocab must still agree
            if isinstance(config, dict):
                config = ModelConfig.from_dict(config)
            if extra:
                raise ValueError(f"pass either config= or extra keywords, not both: {sorted(extra)}")
            if vocab_size != config.vocab_size:
                raise ValueError(f"vocab_size {vocab_size} != config.vocab_size {config.vocab_size}")
        self.config = config
        self.embedding = HaplotypeEmbedding(config)
        self.fusion = RAGFusion(config)
        self.encoder = TransformerEncoder(config)
        _init_weights(self, config.n_layers)

    @classmethod
    def from_config(cls, config: ModelConfig | dict):
        config = ModelConfig.from_dict(config) if isinstance(config, dict) else config
        return cls(config.vocab_size, config=config)

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.token.weight.dtype

    def _pooled_references(self, x: dict, pos, af, mask, emb: torch.Tensor, scratch: dict) -> torch.Tensor | None:
        raise NotImplementedError

    def forward_cat(self, x: dict, scratch: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h [2B, L, D], emb [2B, L, D])``: rows ``:B`` are hap_1, ``B:`` hap_2 (no split copies).

        ``scratch``: a dict that receives what the heads may reuse (the open pairs of factored
        references, a shared prior's scores)."""
        tokens = torch.cat([x["hap_1"], x["hap_2"]], dim=0)
        pos = torch.cat([x["pos"], x["pos"]], dim=0)
        af = torch.cat([x["af"], x["af"]], dim=0)
        mask = x.get("attention_mask")
        if mask is not None:
            mask = torch.cat([mask, mask], dim=0).bool()
        table = x.get("rag_table")
        if table is not None and not self.training:
            # the per-site layer's table of this window (matching.site_table) already holds every
            # token's embedding at every site: look the queries up instead of running the layer on
            # [2B, L] rows (in training the layer runs, so each token draws its own dropout)
            emb = table[torch.arange(tokens.shape[1], device=tokens.device)[None], tokens].to(self.dtype)
        else:
            emb = self.embedding(tokens, pos, af)
        pooled = self._pooled_references(x, pos, af, mask, emb, {} if scratch is None else scratch)
        h = emb if pooled is None else self.fusion(emb, pooled, af)
        if self.config.encode == "all":
            return self.encoder(h, mask), emb
        keep = _kept(tokens, mask, _donors_disagree(x, {} if scratch is None else scratch))
        return self.encoder.forward_kept(h, keep), emb

    def forward(self, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(h1, h2, h1_ori, h2_ori)``: encoder outputs, then (pre-fusion) embeddings."""
        h, emb = self.forward_cat(x)
        h1, h2 = h.chunk(2, dim=0)
        e1, e2 = emb.chunk(2, dim=0)
        return h1, h2, e1, e2


def _rag_pair(x: dict, k1: str, k2: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    has1, has2 = x.get(k1) is not None, x.get(k2) is not None
    if has1 != has2:
        raise ValueError(f"give both {k1} and {k2} or neither")
    return (x[k1], x[k2]) if has1 else None


def _kept(tokens: torch.Tensor, mask: torch.Tensor | None, disagree: torch.Tensor | None) -> torch.Tensor:
    """The tokens an informative encoder attends over, ``[2B, L]`` bool: the typed sites and
    SOS/EOS (not MASK), and the pairs where the donors disagree; never padding."""
    keep = tokens != MASK
    if disagree is not None:
        keep |= disagree
    return keep if mask is None else keep & mask


def _open_mask(open_: OpenSites) -> torch.Tensor:
    """``[N, L]`` bool: True at the real open pairs."""
    out = torch.zeros(open_.first.shape, dtype=torch.bool, device=open_.first.device)
    out[open_.n[: open_.size], open_.l[: open_.size]] = True
    return out


def _donors_disagree(x: dict, scratch: dict) -> torch.Tensor | None:
    """``[2B, L]`` bool: the (haplotype, site) pairs whose donors do not all carry one token, from
    whichever form the donors came in (the open pairs the body found, tokens, alleles, embeddings);
    None without donors."""
    open_ = scratch.get("open", x.get("rag_open"))
    if open_ is not None:
        return _open_mask(open_)
    for keys in (("rag_tok_h1", "rag_tok_h2"), ("rag_allele_h1", "rag_allele_h2"), ("rag_seg_h1", "rag_seg_h2")):
        pair = _rag_pair(x, *keys)
        if pair is not None:
            t = torch.cat(pair, dim=0)  # [2B, K, L]
            return ~(t == t[:, :1]).all(1)
    pair = _rag_pair(x, "rag_emb_h1", "rag_emb_h2")
    if pair is None:
        return None
    return torch.cat([~(r == r[:, :1]).all(-1).all(1) for r in pair], dim=0)


def _donor_refs(x: dict):
    """``(refs_h1, refs_h2)``: ``rag_emb_h1/h2 [B, K, L, D]``, or their factored form ``(rag_table
    [L, V, D], rag_tok_h1/h2 [B, K, L])`` (the per-site table and the donors' tokens), or None."""
    pair = _rag_pair(x, "rag_emb_h1", "rag_emb_h2")
    if pair is not None or x.get("rag_table") is None:
        return pair
    toks = _rag_pair(x, "rag_tok_h1", "rag_tok_h2")
    if toks is None:
        raise ValueError("rag_table needs rag_tok_h1 and rag_tok_h2 (the donors' tokens)")
    return (x["rag_table"], toks[0]), (x["rag_table"], toks[1])


class BERTWithEmbeddingRAG(_HaplotypeBERT):
    """V18: reference *embeddings* ``rag_emb_h1/h2 [B, K, L, D]`` pooled over K and fused at the input.

    The same references may come factored, as ``rag_table [L, V, D]`` (the per-site embedding of
    every token, ``matching.site_table`` of this model's embedding at the batch's window: at eval
    the queries' embeddings are looked up from it too) with the donors' tokens ``rag_tok_h1/h2
    [B, K, L]``: ``rag_emb = rag_table[l, tok]``
    without the ``[B, K, L, D]`` tensor (the CPU path of ``matching.donor_inputs``).

    One encoder pass for the queries; the references cost a gather and a mean, not an encoder
    pass. No ``rag_emb_*`` keys -> plain BERT (fusion skipped).
    """

    def _pooled_references(self, x, pos, af, mask, emb, scratch):
        pair = _donor_refs(x)
        if pair is None:
            return None
        feats = _rag_pair(x, "rag_feat_h1", "rag_feat_h2") or (None, None)
        attention = self.fusion.attention
        if attention is not None and isinstance(pair[0], tuple):
            return self._pooled_open(x, emb, pair, feats, scratch)
        priors = (None, None)
        if self.config.shared_prior and attention is not None and feats[0] is not None:
            priors = tuple(attention.prior_scores(f) for f in feats)
            scratch["prior"] = torch.cat(priors, dim=0)
        e = emb.chunk(2, dim=0)
        # pool each haplotype's refs separately, then concat: avoids copying the [2B, K, L, D] tensor
        return torch.cat(
            [self.fusion.pool(r, self.dtype, e[i], feats[i], priors[i]) for i, r in enumerate(pair)], dim=0
        )

    def _pooled_open(self, x, emb, pair, feats, scratch):
        """Factored references: donor attention at the pairs where the donors disagree (``OpenSites``),
        which ``scratch`` hands on to the copy head with their features and shared prior scores."""
        open_, f, prior = self.open_pairs(x)
        scratch.update(open=open_, open_feats=f, prior=prior)
        return self.fusion.attention.open_forward(emb, pair[0][0], open_, f, prior).to(self.dtype)

    def open_pairs(self, x: dict) -> tuple[OpenSites, torch.Tensor | None, torch.Tensor | None]:
        """``(open pairs, their match features [P, K, F], a shared prior's scores [P, K])`` of
        factored references: ``rag_open`` when the caller built it, else found here."""
        open_ = x.get("rag_open")
        if open_ is not None:  # built with the donors, their features at the open pairs only
            f = open_.feats
        else:
            toks = _rag_pair(x, "rag_tok_h1", "rag_tok_h2")
            alleles = _rag_pair(x, "rag_allele_h1", "rag_allele_h2")
            open_ = OpenSites(torch.cat(toks), None if alleles is None else torch.cat(alleles))
            feats = _rag_pair(x, "rag_feat_h1", "rag_feat_h2")
            f = None if feats is None else open_.take(feats)
        attention = self.fusion.attention
        prior = attention.prior_scores(f) if self.config.shared_prior and f is not None else None
        return open_, f, prior


class BERTWithRAG(_HaplotypeBERT):
    """V17 baseline: reference *token* sequences ``rag_seg_h1/h2 [B, K, L]`` run through the
    embedding and the full encoder (K extra encoder passes per haplotype: V17's cost), are
    pooled over K, fused into the query embedding by the same gated MLP, then the query is encoded.
    """

    def _pooled_references(self, x, pos, af, mask, emb, scratch):
        pair = _rag_pair(x, "rag_seg_h1", "rag_seg_h2")
        if pair is None:
            return None
        segs = torch.cat(pair, dim=0)  # [2B, K, L]
        n, k, length = segs.shape
        ref_mask = None if mask is None else mask.repeat_interleave(k, dim=0)
        ref = self.embedding(
            segs.reshape(n * k, length), pos.repeat_interleave(k, dim=0), af.repeat_interleave(k, dim=0)
        )
        ref = self.encoder(ref, ref_mask).view(n, k, length, -1)
        return self.fusion.pool(ref, ref.dtype, emb)


# ----------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------


class CopyHead(nn.Module):
    """A pointer head: ``p = g * sum_k w_k a_k + (1 - g) * p_model`` at each site.

    ``a_k`` are the donors' alleles (``rag_allele_h1/h2 [B, K, L]``), ``w`` a softmax over the K
    donors of their match features (``rag_feat``) plus the encoder output's view of each donor's
    allele embedding (``rag_emb``), ``g`` a gate from the encoder output and the site's AF. HMM
    imputers copy from their donors; this lets the model do the same where the donors agree and
    fall back on its own prediction where they do not. Returns 2-class logits ``log [1 - p, p]``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dims
        # with a shared prior the copy head scores donors with the fusion's prior MLP (forward's ``prior``)
        hidden = None if config.shared_prior and config.k_pool == "attention" else config.prior_hidden
        self.attention = DonorAttention(d, config.n_match_features, values=False, prior_hidden=hidden)
        self.gate = _mlp(d + 2, 32, 1)
        # Start as the donor vote: no content score, the vote's weights, and a gate near 1 (0.88),
        # so training refines the vote instead of first having to find it.
        nn.init.zeros_(self.attention.q.weight)
        nn.init.zeros_(self.attention.q.bias)
        nn.init.constant_(self.gate[2].bias, 2.0)
        self.eps = 1e-5

    def forward(self, x: dict, h: torch.Tensor, feat: torch.Tensor, hap_logits: torch.Tensor, scratch: dict) -> torch.Tensor:
        """``scratch``: what the body left (``forward_cat``): the open pairs of factored references,
        or a shared prior's scores of the dense ones."""
        p_copy = self._copy_open(h, x["rag_table"], scratch) if "open" in scratch else self._copy_dense(x, h, scratch)
        return self.mix(feat, hap_logits, p_copy)

    def mix(self, feat: torch.Tensor, hap_logits: torch.Tensor, p_copy: torch.Tensor) -> torch.Tensor:
        """2-class logits of ``g * p_copy + (1 - g) * p_model``, the gate ``g`` from ``feat``."""
        g = torch.sigmoid(self.gate(feat).float().squeeze(-1))
        p_model = torch.softmax(hap_logits.float(), dim=-1)[..., 1]
        p = (g * p_copy + (1.0 - g) * p_model).clamp(self.eps, 1.0 - self.eps)
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=-1)  # float32: log-probs near 0/1

    def _copy_dense(self, x: dict, h: torch.Tensor, scratch: dict) -> torch.Tensor:
        r1, r2 = _donor_refs(x)
        refs = torch.cat([lookup_references(r1), lookup_references(r2)], dim=0)
        alleles = torch.cat([x["rag_allele_h1"], x["rag_allele_h2"]], dim=0).float()
        f = _rag_pair(x, "rag_feat_h1", "rag_feat_h2")
        feats = None if f is None else torch.cat(f, dim=0)
        prior = scratch.get("prior")
        if feats is not None and prior is None and self.attention.prior is None:
            raise ValueError("this copy head shares the fusion's prior: pass scratch['prior'] (its scores)")
        w = self.attention.weights(h, refs, feats, prior)  # [2B, K, L]
        return (w * alleles).sum(1)

    def _copy_open(self, h: torch.Tensor, table: torch.Tensor, scratch: dict) -> torch.Tensor:
        """The donors' allele where they all agree; the attention's mix at the open pairs."""
        open_ = scratch["open"]
        p_copy = open_.first_allele.float()
        if open_.size:
            w = self.attention.open_weights(h, table, open_, scratch["open_feats"], scratch["prior"])
            mixed = (w * open_.alleles.float()).sum(1)
            p_copy[open_.n[: open_.size], open_.l[: open_.size]] = mixed[: open_.size].to(p_copy.dtype)
        return p_copy


class _SettledByTable:
    """``encode="informative"`` with factored donors, computed without ``[2B, L]`` work.

    A settled pair (an untyped site whose donors all carry one token ``t``: the encoder skips it)
    has a fused embedding, and so an encoder output, that depends on ``(site, t)`` only, and head
    outputs that depend on ``(site, t, af_p)`` only. So the body and heads run on the kept tokens
    (flat, ~10 % of a window; padded per row for the attention only) and on a per-site table of the settled values (``L`` sites x
    the few tokens donors carry x the batch's distinct ``af_p`` rows), and the logits are gathered
    from the two. The same arithmetic as the path through ``forward_cat`` and the dense heads
    (``forward_kept``), which is its reference (tests/test_model.py)."""

    def __init__(self, model: BERTFoundationModel, x: dict, tokens, open_, feats, prior, tok_set, keep):
        self.model, self.x = model, x
        self.tokens, self.open_, self.feats, self.prior, self.tok_set, self.keep = tokens, open_, feats, prior, tok_set, keep

    def logits(self, af_p: torch.Tensor, hidden: bool):
        m, x, open_ = self.model, self.x, self.open_
        bert, copy = m.bert, m.copy
        attention, enc = bert.fusion.attention, bert.encoder
        table, tokens, keep = x["rag_table"], self.tokens, self.keep
        dtype = bert.dtype
        length = tokens.shape[1]
        af_row = x["af"][0]
        sites = torch.arange(length, device=tokens.device)
        # the kept tokens flat, row by row in site order: only the encoder's attention pads them
        # per row (~half the padded slots are padding), so embedding, fusion and heads run flat
        rk, lk = torch.nonzero(keep, as_tuple=True)  # [T]
        counts = keep.sum(1)
        slot = keep.cumsum(1) - 1  # slot[n, l]: the place of kept token (n, l) in its row
        start = counts.cumsum(0) - counts  # the flat index of each row's first kept token
        fo = start[open_.n] + slot[open_.n, open_.l]  # the open pairs' flat indices (padding pairs: any)
        real = slice(0, open_.size)
        emb_k = table[lk, tokens[rk, lk]].to(dtype)  # [T, D]
        pooled = table.float()[lk, open_.first[rk, lk]]
        if open_.size:
            mixed = attention.open_mix(emb_k[fo], table, open_, self.feats, self.prior)
            pooled[fo[real]] = mixed[real].to(pooled.dtype)
        af_k = af_row[lk]
        y = bert.fusion(emb_k, attention.v(pooled.to(dtype)).to(dtype), af_k)
        h_k = enc.forward_flat(y, rk, slot[rk, lk], counts)  # [T, D]
        feat_k = torch.cat([h_k, torch.stack([af_k, af_p[rk, lk]], dim=-1).to(h_k.dtype)], dim=-1)
        p_copy = open_.first_allele[rk, lk].float()
        if open_.size:
            w = copy.attention.open_weights_of(h_k[fo], table, open_, self.feats, self.prior)
            p_copy[fo[real]] = (w * open_.alleles.float()).sum(1)[real].to(p_copy.dtype)
        logits_k = copy.mix(feat_k, m.hap_head(feat_k), p_copy)  # [T, 2]
        # the settled table: site x donor token (query MASK), then x distinct af_p rows
        tset = self.tok_set
        t_n = tset.numel()
        emb_s = table[:, MASK].to(dtype)[:, None].expand(length, t_n, -1)
        h_s = enc.norm(bert.fusion(emb_s, attention.v(table[:, tset].to(dtype)).to(dtype), af_row[:, None].expand(length, t_n)))
        afp_u, inv = torch.unique(af_p, dim=0, return_inverse=True)  # [U, L]: one per population
        u = afp_u.shape[0]
        site_f = torch.stack([af_row[None, :, None].expand(u, length, t_n), afp_u[:, :, None].expand(u, length, t_n)], -1)
        feat_s = torch.cat([h_s[None].expand(u, -1, -1, -1), site_f.to(h_s.dtype)], dim=-1)
        p_copy_s = (tset - ALLELE_0).float()[None, None].expand(u, length, t_n)
        logits_s = copy.mix(feat_s, m.hap_head(feat_s), p_copy_s)  # [U, L, T, 2]
        where = torch.zeros(VOCAB_SIZE, dtype=torch.int64, device=tset.device)
        where[tset] = torch.arange(t_n, device=tset.device)
        tpos = where[open_.first]  # [N, L]
        out = logits_s[inv[:, None], sites[None], tpos]  # [N, L, 2]
        out = out.index_put((rk, lk), logits_k.to(out.dtype))
        if not hidden:
            return out, None, None
        emb = table[sites[None], tokens].to(dtype)
        h = h_s[sites[None], tpos].index_put((rk, lk), h_k.to(h_s.dtype))
        return out, h, emb


def _settled_by_table(model: BERTFoundationModel, x: dict) -> _SettledByTable | None:
    """The table path of an informative model's batch where it applies (factored donors with
    attention pooling and the copy head, window-grouped rows, no padding, no dropout draws, donors
    carrying allele tokens at the settled pairs); None: take the path through ``forward_cat``."""
    bert, cfg = model.bert, model.config
    if (
        cfg.encode != "informative"
        or model.copy is None
        or not isinstance(bert, BERTWithEmbeddingRAG)
        or bert.fusion.attention is None
        or x.get("rag_table") is None
        or x.get("rag_allele_h1") is None
        or x.get("attention_mask") is not None
        or (bert.training and cfg.dropout > 0)
    ):
        return None
    tokens = torch.cat([x["hap_1"], x["hap_2"]], dim=0)
    open_, feats, prior = bert.open_pairs(x)
    keep = _kept(tokens, None, _open_mask(open_))
    tok_set = torch.unique(open_.first[~keep])
    if not bool(((tok_set == ALLELE_0) | (tok_set == ALLELE_1)).all()):
        return None
    if tok_set.numel() == 0:
        tok_set = torch.tensor([ALLELE_0], device=tokens.device)
    return _SettledByTable(model, x, tokens, open_, feats, prior, tok_set, keep)


class BERTFoundationModel(nn.Module):
    """Haplotype head (2 classes from ``[h, af, af_p]``) and genotype head (4 phased classes).

    The genotype logits are ``log p1(a) + log p2(b)`` (class ``2a + b``: the independent
    combination of the two haplotype predictions) plus an MLP correction from both haplotypes'
    log-probabilities and ref/het/hom. Heads produce *logits*; ``forward`` softmaxes once for
    drop-in callers, ``forward_logits`` is what training and the loss use.
    """

    def __init__(self, bert: _HaplotypeBERT):
        super().__init__()
        self.bert = bert
        d = bert.config.dims
        self.hap_head = _mlp(d + 2, d, 2)
        self.gt_head = _mlp(7, 32, 4)
        self.copy = CopyHead(bert.config) if bert.config.copy_head else None
        _init_weights(self.hap_head, bert.config.n_layers)
        _init_weights(self.gt_head, bert.config.n_layers)

    @property
    def config(self) -> ModelConfig:
        return self.bert.config

    def forward_logits(self, x: dict, hidden: bool = True) -> dict[str, torch.Tensor]:
        """Logits of both haplotypes and the genotype; with ``hidden`` also the encoder outputs and
        embeddings ``h1, h2, h1_ori, h2_ori`` (the drop-in ``forward`` returns them; the loss and
        ``impute`` need none, and without them the informative encoding builds no ``[2B, L, D]``)."""
        # ``af_p_h2``: the second haplotypes' own af_p, when the batch's two halves are not the same
        # samples (``impute`` packs the single haplotypes the donors leave open)
        af_p = torch.cat([x["af_p"], x.get("af_p_h2", x["af_p"])], dim=0)
        by_table = _settled_by_table(self, x)
        if by_table is not None:
            hap_logits, h, emb = by_table.logits(af_p, hidden)
        else:
            scratch: dict = {}
            h, emb = self.bert.forward_cat(x, scratch)
            af = torch.cat([x["af"], x["af"]], dim=0)
            feat = torch.cat([h, torch.stack([af, af_p], dim=-1).to(h.dtype)], dim=-1)
            hap_logits = self.hap_head(feat)  # [2B, L, 2]
            if self.copy is not None and x.get("rag_allele_h1") is not None:
                hap_logits = self.copy(x, h, feat, hap_logits, scratch)
        logp = torch.log_softmax(hap_logits.float(), dim=-1)
        lp1, lp2 = logp.chunk(2, dim=0)
        base = (lp1[..., :, None] + lp2[..., None, :]).flatten(-2)  # [B, L, 4], class 2a + b
        gt_feat = torch.cat([lp1, lp2, torch.stack([x["ref"], x["het"], x["hom"]], dim=-1).float()], dim=-1)
        gt_logits = base + self.gt_head(gt_feat.to(self.gt_head[0].weight.dtype)).float()
        hap1_logits, hap2_logits = hap_logits.chunk(2, dim=0)
        out = {"hap1_logits": hap1_logits, "hap2_logits": hap2_logits, "gt_logits": gt_logits}
        if hidden:
            (h1, h2), (e1, e2) = h.chunk(2, dim=0), emb.chunk(2, dim=0)
            out.update(h1=h1, h2=h2, h1_ori=e1, h2_ori=e2)
        return out

    def forward(self, x: dict) -> list[torch.Tensor]:
        """Drop-in: ``[hap1_probs, hap2_probs, gt_probs, h1_ori, h2_ori, h1, h2]`` (float32 probs)."""
        o = self.forward_logits(x)
        return [
            torch.softmax(o["hap1_logits"].float(), dim=-1),
            torch.softmax(o["hap2_logits"].float(), dim=-1),
            torch.softmax(o["gt_logits"].float(), dim=-1),
            o["h1_ori"],
            o["h2_ori"],
            o["h1"],
            o["h2"],
        ]


def stored_floats(config: ModelConfig) -> int:
    """Parameters plus buffers of ``BERTFoundationModel(BERTWithEmbeddingRAG(config))``, counted from
    the config without building anything (a bound checked before a checkpoint's model is built;
    building on the ``meta`` device cost ~1 s of start-up). tests/test_safety.py holds it to the
    built model's count."""
    d, f, ph = config.dims, config.n_match_features, config.prior_hidden

    def mlp(d_in: int, d_hidden: int, d_out: int, out_bias: bool = True) -> int:
        return d_in * d_hidden + d_hidden + d_hidden * d_out + (d_out if out_bias else 0)

    def donor_attention(values: bool, prior_hidden: int | None) -> int:
        n = d * d + d + (d * d + d if values else 0) + f  # q, v, vote_weight
        return n + (mlp(f, prior_hidden, 1, out_bias=False) if prior_hidden is not None else 0)

    embedding = config.vocab_size * d + config.n_af_freqs + mlp(2 * config.n_af_freqs, d, d) + mlp(d + 2, d, d) + 2 * d
    embedding += config.max_len * d  # the sinusoidal table (a buffer)
    attention = config.k_pool == "attention"
    fusion = (donor_attention(True, ph) if attention else 0) + mlp(2 * d, d, d) + mlp(3, 32, 1) + 1
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + mlp(d, config.ffn_mult * d, d)
    encoder = config.n_layers * block + 2 * d
    heads = mlp(d + 2, d, 2) + mlp(7, 32, 4)
    if config.copy_head:
        hidden = None if config.shared_prior and attention else ph
        heads += donor_attention(False, hidden) + mlp(d + 2, 32, 1)
    return embedding + fusion + encoder + heads


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Unique parameter counts: total, embedding, encoder, fusion, heads (anything outside the BERT).

    Accepts the BERT, the wrapper, or either behind ``torch.compile`` / DDP.
    """
    while hasattr(model, "_orig_mod") or hasattr(model, "module"):
        model = getattr(model, "_orig_mod", None) or model.module
    bert = model.bert if isinstance(model, BERTFoundationModel) else model

    def n(mod: nn.Module) -> int:
        return sum(p.numel() for p in {id(p): p for p in mod.parameters()}.values())

    total = n(model)
    return {
        "total": total,
        "embedding": n(bert.embedding),
        "encoder": n(bert.encoder),
        "fusion": n(bert.fusion),
        "heads": total - n(bert),
    }
