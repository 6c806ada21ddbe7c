"""Bit-packed (weighted) Hamming top-k search: the exact retrieval behind Embedding RAG.

Contract (every path, C++ / Triton / torch reference, gives bit-identical results):

* ``query_bits`` int64 ``[Q, W]``, ``ref_bits`` int64 ``[N, W]``: sites packed 64 per word, site
  ``l`` at bit ``l % 64`` of word ``l // 64`` (little-endian); padding bits are zero
  (:func:`pack_bits` does this).
* ``weights``: None (every site weighs 1) or a non-negative per-site vector ``[L]`` with
  ``L <= W*64`` (zero-padded to ``W*64``). Float weights are quantised once:
  ``w_int = round(w / max(w) * 2**WEIGHT_BITS)`` and distances are scaled back by
  ``max(w) / 2**WEIGHT_BITS``, so the integer kernels agree exactly; the quantisation error of a
  distance is below ``L * max(w) / 2**(WEIGHT_BITS + 1)``. Integer weights (an int dtype) are used
  as given (scale 1). Callers that search many times with one weight vector pass int32 ``[W*64]``
  weights quantised once (:func:`quantize_weights`): they reach the kernel as the same tensor,
  without a copy or a host sync, so the Triton kernel's weight planes come from the cache.
* ``dist[q, j] = sum_l w_l * (bit_l(q) XOR bit_l(r_j))`` computed exactly in int64; returned as
  float32 ``[Q, k]`` (after scaling) with ``index`` int64 ``[Q, k]``: the ``k`` nearest
  references, ascending, **ties broken by the lowest reference index**. ``1 <= k <= N``.

One op does the integer search, ``torch.ops.vcfbert_fast.hamming_topk(query_bits, ref_bits,
weights, k)`` (int32 ``[W*64]`` weights or None -> ``(dist int64 [Q, k], index int64 [Q, k])``),
and dispatches by device, the torchvision way: the C++ kernel on CPU (csrc/cpu), the Triton kernel
(:mod:`vcfbert_fast.ops.triton.hamming_topk`) on CUDA, registered here. Where the extension is
absent this module defines the schema and the torch reference is the CPU kernel; on CUDA the
reference serves where Triton is absent or ``k > HAMMING_MAX_K``. A fake impl lets
``torch.compile`` trace it. Bad arguments raise ValueError on every path.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from .. import _ext
from .triton import HAMMING_MAX_K

WEIGHT_BITS = 15  # quantised weights are <= 2**15, so W*64 sites * 2**15 stays far inside int64
_OP = "vcfbert_fast::hamming_topk"
_SCHEMA = "(Tensor query_bits, Tensor ref_bits, Tensor? weights, int k) -> (Tensor, Tensor)"
Weights = torch.Tensor | np.ndarray | None  # per-site weights as callers pass them (module doc)


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


class TensorCache:
    """Values derived from a tensor, reused while the same tensor object is passed unmodified.

    Weights change once per refresh, queries every batch: keyed by identity plus the version
    counter (an in-place edit invalidates), least recently used evicted first, no host sync.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()  # (id, key) -> (weakref, version, value)

    def get(self, tensor: torch.Tensor, key, build: Callable[[], object]):
        slot = (id(tensor), key)
        hit = self._entries.get(slot)
        if hit is not None and hit[0]() is tensor and hit[1] == tensor._version:
            self._entries.move_to_end(slot)
            return hit[2]
        value = build()
        self._entries[slot] = (weakref.ref(tensor), tensor._version, value)
        self._entries.move_to_end(slot)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


# The one weight cache: quantised float weights here, the Triton kernel's weight bit planes there;
# a few windows' worth of each (batches interleave windows).
WEIGHT_CACHE = TensorCache(16)


def quantize_weights(
    weights: Weights, n_words: int, *, cache: bool = True
) -> tuple[torch.Tensor | None, float]:
    """Weights ``[L]`` -> (int32 ``[n_words*64]`` or None, scale) as described in the module doc.

    int32 ``[n_words*64]`` contiguous weights come back AS GIVEN (no copy, no host sync; the
    kernels check them). Other weights are quantised; with ``cache`` the result is reused while
    the same tensor is passed unmodified (callers that keep their own cache pass ``cache=False``).
    """
    if weights is None:
        return None, 1.0
    if (
        isinstance(weights, torch.Tensor)
        and weights.dtype == torch.int32
        and weights.shape == (n_words * 64,)
        and weights.is_contiguous()
    ):
        return weights, 1.0
    if not isinstance(weights, torch.Tensor):
        return _quantize(torch.as_tensor(weights), n_words)
    if not cache:
        return _quantize(weights, n_words)
    return WEIGHT_CACHE.get(weights, ("quantised", n_words), lambda: _quantize(weights, n_words))


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


def check_args(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, k: int, weights: torch.Tensor | None = None
) -> None:
    """The op's argument checks (shapes, dtypes, devices, k; int32 ``[W*64]`` weights), all ValueError.

    Metadata only (no host sync; works on fake tensors). Weight values are checked by each
    kernel: the C++ and reference kernels raise on a negative weight, Triton asserts asynchronously.
    """
    if query_bits.dim() != 2 or ref_bits.dim() != 2:
        raise ValueError(
            f"hamming_topk: query_bits [Q, W] and ref_bits [N, W] must be 2-D, got "
            f"{list(query_bits.shape)} and {list(ref_bits.shape)}; pack alleles with pack_bits"
        )
    if query_bits.dtype != torch.int64 or ref_bits.dtype != torch.int64:
        raise ValueError(
            f"hamming_topk: bit-packed words must be int64, got {query_bits.dtype} and {ref_bits.dtype}"
        )
    n_words = query_bits.shape[1]
    if n_words != ref_bits.shape[1]:
        raise ValueError(
            f"hamming_topk: query_bits has {n_words} words per row but ref_bits has "
            f"{ref_bits.shape[1]}; pack both over the same sites"
        )
    if query_bits.device != ref_bits.device:
        raise ValueError(f"hamming_topk: query_bits on {query_bits.device} but ref_bits on {ref_bits.device}")
    if not 1 <= k <= ref_bits.shape[0]:
        raise ValueError(
            f"hamming_topk: k = {k} must lie in [1, N] with N = {ref_bits.shape[0]} reference rows; "
            "lower k or add references"
        )
    if weights is not None:
        if weights.dtype != torch.int32 or tuple(weights.shape) != (n_words * 64,):
            raise ValueError(
                f"hamming_topk: weights must be int32 [W * 64] = [{n_words * 64}] (one per bit, "
                f"zero-padded), got {weights.dtype} {list(weights.shape)}; quantise them with "
                "quantize_weights"
            )
        if weights.device != query_bits.device:
            raise ValueError(f"hamming_topk: weights on {weights.device} but the bits on {query_bits.device}")


def hamming_topk_reference_int(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, weights: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch reference of the op: same arguments and results as the C++ and Triton kernels.

    Distances via float64 matrix products of unpacked bits (exact while every distance is below
    2**53, i.e. ``W*64 * max(w) < 2**53``: any window with int32 weights), a stable sort for the
    lowest-index tie-break, chunked over queries so memory stays ~Qc x N.
    """
    check_args(query_bits, ref_bits, k, weights)
    if weights is not None and bool((weights < 0).any()):
        raise ValueError("hamming_topk: weights must be non-negative, got a negative one")
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


# ----------------------------------------------------------------------------- the op, per device


@functools.cache
def _triton_kernel() -> Callable | None:
    """The Triton launcher, or None where Triton (or the kernel) cannot be imported."""
    try:
        from .triton.hamming_topk import hamming_topk_triton
    except Exception:  # noqa: BLE001 - no Triton / no kernel: the reference serves
        return None
    return hamming_topk_triton


def _cuda_kernel(query_bits, ref_bits, weights, k):
    """The op's CUDA kernel: Triton for ``k <= HAMMING_MAX_K``, else (or without Triton) the reference."""
    launch = _triton_kernel()
    if launch is None or k > HAMMING_MAX_K:
        return hamming_topk_reference_int(query_bits, ref_bits, weights, k)
    return launch(query_bits, ref_bits, weights, k)


def _cpu_fallback_kernel(query_bits, ref_bits, weights, k):
    """The op's CPU kernel where the C++ extension is absent: the torch reference (said once)."""
    _ext.warn_fallback("hamming_topk")
    return hamming_topk_reference_int(query_bits, ref_bits, weights, k)


def _fake(query_bits, ref_bits, weights, k):
    check_args(query_bits, ref_bits, k, weights)
    shape = (query_bits.shape[0], k)
    return query_bits.new_empty(shape), query_bits.new_empty(shape)


def _register() -> bool:
    """Register the op's Python pieces once; True when its CPU kernel is the C++ one."""
    if not hasattr(torch.ops.vcfbert_fast, "hamming_topk"):  # no extension: the schema lives here
        torch.library.define(_OP, _SCHEMA)
    cpp = _ext.has_kernel("hamming_topk", "CPU")
    if not cpp:
        torch.library.register_kernel(_OP, "cpu", _cpu_fallback_kernel)
    torch.library.register_kernel(_OP, "cuda", _cuda_kernel)
    torch.library.register_fake(_OP, _fake)
    return cpp


_CPP_ON_CPU = _register()


def hamming_backend(device: torch.device | str) -> str:
    """Which implementation the op takes for tensors on ``device`` (on CUDA: for
    ``k <= HAMMING_MAX_K``; the torch reference serves larger ``k``)."""
    if torch.device(device).type == "cuda":
        return "triton" if _triton_kernel() is not None else "torch-reference"
    return "cpp" if _CPP_ON_CPU else "torch-reference"


# ----------------------------------------------------------------------------- float API


def _scale(dist: torch.Tensor, scale: float) -> torch.Tensor:
    return (dist.double() * scale).float() if scale != 1.0 else dist.float()


def _run_op(query_bits, ref_bits, weights, k):
    if query_bits.is_cuda and not torch.compiler.is_compiling():
        # eager CUDA: the op's CUDA kernel without the dispatcher round trip (tens of microseconds
        # against a ~10 us search); traced code goes through the op
        return _cuda_kernel(query_bits, ref_bits, weights, k)
    return torch.ops.vcfbert_fast.hamming_topk(query_bits, ref_bits, weights, k)


def _search(query_bits, ref_bits, weights, k, kernel) -> tuple[torch.Tensor, torch.Tensor]:
    check_args(query_bits, ref_bits, k)
    w_int, scale = quantize_weights(weights, query_bits.shape[1])
    if w_int is not None:
        w_int = w_int.to(query_bits.device)
    dist, index = kernel(query_bits, ref_bits, w_int, k)
    return _scale(dist, scale), index


def hamming_topk(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, weights: Weights = None, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest references per query: ``(dist float32 [Q, k], index int64 [Q, k])``.

    Quantises the weights and runs the op on the bits' device; see the module doc for the contract.
    """
    return _search(query_bits, ref_bits, weights, k, _run_op)


def hamming_topk_reference(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, weights: Weights = None, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hamming_topk` computed by the torch reference (same quantisation)."""
    return _search(query_bits, ref_bits, weights, k, hamming_topk_reference_int)
