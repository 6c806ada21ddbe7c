"""Top-K reference haplotypes per query window: exact weighted Hamming search, or the seed's FAISS index.

Both engines answer the same question, "which reference rows minimise ``||f(q) - f(r)||^2``
where ``f`` is the (purely per-site) embedding and reference and query share the mask", and
return the same answer tie-aware: nearest first, ties broken by the lowest panel row.

* ``HammingRetriever`` uses what the embedding being per-site buys (docs/RETRIEVAL.md): for
  allele tokens the squared distance is ``sum_l w_l [q_l != r_l]`` over unmasked sites, with
  ``w_l = ||f_l(ALLELE_1) - f_l(ALLELE_0)||^2``. It keeps the reference alleles bit-packed
  (one bit per site and haplotype) and refreshes with ``O(W * L * D)`` work, not ``O(N*L*D)``.
  The fast kernel quantises weights to integers; its candidates are re-ranked in float64 and
  the candidate set is grown until a bound on the quantisation error *proves* no other row can
  enter the top K, so the result is exact. Queries carrying UNK (missing calls at imputation)
  take a float64 GEMM over per-site costs ``c_l(q_l, r)``.
* ``FaissRetriever`` is the seed's design kept faithfully: per (window, mask) a
  ``faiss.IndexFlatL2`` over flattened masked reference embeddings ``[N, L*D]`` float32, built
  on demand under an explicit byte budget (LRU eviction). Its float32 distances are re-ranked
  in float64 from the stored vectors to return the documented tie-break.
"""

from __future__ import annotations

import abc
import math
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .ops.hamming import hamming_topk, pack_bits, quantize_weights, unpack_bits
from .ops.triton import HAMMING_MAX_K
from .optional import optional_import
from .vocab import ALLELE_0, ALLELE_1, MASK, UNK
from .windows import frame_tokens, window_features

__all__ = ["FaissRetriever", "HammingRetriever", "Retriever", "make_retriever"]

_FINE_BITS = 40  # exact-distance costs: integers <= 2**40, sums of <= 1028 stay below 2**53
_SITE_TOKENS = (UNK, MASK, ALLELE_0, ALLELE_1)


def _embed(layer: torch.nn.Module, tokens: torch.Tensor, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
    """The embedding in eval mode (no dropout), no grad, autocast off; training state restored."""
    was = layer.training
    layer.eval()
    try:
        with torch.no_grad(), torch.autocast(device_type=tokens.device.type, enabled=False):
            return layer(tokens, pos, af)
    finally:
        layer.train(was)


def _layer_device(layer: torch.nn.Module) -> torch.device:
    for p in layer.parameters():
        return p.device
    return torch.device("cpu")


class Retriever(abc.ABC):
    """Top-K reference haplotypes of each query haplotype in one window.

    ``reference_rows``: the panel rows (``Panel.haplotypes`` rows) that may be retrieved; all
    rows when None. Results are reported as panel row ids. ``k``: default neighbours per query.
    """

    def __init__(self, panel, freqs, layout, reference_rows=None, k: int = 1):
        self.panel = panel
        self.layout = layout
        af = freqs.af if hasattr(freqs, "af") else freqs
        self.af = np.asarray(af, dtype=np.float32).reshape(-1)
        n_hap = int(panel.haplotypes.shape[0])
        if self.af.shape[0] != panel.haplotypes.shape[1]:
            raise InputError(
                getattr(panel, "path", None),
                f"{self.af.shape[0]} allele frequencies for {panel.haplotypes.shape[1]} panel sites",
                "compute the frequencies from this panel (compute_frequencies(panel))",
            )
        if reference_rows is None:
            rows = np.arange(n_hap, dtype=np.int64)
        else:
            rows = np.asarray(
                reference_rows.cpu() if isinstance(reference_rows, torch.Tensor) else reference_rows,
                dtype=np.int64,
            ).reshape(-1)
        rows = np.sort(rows)
        if rows.size == 0:
            raise ValueError("reference_rows is empty: a retriever needs at least one reference haplotype")
        if rows[0] < 0 or rows[-1] >= n_hap:
            raise ValueError(f"reference_rows must lie in [0, {n_hap}); got [{rows[0]}, {rows[-1]}]")
        if np.any(np.diff(rows) == 0):
            raise ValueError("reference_rows holds duplicate rows")
        self.reference_rows = rows
        self._row_to_ref = np.full(n_hap, -1, dtype=np.int64)
        self._row_to_ref[rows] = np.arange(rows.size)
        self.k = int(k)
        if self.k < 1:
            raise ValueError(f"k must be at least 1, not {k}")

    @property
    def n_references(self) -> int:
        return int(self.reference_rows.shape[0])

    def window_features(self, window_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Framed ``pos`` and ``af`` of a window, float32 ``[n + 2]`` (0 at SOS/EOS), as the dataset makes them."""
        f = window_features(self.panel.positions, self, self.layout.sites(window_idx), names=("af",))
        return torch.from_numpy(f["pos"]), torch.from_numpy(f["af"])

    def window_alleles(self, window_idx: int) -> np.ndarray:
        """Reference alleles of a window, uint8 ``[N, n]`` (rows in ``reference_rows`` order)."""
        return np.ascontiguousarray(self.panel.haplotypes[self.reference_rows, self.layout.sites(window_idx)])

    def _site_tokens(self, window_idx: int, query_tokens: torch.Tensor) -> torch.Tensor:
        """Query tokens at the window's sites, ``[B, n]``; checks framing length and token values."""
        if not 0 <= window_idx < len(self.layout):
            raise IndexError(f"window {window_idx} out of range (layout has {len(self.layout)} windows)")
        sl = self.layout.sites(window_idx)
        n = sl.stop - sl.start
        if query_tokens.dim() != 2 or query_tokens.shape[1] < n + 2:
            raise ValueError(
                f"query_tokens must be [B, L] with L >= n + 2 = {n + 2} for window {window_idx}; "
                f"got {tuple(query_tokens.shape)}"
            )
        sites = query_tokens[:, 1 : n + 1].long()
        ok = (sites == UNK) | (sites == MASK) | (sites == ALLELE_0) | (sites == ALLELE_1)
        if not bool(ok.all()):
            bad = sites[~ok][0].item()
            raise ValueError(f"query token {bad} at a site: sites must hold UNK, MASK, ALLELE_0 or ALLELE_1")
        return sites

    def _exclude_internal(self, exclude: torch.Tensor | None, b: int) -> torch.Tensor:
        """Panel rows to exclude -> internal reference indices ``[B, E]`` (-1 = nothing; negatives ignored)."""
        if exclude is None:
            return torch.full((b, 0), -1, dtype=torch.int64)
        ex = torch.as_tensor(exclude).long().cpu()
        if ex.dim() == 1:
            ex = ex[:, None]
        if ex.shape[0] != b:
            raise ValueError(f"exclude has {ex.shape[0]} rows for {b} queries")
        valid = (ex >= 0) & (ex < self._row_to_ref.shape[0])
        mapped = torch.from_numpy(self._row_to_ref)[ex.clamp(0, self._row_to_ref.shape[0] - 1)]
        return torch.where(valid, mapped, torch.full_like(mapped, -1))

    def _check_k(self, k: int, ex: torch.Tensor) -> None:
        n_ex = int(((ex >= 0).sum(1)).max()) if ex.numel() else 0
        if k < 1 or k > self.n_references - n_ex:
            raise ValueError(
                f"k={k} neighbours requested but only {self.n_references} references"
                f" ({n_ex} excluded for some query)"
            )

    def _rows(self, internal: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.reference_rows)[internal.cpu()]

    @abc.abstractmethod
    def search(
        self,
        window_idx: int,
        query_tokens: torch.Tensor,
        exclude: torch.Tensor | None = None,
        k: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query_tokens`` int64 ``[B, L]`` (framed, MASK at masked sites) -> ``(dist float32 [B, K],
        index int64 [B, K])``: squared embedding distances and panel rows, nearest first, ties by
        lowest row. ``exclude [B, E]``: panel rows each query may not retrieve (negatives = none)."""

    @abc.abstractmethod
    def refresh_embeddings(self, embedding_layer: torch.nn.Module, device: Any = None) -> None:
        """Take the current embedding into account (after training steps changed it)."""


def _topk_by_dist_then_index(dist: torch.Tensor, idx: torch.Tensor, k: int):
    """Sort candidate rows by (dist, idx) ascending; return the first ``k`` of each row."""
    perm = torch.argsort(idx, dim=1)
    d1, i1 = torch.gather(dist, 1, perm), torch.gather(idx, 1, perm)
    order = torch.sort(d1, dim=1, stable=True).indices[:, :k]
    return torch.gather(d1, 1, order), torch.gather(i1, 1, order)


def _topk_with_tie_tolerance(dist: torch.Tensor, idx: torch.Tensor, k: int, tol: torch.Tensor):
    """Like :func:`_topk_by_dist_then_index`, but distances closer than ``tol [G]`` (chained) are ties.

    For float32 embeddings: identical haplotypes embedded at different batch positions can
    differ by a few ulps, which must not override the lowest-row tie-break.
    """
    d_s, order = torch.sort(dist, dim=1, stable=True)
    i_s = torch.gather(idx, 1, order)
    gaps = (d_s[:, 1:] - d_s[:, :-1]) > tol[:, None]
    group = torch.cat([torch.zeros_like(gaps[:, :1]), gaps], dim=1).long().cumsum(1)
    key = group * (int(idx.max()) + 1 if idx.numel() else 1) + i_s
    pick = torch.argsort(key, dim=1)[:, :k]
    return torch.gather(d_s, 1, pick), torch.gather(i_s, 1, pick)


class HammingRetriever(Retriever):
    """Exact nearest neighbours in embedding space from bit-packed alleles and per-site weights.

    ``device``: where the packed reference bits live and the search runs (CPU: C++ popcount op,
    CUDA: Triton kernel). ``slack``: extra candidates fetched beyond ``k + E`` for the exactness
    certificate; queries it cannot certify take the exact float64 GEMM path.
    """

    def __init__(
        self, panel, freqs, layout, reference_rows=None, k: int = 1, device: Any = None, slack: int = 32
    ):
        super().__init__(panel, freqs, layout, reference_rows, k)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.slack = int(slack)
        self._bits: dict[int, torch.Tensor] = {}
        # Per window, float64 [n] each: w (allele mismatch cost), cost of UNK vs allele 0 / 1.
        self._costs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._units: dict[int, float] = {}
        # Per (window, mask), quantised once (cleared at refresh): the kernel's int32 [W*64] coarse
        # weights, [n, 2] (coarse, fine) float64 weights, scale and certificate bound. The SAME
        # int32 tensor then reaches the kernel for every query batch with that mask (hap_1/hap_2 of
        # a step, every batch of a window in an epoch), so the Triton kernel's weight-plane cache
        # hits instead of rebuilding planes on every call, and no scalar is read back on a hit.
        self._quantised: OrderedDict[tuple[int, bytes], tuple] = OrderedDict()
        self.max_quantised = 64  # cached (window, mask) entries: a few KB each
        self.n_general_queries = 0  # queries answered by the float64 GEMM path (UNK, uncertified...)
        self.n_uncertified = 0  # fast-path queries whose exactness certificate failed

    # -- state ---------------------------------------------------------------------------------
    def to(self, device: Any) -> HammingRetriever:
        self.device = torch.device(device)
        self._bits = {w: b.to(self.device) for w, b in self._bits.items()}
        if self._costs is not None:
            self._costs = {w: tuple(c.to(self.device) for c in cs) for w, cs in self._costs.items()}
        self._quantised.clear()
        return self

    def bits(self, window_idx: int) -> torch.Tensor:
        """Packed reference alleles of a window, int64 ``[N, ceil(n/64)]`` (packed once, cached)."""
        b = self._bits.get(window_idx)
        if b is None:
            b = pack_bits(torch.from_numpy(self.window_alleles(window_idx))).to(self.device)
            self._bits[window_idx] = b
        return b

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * 8 for b in self._bits.values())

    def refresh_embeddings(self, embedding_layer: torch.nn.Module, device: Any = None) -> None:
        """Per-site costs from the embedding: ``w_l = ||f_l(1) - f_l(0)||^2`` and UNK-vs-allele costs.

        One embedding call of 3 tokens (UNK, ALLELE_0, ALLELE_1) per window: ``O(W * L * D)``.
        Exact for any per-site embedding (the HaplotypeEmbedding contract); equals
        ``embedding_layer.site_weights`` for ``w``.
        """
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        dev = _layer_device(embedding_layer)
        costs, units = {}, {}
        for w in range(len(self.layout)):
            pos, af = self.window_features(w)
            length = pos.shape[0]
            toks = torch.tensor([UNK, ALLELE_0, ALLELE_1], device=dev)[:, None].expand(3, length)
            out = _embed(
                embedding_layer, toks, pos.to(dev)[None].expand(3, length), af.to(dev)[None].expand(3, length)
            )
            f = out[:, 1:-1].double()
            c = (
                (f[2] - f[1]).pow(2).sum(-1),  # w: allele mismatch
                (f[0] - f[1]).pow(2).sum(-1),  # UNK vs allele 0
                (f[0] - f[2]).pow(2).sum(-1),  # UNK vs allele 1
            )
            # Integer costs in units of max/2**40: every distance is then a sum of integers below
            # 2**53, exact in float64 whatever the summation order (GEMM blocking included), so
            # equal mismatch patterns give bit-equal distances and ties are real ties.
            unit = max(float(torch.stack([x.max() for x in c]).max()), 1e-300) / 2.0**_FINE_BITS
            costs[w] = tuple(torch.round(x / unit).to(self.device) for x in c)
            units[w] = unit
        self._costs, self._units = costs, units
        self._quantised.clear()

    def _int_costs(self, window_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(w, UNK-vs-0, UNK-vs-1) as integer-valued float64 ``[n]`` each, and their unit."""
        if self._costs is None:
            sl = self.layout.sites(window_idx)
            one = torch.ones(sl.stop - sl.start, dtype=torch.float64, device=self.device)
            return one, torch.zeros_like(one), torch.zeros_like(one), 1.0
        return (*self._costs[window_idx], self._units[window_idx])

    def site_weights(self, window_idx: int) -> torch.Tensor:
        """Current per-site mismatch weights of a window, float64 ``[n]`` (ones before the first refresh)."""
        w, _, _, unit = self._int_costs(window_idx)
        return w * unit

    # -- search --------------------------------------------------------------------------------
    def search(self, window_idx, query_tokens, exclude=None, k=None):
        k = self.k if k is None else int(k)
        out_device = query_tokens.device
        sites = self._site_tokens(window_idx, query_tokens).to(self.device)
        b = sites.shape[0]
        ex = self._exclude_internal(exclude, b).to(self.device)
        self._check_k(k, ex)
        dist = torch.empty(b, k, dtype=torch.float64, device=self.device)
        index = torch.empty(b, k, dtype=torch.int64, device=self.device)
        mask = sites == MASK
        unk = sites == UNK
        if self._costs is None:
            mask = mask | unk  # no embedding yet: a missing call carries no information
            general = torch.zeros(b, dtype=torch.bool, device=self.device)
        else:
            general = unk.any(1)
        gq = torch.nonzero(general).flatten()
        if gq.numel():
            d, i = self._search_general(window_idx, sites[gq], ex[gq], k)
            dist[gq], index[gq] = d, i
        fq = torch.nonzero(~general).flatten()
        if fq.numel():
            # Queries sharing a mask share one weight vector: one kernel call per distinct mask
            # (in training every query of a batch has the same mask, so this is one call).
            uniq, inverse = torch.unique(mask[fq], dim=0, return_inverse=True)
            for g in range(uniq.shape[0]):
                qs = fq[inverse == g]
                d, i = self._search_shared_mask(window_idx, sites[qs], uniq[g], ex[qs], k)
                dist[qs], index[qs] = d, i
        return dist.float().to(out_device), self._rows(index).to(out_device)

    def _ref_alleles(self, window_idx: int, internal: torch.Tensor | None = None) -> torch.Tensor:
        """Reference alleles uint8 ``[..., n]`` on ``self.device`` (all rows, or rows ``internal [...]``).

        CPU: read from the panel's uint8 matrix (no unpacking); CUDA: unpacked from the bits.
        """
        if self.device.type == "cpu":
            sl = self.layout.sites(window_idx)
            rows = self.reference_rows if internal is None else self.reference_rows[internal.cpu().numpy()]
            return torch.from_numpy(np.ascontiguousarray(self.panel.haplotypes[rows, sl]))
        bits = self.bits(window_idx)
        sl = self.layout.sites(window_idx)
        return unpack_bits(bits if internal is None else bits[internal], sl.stop - sl.start)

    def _search_general(self, window_idx: int, sites: torch.Tensor, ex: torch.Tensor, k: int):
        """Exact float64 path: ``dist = sum_l c_l(q_l, 0) + R @ (c_l(q_l, 1) - c_l(q_l, 0))``.

        Handles per-query masks and UNK calls, and answers queries the fast path could not
        certify. Ties by lowest index (exact selection below).
        """
        self.n_general_queries += sites.shape[0]
        w, ua, ub, unit = self._int_costs(window_idx)
        zero = torch.zeros_like(w)
        c0 = torch.where(sites == ALLELE_1, w, zero) + torch.where(sites == UNK, ua, zero)
        c1 = torch.where(sites == ALLELE_0, w, zero) + torch.where(sites == UNK, ub, zero)
        refs = self._ref_alleles(window_idx).double()  # [N, n]
        dist = c0.sum(1, keepdim=True) + (c1 - c0) @ refs.T  # [G, N], exact integers
        n_ref = dist.shape[1]
        if ex.numel():
            hit = torch.zeros(dist.shape[0], n_ref + 1, dtype=torch.bool, device=dist.device)
            hit.scatter_(1, torch.where(ex >= 0, ex, n_ref), True)  # -1 -> spare column, dropped
            dist = dist.masked_fill(hit[:, :n_ref], math.inf)
        # Exact (dist, index) top-k without a full sort: every row at or below the k-th value,
        # then a small stable sort of just those (ties may make them more than k).
        kth = torch.topk(dist, k, dim=1, largest=False).values[:, -1:]
        m = int((dist <= kth).sum(1).max())
        cand_d, cand_i = torch.topk(dist, m, dim=1, largest=False)
        d, i = _topk_by_dist_then_index(cand_d, cand_i, k)
        return d * unit, i

    def _search_shared_mask(
        self, window_idx: int, sites: torch.Tensor, mask: torch.Tensor, ex: torch.Tensor, k: int
    ):
        """Fast path: integer-weighted popcount top-(k + E + slack), then a certified float64 re-rank.

        Queries whose certificate fails (typically many duplicated haplotypes tied at the K-th
        distance) are answered by the exact GEMM path.
        """
        n_ref = self.n_references
        w_all, _, _, unit = self._int_costs(window_idx)
        keep = ~mask
        key = (window_idx, keep.cpu().numpy().tobytes())  # one small read-back: the cache key
        hit = self._quantised.get(key)
        if hit is None:
            w = w_all * keep  # fine integer weights (exact sums)
            wmax = float(w.max()) if w.numel() else 0.0
            if wmax <= 0.0:
                hit = (None, None, 1.0, 0.0)
            else:
                # the op's quantiser (this dict is the cache): the kernel's coarse integer weights
                w_int, scale = quantize_weights(w, -(-w.shape[0] // 64), cache=False)
                wq = w_int[: w.shape[0]].double()
                bound = float((w - wq * scale).abs().sum())  # |exact - scale * coarse| <= bound, any row
                hit = (w_int, torch.stack([wq, w], dim=1), scale, bound)
            self._quantised[key] = hit
            while len(self._quantised) > self.max_quantised:
                self._quantised.popitem(last=False)
        else:
            self._quantised.move_to_end(key)
        w_int, wq_w, scale, bound = hit
        if w_int is None:  # everything masked: all distances are 0, lowest rows win
            return self._search_general(window_idx, sites, ex, k)
        q = (sites == ALLELE_1).to(torch.uint8)  # masked / non-ALT sites -> 0 bits
        n_ex = int((ex >= 0).sum(1).max()) if ex.numel() else 0
        kp = k + n_ex + self.slack
        if self.device.type == "cuda":  # stay within the Triton kernel's k (it falls back beyond)
            kp = max(k + n_ex, min(kp, HAMMING_MAX_K))
        kp = min(n_ref, kp)
        # Pre-quantised int32 [W*64] weights go to the kernel as given (no copy, no re-quantisation).
        _, cand = hamming_topk(pack_bits(q), self.bits(window_idx), weights=w_int, k=kp)
        cand = cand.to(self.device)
        alle = self._ref_alleles(window_idx, cand)  # [G, kp, n]
        mism = ((alle != q[:, None, :]) & ~mask).double()
        # Coarse (kernel) and fine distances of the candidates in one product; both are sums of
        # integers below 2**53, hence exact in float64.
        both = mism @ wq_w  # [G, kp, 2]
        qd, exact = both[..., 0], both[..., 1]
        if ex.numel():
            exact = exact.masked_fill((cand[:, :, None] == ex[:, None, :]).any(-1), math.inf)
        dist, index = _topk_by_dist_then_index(exact, cand, k)
        dk = dist[:, -1]
        if kp >= n_ref:
            return dist * unit, index
        # Every row outside the candidates has quantised distance >= the largest candidate's
        # (the kernel's top-kp is exact on integers, ties to lower rows), so its exact distance
        # is >= floor - bound: if that exceeds the K-th exact distance, nothing outside can
        # enter or tie the top K.
        floor = qd.max(1).values * scale
        if bound == 0.0:
            ok = floor >= dk  # exact quantisation: the kernel's (d_int, row) order is the answer
        else:  # (+1 fine unit and 1e-12: rounding of scale * coarse, which is not integer)
            ok = floor - bound > dk * (1.0 + 1e-12) + 1.0
        ok &= torch.isfinite(dk)
        self.n_uncertified += int((~ok).sum())
        if not bool(ok.all()):
            bad = torch.nonzero(~ok).flatten()
            dist[bad], index[bad] = self._search_general(window_idx, sites[bad], ex[bad], k)
            dist[bad] /= unit  # back to fine units; scaled once below
        return dist * unit, index


class _FaissWindow:
    """One built (window, mask) FAISS index with a zero-copy view of its stored vectors."""

    def __init__(self, index, xb: np.ndarray, norms: np.ndarray, nbytes: int):
        self.index, self.xb, self.norms, self.nbytes = index, xb, norms, nbytes


class FaissRetriever(Retriever):
    """The seed's retrieval: flattened masked embeddings in ``faiss.IndexFlatL2``, per (window, mask).

    ``max_bytes``: budget for all built indexes together (float32 vectors, plus a host copy when
    the index lives on a GPU). Windows are built on first use and the least recently used are
    evicted when a new one would exceed the budget; a single window larger than the budget is
    an error. ``chunk_rows``: references embedded per forward call while building.
    ``rel_margin``: bound on FAISS's float32 distance error relative to ``||q||^2 + ||r||^2``,
    used to certify that re-ranked candidates contain the exact top K. ``tie_rtol``: float64
    distances closer than this (relative to ``||q||^2 + max ||r||^2``) are ties (lowest row
    wins): float32 embeddings of equal haplotypes may differ by an ulp across batch positions.
    """

    def __init__(
        self,
        panel,
        freqs,
        layout,
        reference_rows=None,
        k: int = 1,
        max_bytes: int = 2 << 30,
        slack: int = 16,
        chunk_rows: int = 256,
        use_gpu: bool | None = None,
        rel_margin: float = 1e-4,
        tie_rtol: float = 1e-8,
    ):
        optional_import("faiss")  # missing: one line naming the extra, before any work
        super().__init__(panel, freqs, layout, reference_rows, k)
        self.max_bytes = int(max_bytes)
        self.slack = int(slack)
        self.chunk_rows = int(chunk_rows)
        self.use_gpu = use_gpu
        self.rel_margin = float(rel_margin)
        self.tie_rtol = float(tie_rtol)
        self._layer: torch.nn.Module | None = None
        self._cache: OrderedDict[tuple[int, bytes], _FaissWindow] = OrderedDict()
        self.n_built = 0
        self.n_evicted = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._cache.values())

    def refresh_embeddings(self, embedding_layer: torch.nn.Module, device: Any = None) -> None:
        """Store the embedding layer and drop every built index (rebuilt lazily with the new one).

        Embeddings are computed on the layer's own device; ``device`` is accepted for interface
        compatibility (the FAISS index goes to a GPU when faiss has one, see ``use_gpu``).
        """
        del device
        self._layer = embedding_layer
        self._cache.clear()

    def window_nbytes(self, window_idx: int, dims: int) -> int:
        """Bytes one (window, mask) index takes: ``N * (n + 2) * D * 4`` (doubled for a GPU index)."""
        sl = self.layout.sites(window_idx)
        b = self.n_references * (sl.stop - sl.start + 2) * dims * 4
        return 2 * b if self._on_gpu() else b

    def _on_gpu(self) -> bool:
        if self.use_gpu is not None:
            return bool(self.use_gpu)
        faiss = optional_import("faiss")

        return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0

    def _layer_or_raise(self) -> torch.nn.Module:
        if self._layer is None:
            raise RuntimeError(
                "FaissRetriever has no embedding: call refresh_embeddings(embedding_layer) first"
            )
        return self._layer

    def _embed_flat(self, tokens: torch.Tensor, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
        layer = self._layer_or_raise()
        dev = _layer_device(layer)
        t = tokens.to(dev)
        p = pos.to(dev)[None].expand(t.shape[0], -1)
        a = af.to(dev)[None].expand(t.shape[0], -1)
        return _embed(layer, t, p, a).float().reshape(t.shape[0], -1)

    def _build(self, window_idx: int, mask: np.ndarray) -> _FaissWindow:
        faiss = optional_import("faiss")

        pos, af = self.window_features(window_idx)
        alleles = self.window_alleles(window_idx)
        n_ref = alleles.shape[0]
        first = self._embed_flat(torch.from_numpy(frame_tokens(alleles[:1], mask)), pos, af)
        dim = first.shape[1]
        nbytes = self.window_nbytes(window_idx, dim // pos.shape[0])
        if nbytes > self.max_bytes:
            raise InputError(
                None,
                f"window {window_idx}: {n_ref} references x {pos.shape[0]} tokens x {dim // pos.shape[0]} dims"
                f" float32 need {nbytes:,} bytes, over the FAISS budget max_bytes={self.max_bytes:,}",
                f"raise max_bytes to at least {nbytes:,}, use fewer references or shorter windows, or use the"
                " exact Hamming engine (make_retriever('hamming', ...)), which needs "
                f"{n_ref * -(-(pos.shape[0] - 2) // 64) * 8:,} bytes for this window",
            )
        while self._cache and self.nbytes + nbytes > self.max_bytes:
            self._cache.popitem(last=False)
            self.n_evicted += 1
        index = faiss.IndexFlatL2(dim)
        norms = np.empty(n_ref, dtype=np.float64)
        host = np.empty((n_ref, dim), dtype=np.float32) if self._on_gpu() else None
        for s in range(0, n_ref, self.chunk_rows):
            toks = torch.from_numpy(frame_tokens(alleles[s : s + self.chunk_rows], mask))
            x = np.ascontiguousarray(self._embed_flat(toks, pos, af).cpu().numpy())
            norms[s : s + x.shape[0]] = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))
            index.add(x)
            if host is not None:
                host[s : s + x.shape[0]] = x
        if host is None:
            xb = faiss.rev_swig_ptr(index.get_xb(), n_ref * dim).reshape(n_ref, dim)  # zero-copy view
        else:  # pragma: no cover - needs a faiss GPU build
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
            index._res = res  # keep the resources alive with the index
            xb = host
        self.n_built += 1
        return _FaissWindow(index, xb, norms, nbytes)

    def _entry(self, window_idx: int, mask: np.ndarray) -> _FaissWindow:
        key = (int(window_idx), np.packbits(mask).tobytes() + bytes([mask.size % 256]))
        e = self._cache.get(key)
        if e is None:
            e = self._build(window_idx, mask)
            self._cache[key] = e
        else:
            self._cache.move_to_end(key)
        return e

    def search(self, window_idx, query_tokens, exclude=None, k=None):
        k = self.k if k is None else int(k)
        out_device = query_tokens.device
        sites = self._site_tokens(window_idx, query_tokens).cpu()
        b, n = sites.shape
        ex = self._exclude_internal(exclude, b)
        self._check_k(k, ex)
        mask = sites == MASK
        if not bool((mask == mask[:1]).all()):
            raise ValueError(
                "FaissRetriever needs one mask shared by every query of a batch (the reference view is"
                " masked like the query); group queries by mask or use the Hamming engine, which takes"
                " per-query masks"
            )
        entry = self._entry(window_idx, mask[0].numpy())
        pos, af = self.window_features(window_idx)
        q = self._embed_flat(query_tokens[:, : n + 2].long(), pos, af).cpu().numpy()
        q = np.ascontiguousarray(q, dtype=np.float32)
        q64 = q.astype(np.float64)
        qn = np.einsum("ij,ij->i", q64, q64)
        margin = self.rel_margin * (qn + entry.norms.max())
        n_ref = self.n_references
        n_ex = int((ex >= 0).sum(1).max()) if ex.numel() else 0
        kp = min(n_ref, k + n_ex + self.slack)
        dist = np.empty((b, k), dtype=np.float64)
        index = np.empty((b, k), dtype=np.int64)
        todo = np.arange(b)
        while todo.size:
            fd, cand = entry.index.search(q[todo], kp)
            cand = torch.from_numpy(cand.astype(np.int64))
            diff = entry.xb[cand.numpy()].astype(np.float64) - q64[todo, None, :]
            exact = torch.from_numpy(np.einsum("gkd,gkd->gk", diff, diff))
            if ex.numel():
                is_ex = (cand[:, :, None] == ex[todo, None, :]).any(-1)
                exact = exact.masked_fill(is_ex, math.inf)
            tie = torch.from_numpy(self.tie_rtol * (qn[todo] + entry.norms.max()))
            d, i = _topk_with_tie_tolerance(exact, cand, k, tie)
            dk = d[:, -1].numpy()
            if kp >= n_ref:
                ok = np.ones(todo.size, dtype=bool)
            else:
                # FAISS ranks by its float32 distances: every non-candidate has fd >= fd[:, -1].
                ok = (fd[:, -1].astype(np.float64) - margin[todo] > dk) & np.isfinite(dk)
            dist[todo[ok]], index[todo[ok]] = d.numpy()[ok], i.numpy()[ok]
            todo = todo[~ok]
            kp = min(n_ref, 2 * kp)
        return (
            torch.from_numpy(dist).float().to(out_device),
            self._rows(torch.from_numpy(index)).to(out_device),
        )


def make_retriever(kind: str, panel, freqs, layout, reference_rows=None, k: int = 1, **kw) -> Retriever:
    """``kind``: ``"hamming"`` (exact, bit-packed; the default choice) or ``"faiss"`` (the seed's index)."""
    if kind == "hamming":
        return HammingRetriever(panel, freqs, layout, reference_rows, k=k, **kw)
    if kind == "faiss":
        return FaissRetriever(panel, freqs, layout, reference_rows, k=k, **kw)
    raise ValueError(f"unknown retriever kind {kind!r}; use 'hamming' or 'faiss'")
