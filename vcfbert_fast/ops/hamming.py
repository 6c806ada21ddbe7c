"""Bit-packed (weighted) Hamming top-k search: the exact retrieval behind Embedding RAG.

Contract (every path, C++ / Triton / torch reference, gives bit-identical results):

* ``query_bits`` int64 ``[Q, W]``, ``ref_bits`` int64 ``[N, W]``: sites packed 64 per word, site
  ``l`` at bit ``l % 64`` of word ``l // 64`` (little-endian); padding bits are zero
  (:func:`pack_bits` does this).
* ``weights``: None (every site weighs 1) or a non-negative per-site vector ``[L]`` with
  ``L <= W*64`` (zero-padded to ``W*64``). Float weights are quantised once:
  ``w_int = round(w / max(w) * 2**15)`` and distances are scaled back by ``max(w) / 2**15``, so
  the integer kernels agree exactly; the quantisation error of a distance is below
  ``L * max(w) / 2**16``. Integer weights (an int dtype) are used as given (scale 1).
  Callers that search many times with one weight vector pass int32 ``[W*64]`` weights quantised
  once (:func:`quantize_weights`): they reach the kernel as the same tensor, without a copy or a
  host sync, so the Triton kernel's weight-plane cache hits. Float weights are also quantised
  once per tensor (cached by identity and version counter), for the same reason.
* ``dist[q, j] = sum_l w_l * (bit_l(q) XOR bit_l(r_j))`` computed exactly in int64; returned as
  float32 ``[Q, k]`` (after scaling) with ``index`` int64 ``[Q, k]``: the ``k`` nearest
  references, ascending, **ties broken by the lowest reference index**. ``1 <= k <= N``.

The integer kernels (``torch.ops.vcfbert_fast.hamming_topk`` on CPU,
``vcfbert_fast.ops.triton.hamming_topk.hamming_topk_triton`` on CUDA) take int32 ``[W*64]`` weights
or None and return ``(dist int64 [Q, k], index int64 [Q, k])``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np
import torch

from .. import _ext

WEIGHT_BITS = 15  # quantised weights are <= 2**15, so W*64 sites * 2**15 stays far inside int64


def pack_bits(alleles: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pack 0/1 alleles ``[..., L]`` (uint8/bool/int) into int64 words ``[..., ceil(L/64)]``.

    Site ``l`` goes to bit ``l % 64`` of word ``l // 64``; padding bits are zero. Values other
    than 0/1 are rejected (a MASK or missing token must be cleared by the caller, not packed).
    """
    a = torch.as_tensor(alleles)
    if a.dtype != torch.bool and a.numel() and bool(((a != 0) & (a != 1)).any()):
        raise ValueError("pack_bits: alleles must be 0/1; clear masked or missing sites before packing")
    a = a.to(torch.int64)
    n_sites = a.shape[-1]
    n_words = (n_sites + 63) // 64
    if n_words * 64 != n_sites:
        a = torch.nn.functional.pad(a, (0, n_words * 64 - n_sites))
    a = a.reshape(*a.shape[:-1], n_words, 2, 32)
    # Two 32-bit halves, each summed without overflow, then joined: bit 63 becomes the sign bit.
    shifts = torch.arange(32, device=a.device, dtype=torch.int64)
    halves = (a << shifts).sum(-1)
    return halves[..., 0] | (halves[..., 1] << 32)


def unpack_bits(bits: torch.Tensor, n_sites: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: int64 ``[..., W]`` -> uint8 ``[..., n_sites or W*64]``."""
    shifts = torch.arange(64, device=bits.device, dtype=torch.int64)
    out = ((bits.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).flatten(-2)
    return out if n_sites is None else out[..., :n_sites]


_QUANT_CACHE: OrderedDict = OrderedDict()  # (id, n_words) -> (weakref, version, (w_int, scale))
_QUANT_CACHE_SIZE = 8


def quantize_weights(
    weights: torch.Tensor | np.ndarray | None, n_words: int
) -> tuple[torch.Tensor | None, float]:
    """Weights ``[L]`` -> (int32 ``[n_words*64]`` or None, scale) as described in the module doc.

    int32 ``[n_words*64]`` contiguous weights come back AS GIVEN (no copy; on CUDA no host sync:
    the Triton kernel checks non-negativity asynchronously). A float (or other) tensor is
    quantised once and the result reused while the same tensor is passed unmodified.
    """
    if weights is None:
        return None, 1.0
    if (
        isinstance(weights, torch.Tensor)
        and weights.dtype == torch.int32
        and weights.shape == (n_words * 64,)
        and weights.is_contiguous()
    ):
        if not weights.is_cuda and weights.numel() and bool((weights < 0).any()):
            raise ValueError("hamming_topk: weights must be non-negative")
        return weights, 1.0
    if not isinstance(weights, torch.Tensor):
        return _quantize(torch.as_tensor(weights), n_words)
    key = (id(weights), n_words)
    hit = _QUANT_CACHE.get(key)
    if hit is not None and hit[0]() is weights and hit[1] == weights._version:
        _QUANT_CACHE.move_to_end(key)
        return hit[2]
    out = _quantize(weights, n_words)
    _QUANT_CACHE[key] = (weakref.ref(weights), weights._version, out)
    while len(_QUANT_CACHE) > _QUANT_CACHE_SIZE:
        _QUANT_CACHE.popitem(last=False)
    return out


def _quantize(w: torch.Tensor, n_words: int) -> tuple[torch.Tensor, float]:
    if w.dim() != 1 or w.shape[0] > n_words * 64:
        raise ValueError(
            f"hamming_topk: weights must be 1-D with at most W*64 = {n_words * 64} entries, "
            f"got shape {tuple(w.shape)}"
        )
    if w.numel() and bool((w < 0).any()):
        raise ValueError("hamming_topk: weights must be non-negative")
    if not torch.is_floating_point(w):
        if w.numel() and int(w.max()) >= 2**31:
            raise ValueError("hamming_topk: integer weights must fit in int32")
        w_int, scale = w.to(torch.int32), 1.0
    else:
        wmax = float(w.max()) if w.numel() else 0.0
        if not np.isfinite(wmax):
            raise ValueError("hamming_topk: weights must be finite")
        if wmax == 0.0:
            w_int, scale = torch.zeros(w.shape, dtype=torch.int32, device=w.device), 1.0
        else:
            w_int = torch.round(w.double() / wmax * 2**WEIGHT_BITS).to(torch.int32)
            scale = wmax / 2**WEIGHT_BITS
    if w_int.shape[0] < n_words * 64:
        w_int = torch.nn.functional.pad(w_int, (0, n_words * 64 - w_int.shape[0]))
    return w_int.contiguous(), scale


def hamming_topk_reference_int(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, weights: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch integer kernel: same arguments and results as the C++/Triton ops.

    Distances via float64 matrix products of unpacked bits (exact: every partial sum is an
    integer far below 2**53), a stable sort for the lowest-index tie-break, chunked over queries
    so memory stays ~Qc x N.
    """
    _check_bits(query_bits, ref_bits, k)
    n_ref = ref_bits.shape[0]
    r = unpack_bits(ref_bits).double()  # [N, L]
    w = torch.ones(r.shape[1], dtype=torch.float64, device=r.device) if weights is None else weights.double()
    r_w = r * w  # weight of each set reference bit
    r_not_w = (1.0 - r) * w
    chunk = max(1, (1 << 22) // max(1, n_ref))
    dists, idxs = [], []
    for start in range(0, query_bits.shape[0], chunk):
        q = unpack_bits(query_bits[start : start + chunk]).double()
        # sum_l w_l [q_l != r_l] = q . (w * (1 - r)) + (1 - q) . (w * r)
        d = (q @ r_not_w.T + (1.0 - q) @ r_w.T).round().to(torch.int64)
        order = torch.sort(d, dim=1, stable=True).indices[:, :k]
        dists.append(torch.gather(d, 1, order))
        idxs.append(order)
    if not dists:
        empty = torch.empty((0, k), dtype=torch.int64, device=query_bits.device)
        return empty, empty.clone()
    return torch.cat(dists), torch.cat(idxs)


def _check_bits(query_bits: torch.Tensor, ref_bits: torch.Tensor, k: int) -> None:
    if query_bits.dim() != 2 or ref_bits.dim() != 2:
        raise ValueError(
            f"hamming_topk: query_bits [Q, W] and ref_bits [N, W] must be 2-D, got "
            f"{tuple(query_bits.shape)} and {tuple(ref_bits.shape)}; pack alleles with pack_bits"
        )
    if query_bits.dtype != torch.int64 or ref_bits.dtype != torch.int64:
        raise ValueError(
            f"hamming_topk: bit-packed words must be int64, got {query_bits.dtype} and {ref_bits.dtype}"
        )
    if query_bits.shape[1] != ref_bits.shape[1]:
        raise ValueError(
            f"hamming_topk: query_bits has {query_bits.shape[1]} words per row but ref_bits has "
            f"{ref_bits.shape[1]}; pack both over the same sites"
        )
    if query_bits.device != ref_bits.device:
        raise ValueError(f"hamming_topk: query_bits on {query_bits.device} but ref_bits on {ref_bits.device}")
    if not 1 <= k <= ref_bits.shape[0]:
        raise ValueError(
            f"hamming_topk: k = {k} must lie in [1, N] with N = {ref_bits.shape[0]} reference rows; "
            "lower k or add references"
        )


def _triton_kernel():
    try:
        from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton
    except Exception:  # noqa: BLE001 - no Triton / no kernel: the reference serves
        return None
    return hamming_topk_triton


def _triton_max_k() -> int:
    import vcfbert_fast.ops.triton.hamming_topk as mod

    return int(getattr(mod, "MAX_K", 1 << 62))


def hamming_backend(device: torch.device | str) -> str:
    """Which implementation :func:`hamming_topk` uses for tensors on ``device``."""
    if torch.device(device).type == "cuda":
        return "triton" if _triton_kernel() is not None else "torch-reference"
    return "cpp" if _ext.HAS_EXT else "torch-reference"


def _scale(dist: torch.Tensor, scale: float) -> torch.Tensor:
    d = dist.to(torch.int64)
    return (d.double() * scale).float() if scale != 1.0 else d.float()


def hamming_topk(
    query_bits: torch.Tensor,
    ref_bits: torch.Tensor,
    weights: torch.Tensor | np.ndarray | None = None,
    k: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest references per query: ``(dist float32 [Q, k], index int64 [Q, k])``.

    Picks the C++ op (CPU), the Triton kernel (CUDA) or the torch reference; see the module doc
    for the exact contract.
    """
    _check_bits(query_bits, ref_bits, k)
    w_int, scale = quantize_weights(weights, query_bits.shape[1])
    if w_int is not None:
        w_int = w_int.to(query_bits.device)
    backend = hamming_backend(query_bits.device)
    if backend == "cpp":
        dist, index = torch.ops.vcfbert_fast.hamming_topk(query_bits, ref_bits, w_int, k)
    elif backend == "triton" and k <= _triton_max_k():
        dist, index = _triton_kernel()(query_bits, ref_bits, w_int, k)
    else:
        if query_bits.device.type == "cpu":
            _ext.warn_fallback("hamming_topk")
        dist, index = hamming_topk_reference_int(query_bits, ref_bits, w_int, k)
    return _scale(dist, scale), index.to(torch.int64)


def hamming_topk_reference(
    query_bits: torch.Tensor,
    ref_bits: torch.Tensor,
    weights: torch.Tensor | np.ndarray | None = None,
    k: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hamming_topk` computed by the plain torch reference only (same quantisation)."""
    _check_bits(query_bits, ref_bits, k)
    w_int, scale = quantize_weights(weights, query_bits.shape[1])
    if w_int is not None:
        w_int = w_int.to(query_bits.device)
    dist, index = hamming_topk_reference_int(query_bits, ref_bits, w_int, k)
    return _scale(dist, scale), index
