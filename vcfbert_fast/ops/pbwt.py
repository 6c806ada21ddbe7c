"""Donors that match: per query haplotype and selection point, the K reference haplotypes whose
exact match over the typed markers runs longest left + right from the point (PBWT, Durbin 2014).

Contract (the C++ op ``torch.ops.vcfbert_fast.pbwt_donors`` and the numpy reference below agree
exactly, ties included; ``csrc/cpu/pbwt_cpu.cpp`` says how the fast path works):

* ``ref_bits`` int64 ``[N, W]``: the reference alleles at the ``T`` typed markers, packed with
  :func:`~vcfbert_fast.ops.pack_bits` (``W = ceil(T / 64)``). ``query`` int8 ``[Q, T]``: 0/1, -1 =
  missing call.
* Boundary ``b`` in ``[0, T]`` sits between marker ``b - 1`` and marker ``b``. ``left(r, b)`` is the
  number of consecutive markers ``b-1, b-2, ...`` where row ``r`` equals the query, ``right(r, b)``
  the number of consecutive markers ``b, b+1, ...``. A missing query call matches either allele
  (it is no evidence, so it never breaks a run). "Longest" is ``left + right``.
* At each ``points[p]`` (strictly increasing boundaries) the ``k`` rows of largest ``left + right``
  come back best first; ties are broken by the seeded hash ``h(seed, query_ids[q], b, row)``
  (ascending: a random draw that is the same on every path and every run with that seed), never
  by the lowest row. Rows listed in ``exclude[q]`` (-1 = none) never appear (a training sample's
  own two haplotypes). With fewer than ``k`` eligible rows the tail holds -1.
* Returns ``rows`` int64 ``[Q, P, k]`` and ``left``, ``right`` int32 ``[Q, P, k]``.

:func:`match_runs` gives ``left``/``right`` of arbitrary (query, row, boundary) triples: the per-site
match features of the donors.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _ext
from .hamming import pack_bits, unpack_bits

__all__ = [
    "match_runs",
    "match_runs_reference",
    "pbwt_backend",
    "pbwt_donors",
    "pbwt_donors_reference",
    "tie_hash",
]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic), as in pbwt_cpu.cpp."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def tie_hash(seed: int, query_id: int, boundary: int, rows: np.ndarray) -> np.ndarray:
    """The tie-break draw of ``rows`` for one (query, point): uint64, smaller wins."""
    u = np.uint64
    with np.errstate(over="ignore"):
        h = _mix64(np.array([u(seed & 0xFFFFFFFFFFFFFFFF) ^ u(query_id & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64))
        h = _mix64(h ^ u(boundary))
        return _mix64(h ^ np.asarray(rows, dtype=np.uint64))


def _check(ref_bits: torch.Tensor, query: torch.Tensor, points: torch.Tensor, k: int) -> None:
    if ref_bits.dim() != 2 or ref_bits.dtype != torch.int64:
        raise ValueError("pbwt_donors: ref_bits must be int64 [N, W] (pack_bits of the panel at the typed markers)")
    if query.dim() != 2 or query.dtype != torch.int8:
        raise ValueError("pbwt_donors: query must be int8 [Q, T] alleles (0/1, -1 missing)")
    t = query.shape[1]
    if ref_bits.shape[1] != (t + 63) // 64:
        raise ValueError(
            f"pbwt_donors: ref_bits has {ref_bits.shape[1]} words per row but the query has {t} markers"
            f" (need {(t + 63) // 64})"
        )
    if points.dim() != 1 or (points.numel() and (int(points.min()) < 0 or int(points.max()) > t)):
        raise ValueError(f"pbwt_donors: points must be int64 [P] boundaries in [0, {t}]")
    if points.numel() > 1 and bool((points[1:] <= points[:-1]).any()):
        raise ValueError("pbwt_donors: points must be strictly increasing")
    if k < 1:
        raise ValueError(f"pbwt_donors: k must be at least 1, got {k}")


def _runs_at_boundaries(ref: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` int32 ``[N, T + 1]``: the runs of every row at every boundary."""
    n, t = ref.shape
    match = (ref == q[None, :].astype(ref.dtype)) | (q[None, :] < 0)
    idx = np.arange(t)
    last = np.maximum.accumulate(np.where(match, -1, idx[None, :]), axis=1)  # last mismatch <= m
    nxt = np.minimum.accumulate(np.where(match, t, idx[None, :])[:, ::-1], axis=1)[:, ::-1]  # next >= m
    left = np.zeros((n, t + 1), dtype=np.int32)
    left[:, 1:] = idx[None, :] - last  # run ending at marker b - 1
    right = np.zeros((n, t + 1), dtype=np.int32)
    right[:, :t] = nxt - idx[None, :]  # run starting at marker b
    return left, right


def pbwt_donors_reference(
    ref_bits: torch.Tensor,
    query: torch.Tensor,
    exclude: torch.Tensor,
    query_ids: torch.Tensor,
    points: torch.Tensor,
    k: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brute force over every row and point (numpy): the oracle the C++ op is held to."""
    _check(ref_bits, query, points, k)
    t = query.shape[1]
    ref = unpack_bits(ref_bits.cpu(), t).numpy()
    qa = query.cpu().numpy()
    ex = exclude.cpu().numpy()
    ids = query_ids.cpu().numpy()
    pts = points.cpu().numpy()
    n_q, n_p, n = qa.shape[0], pts.shape[0], ref.shape[0]
    rows = np.full((n_q, n_p, k), -1, dtype=np.int64)
    left = np.full((n_q, n_p, k), -1, dtype=np.int32)
    right = np.full((n_q, n_p, k), -1, dtype=np.int32)
    all_rows = np.arange(n, dtype=np.int64)
    for q in range(n_q):
        lr, rr = _runs_at_boundaries(ref, qa[q])
        ok = np.ones(n, dtype=bool)
        bad = ex[q][(ex[q] >= 0) & (ex[q] < n)]
        ok[bad] = False
        cand = all_rows[ok]
        for p, b in enumerate(pts):
            score = lr[cand, b].astype(np.int64) + rr[cand, b]
            h = tie_hash(int(seed), int(ids[q]), int(b), cand)
            order = np.lexsort((cand, h, -score))[:k]
            m = order.shape[0]
            rows[q, p, :m] = cand[order]
            left[q, p, :m] = lr[cand[order], b]
            right[q, p, :m] = rr[cand[order], b]
    return torch.from_numpy(rows), torch.from_numpy(left), torch.from_numpy(right)


def match_runs_reference(
    ref_bits: torch.Tensor, query: torch.Tensor, rows: torch.Tensor, bounds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force ``left``/``right`` int32 ``[Q, R]`` of each (query, row, boundary); -1 where row < 0."""
    t = query.shape[1]
    ref = unpack_bits(ref_bits.cpu(), t).numpy()
    qa, rw, bd = query.cpu().numpy(), rows.cpu().numpy(), bounds.cpu().numpy()
    left = np.full(rw.shape, -1, dtype=np.int32)
    right = np.full(rw.shape, -1, dtype=np.int32)
    for q in range(qa.shape[0]):
        use = rw[q] >= 0
        if not use.any():
            continue
        u = np.unique(rw[q][use])
        lr, rr = _runs_at_boundaries(ref[u], qa[q])
        pos = np.searchsorted(u, rw[q][use])
        left[q, use] = lr[pos, bd[q][use]]
        right[q, use] = rr[pos, bd[q][use]]
    return torch.from_numpy(left), torch.from_numpy(right)


# ----------------------------------------------------------------------------- the op


def _fallback_donors(ref_bits, query, exclude, query_ids, points, k, seed):
    _ext.warn_fallback("pbwt_donors")
    return pbwt_donors_reference(ref_bits, query, exclude, query_ids, points, k, seed)


def _fallback_runs(ref_bits, query, rows, bounds):
    _ext.warn_fallback("match_runs")
    return match_runs_reference(ref_bits, query, rows, bounds)


def _register() -> bool:
    """Define the schemas where ``_C`` did not, with the references as CPU kernels; True if C++."""
    cpp = _ext.has_kernel("pbwt_donors", "CPU")
    if not hasattr(torch.ops.vcfbert_fast, "pbwt_donors"):
        torch.library.define(
            "vcfbert_fast::pbwt_donors",
            "(Tensor ref_bits, Tensor query, Tensor exclude, Tensor query_ids, Tensor points, int k, int seed)"
            " -> (Tensor, Tensor, Tensor)",
        )
        torch.library.define(
            "vcfbert_fast::match_runs", "(Tensor ref_bits, Tensor query, Tensor rows, Tensor bounds) -> (Tensor, Tensor)"
        )
    if not cpp:
        torch.library.register_kernel("vcfbert_fast::pbwt_donors", "cpu", _fallback_donors)
        torch.library.register_kernel("vcfbert_fast::match_runs", "cpu", _fallback_runs)
    return cpp


_CPP = _register()


def pbwt_backend() -> str:
    """Which implementation the ops take (they run on the CPU; their inputs are small bit arrays)."""
    return "cpp" if _CPP else "numpy-reference"


def _as_query(query) -> torch.Tensor:
    q = torch.as_tensor(query)
    if q.dtype != torch.int8:
        if q.numel() and (int(q.min()) < -1 or int(q.max()) > 1):
            raise ValueError("pbwt_donors: query alleles must be 0, 1 or -1 (missing)")
        q = q.to(torch.int8)
    return q.cpu().contiguous()


def pbwt_donors(
    ref_bits: torch.Tensor,
    query,
    points,
    k: int,
    exclude=None,
    query_ids=None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best donors of every query at every point: ``(rows, left, right)`` (module doc).

    ``exclude`` int ``[Q, E]`` or None; ``query_ids`` ``[Q]`` (default ``0..Q-1``) seed the tie-break
    draw together with ``seed``: give a query the same id on every call to get the same draw.
    """
    q = _as_query(query)
    ref_bits = torch.as_tensor(ref_bits).cpu().contiguous()
    pts = torch.as_tensor(points, dtype=torch.int64).reshape(-1).cpu().contiguous()
    _check(ref_bits, q, pts, int(k))
    n_q = q.shape[0]
    ex = (
        torch.full((n_q, 0), -1, dtype=torch.int64)
        if exclude is None
        else torch.as_tensor(exclude, dtype=torch.int64).reshape(n_q, -1).cpu().contiguous()
    )
    ids = (
        torch.arange(n_q, dtype=torch.int64)
        if query_ids is None
        else torch.as_tensor(query_ids, dtype=torch.int64).reshape(-1).cpu().contiguous()
    )
    if ids.shape[0] != n_q:
        raise ValueError(f"pbwt_donors: {ids.shape[0]} query ids for {n_q} queries")
    return torch.ops.vcfbert_fast.pbwt_donors(ref_bits, q, ex, ids, pts, int(k), int(seed))


def match_runs(ref_bits: torch.Tensor, query, rows, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """``left``/``right`` int32 ``[Q, R]`` of each (query ``q``, row ``rows[q, i]``, boundary ``bounds[q, i]``)."""
    q = _as_query(query)
    rows = torch.as_tensor(rows, dtype=torch.int64).cpu().contiguous()
    bounds = torch.as_tensor(bounds, dtype=torch.int64).cpu().contiguous()
    return torch.ops.vcfbert_fast.match_runs(torch.as_tensor(ref_bits).cpu().contiguous(), q, rows, bounds)


def pack_markers(alleles: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Panel alleles at the typed markers ``[N, T]`` (0/1) -> ``ref_bits`` int64 ``[N, W]``."""
    return pack_bits(torch.as_tensor(np.ascontiguousarray(alleles)))
