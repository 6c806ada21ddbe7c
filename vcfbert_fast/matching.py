"""Donors that match: the ``pbwt`` retrieval engine, per-site donor sets and the donor vote.

HMM imputers copy each stretch of a target haplotype from the reference haplotypes that match
it longest there (DESIGN.md section 7). :class:`PbwtRetriever` does that with the
``pbwt_donors`` op (:mod:`vcfbert_fast.ops.pbwt`): over the panel's alleles at the typed markers
(the target's array sites at imputation; the epoch's unmasked sites in training) a query
haplotype gets, at one selection point every ``group`` typed markers, the ``k`` reference rows
whose exact match runs longest left + right from the point, across the whole chromosome.

Every site of a window then takes the donors of its segment (the group holding the site's
boundary: the number of typed markers left of it) and, with :func:`~vcfbert_fast.ops.match_runs`,
each donor's match run measured from the site itself, in markers and in base pairs. That is a
:class:`SiteDonors`: rows, alleles and run lengths ``[B, K, n]``. From it come

* ``tokens()``: the donors' framed allele tokens ``[B, K, n + 2]`` -> :func:`donor_embeddings`
  -> ``rag_emb [B, K, L, D]`` (the per-site embedding table through ``ops.embed_flatten``);
* ``features()``: the per-donor match features ``[B, K, L, F]`` the model weighs donors by;
* ``vote()``: the donors' alleles weighted by ``softmax(alpha * (left + right))``, no learning
  (``impute --model vote`` and the baseline the model must beat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .retrieval import Retriever
from .vocab import ALLELE_0, EOS, SOS, VOCAB_SIZE

__all__ = [
    "MATCH_FEATURES",
    "PbwtRetriever",
    "SiteDonors",
    "donor_embeddings",
    "donor_inputs",
    "framed_alleles",
    "site_table",
    "split_haplotypes",
]

# The per-donor features of SiteDonors.features(), in order (docs/RETRIEVAL.md).
MATCH_FEATURES = (
    "log1p(left markers)",
    "log1p(right markers)",
    "log1p(left kb)",
    "log1p(right kb)",
    "log1p(min(left, right) markers)",
    "(left + right - best at the site) / 10",
)
PRECOMPUTE_BLOCK = 256  # query haplotypes per pbwt_donors call when all donors are found up front
VOTE_ALPHA = 0.1  # vote weight softmax(alpha * (left + right)); measured in docs/RETRIEVAL.md


@dataclass
class _BoundaryRuns:
    """Match runs per boundary (every site between the same two typed markers shares its donors
    and its runs in markers): ``left``/``right`` int32 and the runs' outer marker positions
    ``lo``/``hi`` int64, ``[B, K, U]`` (a sentinel past the window for an empty run), with each
    site's boundary ``site_b`` and position ``site_pos`` ``[n]``. Expanded to sites on demand."""

    left: torch.Tensor
    right: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    site_b: torch.Tensor
    site_pos: torch.Tensor

    def select(self, idx) -> _BoundaryRuns:
        return _BoundaryRuns(self.left[idx], self.right[idx], self.lo[idx], self.hi[idx], self.site_b, self.site_pos)

    @staticmethod
    def cat(parts: list[_BoundaryRuns]) -> _BoundaryRuns:
        first = parts[0]
        if not all(torch.equal(p.site_b, first.site_b) and torch.equal(p.site_pos, first.site_pos) for p in parts):
            raise ValueError("SiteDonors.cat joins query batches of one window only")
        return _BoundaryRuns(
            *(torch.cat([getattr(p, name) for p in parts]) for name in ("left", "right", "lo", "hi")),
            first.site_b,
            first.site_pos,
        )

    def to_sites(self, t: torch.Tensor) -> torch.Tensor:
        """A per-boundary ``[B, K, U]`` tensor at every site, ``[B, K, n]``: a gather along the
        last dim (4x faster than advanced indexing there)."""
        b, k, _ = t.shape
        return torch.gather(t, 2, self.site_b[None, None].expand(b, k, self.site_b.numel()))

    def per_site(self, name: str) -> torch.Tensor:
        """``left``, ``right``, ``left_bp`` or ``right_bp`` at every site, ``[B, K, n]``."""
        if name in ("left", "right"):
            return self.to_sites(getattr(self, name))
        if name == "left_bp":
            return (self.site_pos - self.to_sites(self.lo)).clamp_min(0)
        return (self.to_sites(self.hi) - self.site_pos).clamp_min(0)

    def at(self, rows: torch.Tensor, sites: torch.Tensor) -> list[torch.Tensor]:
        """``[left, right, left_bp, right_bp]`` at query ``rows[p]``, site ``sites[p]``, ``[P, K]``."""
        bnd, pos = self.site_b[sites], self.site_pos[sites][:, None]
        lo, hi = self.lo[rows, :, bnd], self.hi[rows, :, bnd]
        return [self.left[rows, :, bnd], self.right[rows, :, bnd], (pos - lo).clamp_min(0), (hi - pos).clamp_min(0)]


_RUN_NAMES = ("left", "right", "left_bp", "right_bp")


class SiteDonors:
    """The ``K`` donors of ``B`` query haplotypes at the ``n`` sites of one window.

    ``rows`` int64 panel rows, ``alleles`` uint8, ``left``/``right`` int32 match runs in typed
    markers from the site's boundary, ``left_bp``/``right_bp`` int64 the span of those runs from
    the site's position (0 for an empty run); all ``[B, K, n]``. ``PbwtRetriever.site_donors``
    gives the runs per boundary (``runs``): the per-site tensors are built when first read, so a
    caller that reads runs at a few pairs (``features_at``: the model's open pairs) builds none.
    """

    def __init__(self, rows, alleles, left=None, right=None, left_bp=None, right_bp=None, *, runs=None):
        per_site = dict(zip(_RUN_NAMES, (left, right, left_bp, right_bp), strict=True))
        if runs is None and any(v is None for v in per_site.values()):
            raise ValueError("SiteDonors needs left, right, left_bp and right_bp, or runs")
        self.rows, self.alleles = rows, alleles
        self._per_site = per_site
        self._runs: _BoundaryRuns | None = runs

    def _run(self, name: str) -> torch.Tensor:
        t = self._per_site[name]
        if t is None:
            t = self._per_site[name] = self._runs.per_site(name)
        return t

    left = property(lambda self: self._run("left"))
    right = property(lambda self: self._run("right"))
    left_bp = property(lambda self: self._run("left_bp"))
    right_bp = property(lambda self: self._run("right_bp"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.rows.shape)

    def tokens(self) -> torch.Tensor:
        """Framed allele tokens int64 ``[B, K, n + 2]``: ``SOS, ALLELE_0 + allele..., EOS``."""
        return _framed(self.alleles, tokens=True)

    def features(self) -> torch.Tensor:
        """Match features float32 ``[B, K, n + 2, F]`` (``MATCH_FEATURES``; 0 at SOS/EOS)."""
        b, k, n = self.shape
        out = torch.empty(b, k, n + 2, len(MATCH_FEATURES), dtype=torch.float32)
        out[:, :, 0], out[:, :, -1] = 0.0, 0.0
        _match_features(self.left, self.right, self.left_bp, self.right_bp, out[:, :, 1:-1])
        return out

    def features_at(self, rows: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
        """``features()`` at query ``rows[p]``, site ``sites[p]`` (unframed) only: ``[P, K, F]``."""
        out = torch.empty(rows.numel(), self.shape[1], len(MATCH_FEATURES), dtype=torch.float32)
        if self._runs is not None and any(self._per_site[name] is None for name in _RUN_NAMES):
            at = self._runs.at(rows, sites)
        else:
            at = [self._run(name)[rows, :, sites] for name in _RUN_NAMES]
        _match_features(*at, out)
        return out

    def select(self, idx) -> SiteDonors:
        """The donors of queries ``idx`` (a slice, or indices into ``B``), in that order."""
        if self._runs is not None:
            return SiteDonors(self.rows[idx], self.alleles[idx], runs=self._runs.select(idx))
        return SiteDonors(self.rows[idx], self.alleles[idx], *(self._run(name)[idx] for name in _RUN_NAMES))

    @staticmethod
    def cat(parts: list[SiteDonors]) -> SiteDonors:
        """Several query batches of one window as one (queries concatenated in order)."""
        if len(parts) == 1:
            return parts[0]
        rows, alleles = torch.cat([d.rows for d in parts]), torch.cat([d.alleles for d in parts])
        if all(d._runs is not None for d in parts):
            return SiteDonors(rows, alleles, runs=_BoundaryRuns.cat([d._runs for d in parts]))
        return SiteDonors(rows, alleles, *(torch.cat([d._run(name) for d in parts]) for name in _RUN_NAMES))

    def vote(self, alpha: float = VOTE_ALPHA) -> torch.Tensor:
        """ALT probability ``[B, n]`` float32: donors' alleles weighted by ``softmax(alpha*(left+right))``."""
        w = torch.softmax(alpha * (self.left + self.right).double(), dim=1)
        return (w * self.alleles.double()).sum(1).float()


def _match_features(left, right, left_bp, right_bp, out: torch.Tensor) -> None:
    """``MATCH_FEATURES`` of runs ``[N, K, ...]`` (donors on dim 1) into ``out [N, K, ..., F]``, in place."""
    f = out.unbind(-1)  # each feature written in place: no stack, no second copy
    left, right = left.float(), right.float()
    torch.log1p(left, out=f[0])
    torch.log1p(right, out=f[1])
    torch.log1p(left_bp.float() / 1e3, out=f[2])
    torch.log1p(right_bp.float() / 1e3, out=f[3])
    torch.log1p(torch.minimum(left, right), out=f[4])
    tot = left + right
    torch.div(tot - tot.amax(dim=1, keepdim=True), 10.0, out=f[5])


def site_table(embedding_layer: torch.nn.Module, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
    """Per-site embedding of every token, ``[L, V, D]``: the layer run on ``V`` constant rows.

    Exact for a per-site layer (``HaplotypeEmbedding``): site ``l``'s output depends only on its own
    token, position and AF, so ``table[l, t]`` is what the layer gives token ``t`` at site ``l``.
    ``pos``/``af`` are one window's framed features ``[L]``; gradients flow into the layer.
    """
    device = pos.device
    length = pos.shape[-1]
    toks = torch.arange(VOCAB_SIZE, device=device)[:, None].expand(VOCAB_SIZE, length)
    out = embedding_layer(toks, pos[None].expand(VOCAB_SIZE, length), af[None].expand(VOCAB_SIZE, length))
    return out.transpose(0, 1)


def donor_embeddings(
    embedding_layer: torch.nn.Module, tokens: torch.Tensor, pos: torch.Tensor, af: torch.Tensor
) -> torch.Tensor:
    """``rag_emb [B, K, L, D]`` of the donors' framed tokens ``[B, K, L]`` at one window.

    One per-site table (``site_table``), then ``ops.embed_flatten(tokens, site_table=...)``: the
    fused Triton kernel on CUDA, its torch reference on the CPU. ``pos``/``af``: ``[L]`` or the
    batch's ``[B, L]`` (every row of a window-grouped batch is the same; row 0 is used).
    """
    from .ops import embed_flatten

    if pos.dim() == 2:
        pos, af = pos[0], af[0]
    table = site_table(embedding_layer, pos, af)
    b, k, length = tokens.shape
    out = embed_flatten(tokens.reshape(b * k, length).to(pos.device), site_table=table)
    return out.view(b, k, length, -1)


class PbwtRetriever(Retriever):
    """Per-segment donors by haplotype matching over the typed markers, across the chromosome.

    ``set_markers(typed_sites)`` builds the index over the reference rows at those panel sites
    (the "refresh": once per epoch in training, once per run at imputation);
    ``set_queries(alleles)`` gives the query haplotypes' calls at those markers (0/1, -1
    missing); ``site_donors(window_idx, queries, exclude)`` returns their :class:`SiteDonors`.
    ``group``: typed markers per selection point. ``seed``: the tie-break draw. Queries keep
    their id (their index in ``set_queries``) in the draw, so a rerun draws the same ties.
    """

    def __init__(
        self,
        panel,
        freqs,
        layout,
        reference_rows=None,
        k: int = 32,
        group: int = 4,
        seed: int = 0,
        **_unused: Any,
    ):
        super().__init__(panel, freqs, layout, reference_rows, k=k)
        if group < 1:
            raise ValueError(f"group must be at least 1 typed marker per selection point, not {group}")
        self.group = int(group)
        self.seed = int(seed)
        self.positions = np.asarray(panel.positions, dtype=np.int64)
        self.typed: np.ndarray | None = None
        self.ref_bits: torch.Tensor | None = None
        self.query: torch.Tensor | None = None
        self._cache: dict[str, torch.Tensor] = {}  # "all": every query's donors [Q, P, K] (int16/int32 internal rows)

    # ------------------------------------------------------------------ index and queries
    def set_markers(self, typed_sites: np.ndarray) -> None:
        """Index the reference rows at these panel sites (sorted unique indices, or a bool mask)."""
        from .ops.pbwt import pack_markers

        t = np.asarray(typed_sites)
        t = np.flatnonzero(t) if t.dtype == bool else np.unique(t.astype(np.int64))
        if t.size and (t[0] < 0 or t[-1] >= self.positions.shape[0]):
            raise ValueError(f"typed sites must lie in [0, {self.positions.shape[0]})")
        self.typed = t
        self.marker_pos = self.positions[t]
        # rows and columns in one step: indexing the rows first would copy every site of the panel
        alleles = np.ascontiguousarray(self.panel.haplotypes[np.ix_(self.reference_rows, t)])
        self.ref_bits = pack_markers(alleles) if t.size else torch.zeros(self.n_references, 0, dtype=torch.int64)
        self.query = None
        self._cache = {}
        n_points = t.size // self.group + 1
        self.points = np.minimum(np.arange(n_points) * self.group + self.group // 2, t.size).astype(np.int64)
        # group i covers boundaries [i*G, (i+1)*G); its point sits in the middle (DESIGN.md 7)
        self.points = np.unique(self.points)

    def refresh_embeddings(self, embedding_layer: torch.nn.Module, device: Any = None) -> None:
        """Nothing to do: matching reads alleles, not embeddings (the refresh is ``set_markers``)."""

    def set_queries(self, alleles, precompute: bool = False, exclude=None) -> None:
        """The query haplotypes' calls at the typed markers, ``[Q, T]`` (0/1, -1 missing).

        ``precompute``: find every query's donors at every point now, in one call (imputation: all
        targets are known up front and share one sweep of the index); ``exclude [Q, E]`` panel rows.
        """
        if self.typed is None:
            raise ValueError("set_markers(typed_sites) before set_queries")
        q = torch.as_tensor(np.asarray(alleles)).to(torch.int8)
        if q.dim() != 2 or q.shape[1] != self.typed.size:
            raise ValueError(f"query alleles must be [Q, {self.typed.size}] (one per typed marker); got {tuple(q.shape)}")
        self.query = q.contiguous()
        self._cache = {}
        if precompute:
            self._cache = {"all": self._precompute(exclude)}

    def _precompute(self, exclude, block: int | None = None) -> torch.Tensor:
        """Every query's donors at every point, ``[Q, P, K]`` internal rows (int16 for panels of
        up to 32,767 haplotypes, else int32), found ``block`` queries per call: the op's int64 rows
        and int32 run lengths for all queries at once would be 16 bytes per query, point and donor
        (1.9 GB for 2,000 haplotypes x 1,863 points x 32), where the kept rows take 2. Each call
        sweeps the index again, a small cost beside the queries."""
        n_q = self.query.shape[0]
        ex = self._exclude_internal(exclude, n_q)
        pts = torch.from_numpy(self.points)
        kk = self._k_for(ex, None)
        small = self.n_references <= torch.iinfo(torch.int16).max
        out = torch.empty((n_q, pts.numel(), kk), dtype=torch.int16 if small else torch.int32)
        block = block or PRECOMPUTE_BLOCK
        for q0 in range(0, n_q, block):
            ids = torch.arange(q0, min(n_q, q0 + block))
            out[q0 : q0 + ids.numel()] = self._donors_at(ids, pts, ex[q0 : q0 + ids.numel()], kk)
        return out

    # ------------------------------------------------------------------ donors
    def _k_for(self, ex: torch.Tensor, k: int | None) -> int:
        n_ex = int((ex >= 0).sum(1).max()) if ex.numel() else 0
        return max(1, min(self.k if k is None else int(k), self.n_references - n_ex))

    def _donors_at(self, ids: torch.Tensor, points: torch.Tensor, ex: torch.Tensor, k: int | None = None):
        from .ops.pbwt import pbwt_donors

        kk = self._k_for(ex, k)
        rows, _, _ = pbwt_donors(self.ref_bits, self.query[ids], points, kk, ex, ids, self.seed)
        return rows  # [B, P, K] internal rows

    def site_donors(
        self, window_idx: int, queries, exclude: torch.Tensor | None = None, k: int | None = None
    ) -> SiteDonors:
        """The donors of queries ``queries`` (indices into ``set_queries``, ``[B]``) at every site of a window."""
        from .ops.pbwt import match_runs

        if self.query is None:
            raise ValueError("set_queries(alleles) before site_donors")
        ids = torch.as_tensor(queries, dtype=torch.int64).reshape(-1).cpu()
        sl = self.layout.sites(window_idx)
        bnd = np.searchsorted(self.typed, np.arange(sl.start, sl.stop)).astype(np.int64)  # [n]
        # Every site between the same two typed markers (one boundary) has the same donors and the
        # same runs in markers: match once per boundary (~n / 15 of them), then expand to the sites.
        ub, site_b = np.unique(bnd, return_inverse=True)
        grp = np.searchsorted(self.points, np.minimum(ub // self.group * self.group + self.group // 2, self.typed.size))
        used, inv = np.unique(grp, return_inverse=True)
        ex = self._exclude_internal(exclude, ids.shape[0])
        if "all" in self._cache and exclude is None and k is None:
            rows_p = self._cache["all"][ids][:, torch.from_numpy(used)].long()
        else:
            rows_p = self._donors_at(ids, torch.from_numpy(self.points[used]), ex, k)
        rows_u = rows_p[:, torch.from_numpy(inv)].permute(0, 2, 1).contiguous()  # [B, K, U] internal
        b, kk, u = rows_u.shape
        ubt = torch.from_numpy(ub)
        bounds = ubt[None, None].expand(b, kk, u).reshape(b, -1)
        left_u, right_u = match_runs(self.ref_bits, self.query[ids], rows_u.view(b, -1), bounds)
        left_u, right_u = left_u.view(b, kk, u), right_u.view(b, kk, u)
        # the runs' outer markers per boundary; an empty run gets a sentinel that clamps its span to 0
        mpos = torch.from_numpy(self.marker_pos)
        big = torch.iinfo(torch.int64).max // 2
        if mpos.numel():
            lo_u = torch.where(left_u > 0, mpos[(ubt - left_u.long()).clamp(0, mpos.numel() - 1)], big)
            hi_u = torch.where(right_u > 0, mpos[(ubt + right_u.long() - 1).clamp(0, mpos.numel() - 1)], -big)
        else:
            lo_u, hi_u = torch.full_like(left_u, big, dtype=torch.int64), torch.full_like(left_u, -big, dtype=torch.int64)
        site_bt = torch.from_numpy(site_b.reshape(-1).astype(np.int64))
        runs = _BoundaryRuns(left_u, right_u, lo_u, hi_u, site_bt, torch.from_numpy(self.positions[sl]))
        rows = runs.to_sites(self._rows(rows_u))  # panel rows
        # each donor's allele at each site: a gather down the window's columns (the rows vary by
        # donor and boundary), 1.6x faster than numpy's broadcast fancy indexing
        window = torch.from_numpy(np.ascontiguousarray(self.panel.haplotypes[:, sl]))
        alleles = torch.gather(window, 0, rows.view(b * kk, -1)).view(rows.shape)
        return SiteDonors(rows, alleles, runs=runs)

    def search(self, window_idx, query_tokens=None, exclude=None, k=None, queries=None):
        """The window-level interface: each query's donors at the window's middle site.

        PBWT matching needs the query's calls across the chromosome, not one window's tokens, so
        pass ``queries`` (indices into ``set_queries``). Returns ``(-(left + right) float32 [B, K],
        rows int64 [B, K])``, best first.
        """
        if queries is None:
            raise ValueError(
                "the pbwt engine matches whole-chromosome haplotypes: call set_queries(alleles) and "
                "pass search(..., queries=indices), or use site_donors"
            )
        d = self.site_donors(window_idx, queries, exclude, k)
        mid = d.shape[2] // 2
        dist = -(d.left[:, :, mid] + d.right[:, :, mid]).float()
        order = torch.sort(dist, dim=1, stable=True).indices
        return dist.gather(1, order), d.rows[:, :, mid].gather(1, order)


def framed_alleles(d: SiteDonors) -> torch.Tensor:
    """Donor alleles int64 ``[B, K, n + 2]``, 0 at SOS/EOS (the copy head's ``rag_allele``)."""
    return _framed(d.alleles, tokens=False)


def _framed(alleles: torch.Tensor, tokens: bool) -> torch.Tensor:
    """uint8 alleles ``[N, K, n]`` -> int64 ``[N, K, n + 2]``: tokens (``SOS, ALLELE_0 + a, EOS``)
    or alleles (0 at SOS/EOS)."""
    b, k, n = alleles.shape
    out = torch.empty(b, k, n + 2, dtype=torch.int64)
    out[..., 0] = SOS if tokens else 0
    out[..., -1] = EOS if tokens else 0
    out[..., 1:-1] = alleles
    if tokens:
        out[..., 1:-1] += ALLELE_0
    return out


def donor_inputs(
    d1: SiteDonors,
    d2: SiteDonors,
    embedding_layer: torch.nn.Module,
    pos: torch.Tensor,
    af: torch.Tensor,
    factored: bool | None = None,
    table: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The model's donor keys for both haplotypes of a batch, on ``pos``'s device:
    ``rag_emb_h*`` ``[B, K, L, D]``, ``rag_feat_h*`` ``[B, K, L, F]`` and ``rag_allele_h*`` ``[B, K, L]``.

    ``factored`` (default: on the CPU) gives ``rag_table [L, V, D]`` + ``rag_tok_h*`` instead of
    ``rag_emb_h*``: the same references, and the model's donor attention then works per token
    (``V`` = 7) rather than per donor (``K`` = 32): 2-3x faster training steps on a CPU. With them
    comes ``rag_open`` (``model.OpenSites``: the pairs where the donors disagree, ~3 % at
    imputation, with their match features) in place of ``rag_feat_h*``: the attention scores
    donors there only. On CUDA ``rag_emb`` is built by ``embed_flatten``'s fused kernel. The one
    place the trainer and ``impute`` turn donors into model input. ``table``: this window's
    ``site_table`` when the caller already has it (``impute`` builds one per window, not per batch).
    """
    dev = pos.device
    if factored is None:
        factored = dev.type == "cpu"
    out = {}
    if factored:
        from .model import OpenSites

        if table is None:
            p0, a0 = (pos[0], af[0]) if pos.dim() == 2 else (pos, af)
            table = site_table(embedding_layer, p0, a0)
        out["rag_table"] = table
        raw = torch.cat([d1.alleles, d2.alleles])  # uint8 [2B, K, n]: both halves framed in one go
        toks, alleles = _framed(raw, tokens=True), _framed(raw, tokens=False)
        # where the donors disagree, with their features there only (the model needs none elsewhere);
        # tokens are ALLELE_0 + allele inside the frame, so comparing the uint8 alleles finds them
        same = torch.ones(toks.shape[0], toks.shape[2], dtype=torch.bool)
        same[:, 1:-1] = (raw == raw[:, :1]).all(1)
        open_ = OpenSites(toks, alleles, same=same)
        halves = zip((d1, d2), open_.split(d1.shape[0]), strict=True)
        open_.feats = torch.cat([d.features_at(n, site - 1) for d, (n, site) in halves])  # unframed sites
        out["rag_open"] = open_.to(dev)
        b = d1.shape[0]
        for name, rows in (("h1", slice(0, b)), ("h2", slice(b, None))):
            out[f"rag_tok_{name}"], out[f"rag_allele_{name}"] = toks[rows].to(dev), alleles[rows].to(dev)
        return out
    for name, d in (("h1", d1), ("h2", d2)):
        out[f"rag_emb_{name}"] = donor_embeddings(embedding_layer, d.tokens(), pos, af)
        out[f"rag_feat_{name}"] = d.features().to(dev)
        out[f"rag_allele_{name}"] = framed_alleles(d).to(dev)
    return out


def split_haplotypes(d: SiteDonors) -> tuple[SiteDonors, SiteDonors]:
    """Donors of interleaved queries (rows ``2s``, ``2s + 1``) -> (first haplotypes, second haplotypes)."""
    return d.select(slice(0, None, 2)), d.select(slice(1, None, 2))
