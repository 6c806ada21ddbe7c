"""Triton weighted-Hamming top-K search over bit-packed haplotypes: the CUDA kernel of
``torch.ops.vcfbert_fast.hamming_topk`` (registered by :mod:`vcfbert_fast.ops.hamming`, which holds
the contract, the argument checks, the torch reference and the weight cache).

Arguments: ``query_bits`` int64 ``[Q, W]``, ``ref_bits`` int64 ``[N, W]``, ``weights`` None or
int32 ``[W*64]`` non-negative, ``1 <= k <= min(N, MAX_K)``; returns ``(dist int64 [Q, k],
index int64 [Q, k])``, ascending, ties broken by the lowest reference index.

How: each program takes a tile of ``BQ`` queries x ``BN`` references, accumulates exact
integer distances word by word (popcount of the XOR; weighted: popcount of the XOR ANDed
with each bit plane of the integer weights, shifted by the plane's bit; all-zero planes are
skipped, so 16-bit weights cost 16 popcounts per word), packs
``key = dist << IDX_BITS | index`` so that one int64 ``min`` orders by (dist, index) exactly,
and writes only its ``k`` smallest keys. Nothing syncs with the host (CUDA-graph friendly). A
second tiny kernel merges the per-tile candidates (``Q x ceil(N/BN) x k`` keys, never the full
``[Q, N]`` matrix) and decodes them. Popcount uses the portable SWAR bit trick on uint64: it runs
in the interpreter too and LLVM folds it into the hardware ``popc.b64`` on NVIDIA GPUs (verified
by compiling for sm_90).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vcfbert_fast.ops.hamming import WEIGHT_CACHE, check_args
from vcfbert_fast.ops.triton import HAMMING_MAX_K as MAX_K
from vcfbert_fast.ops.triton import interpret_mode

_BQ = 16
_BN = 32
_SELECT_MAX_BLOCK = 2048


@triton.jit
def _popcount64(x):
    # SWAR popcount on uint64 (logical shifts): runs in the interpreter, and LLVM recognises
    # the exact pattern and emits one hardware popc.b64 on NVIDIA GPUs (checked in the PTX).
    v = x.to(tl.uint64, bitcast=True)
    v = v - ((v >> 1) & 0x5555555555555555)
    v = (v & 0x3333333333333333) + ((v >> 2) & 0x3333333333333333)
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((v * 0x0101010101010101) >> 56).to(tl.int64, bitcast=True)


@triton.jit
def _hamming_block_topk_kernel(
    q_ptr,
    r_ptr,
    planes_ptr,
    keys_ptr,
    Q,
    N,
    W,
    NPLANES,
    KEYS_PER_ROW,
    K: tl.constexpr,
    IDX_BITS: tl.constexpr,
    WEIGHTED: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
):
    pid_n = tl.program_id(0)  # reference blocks on axis 0 (up to 2**31 - 1), queries on axis 1
    pid_q = tl.program_id(1)
    rows = (pid_q * BQ + tl.arange(0, BQ)).to(tl.int64)
    cols = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    rmask = rows < Q
    cmask = cols < N
    acc = tl.zeros([BQ, BN], dtype=tl.int64)
    for w in range(W):
        qw = tl.load(q_ptr + rows * W + w, mask=rmask, other=0)
        rw = tl.load(r_ptr + cols * W + w, mask=cmask, other=0)
        x = qw[:, None] ^ rw[None, :]
        if WEIGHTED:
            for b in range(NPLANES):
                plane = tl.load(planes_ptr + b * W + w)
                if plane != 0:  # uniform branch: high planes of small weights cost one load
                    acc += _popcount64(x & plane) << b
        else:
            acc += _popcount64(x)
    keys = (acc << IDX_BITS) | cols[None, :]
    keys = tl.where(cmask[None, :], keys, 9223372036854775807)
    out = keys_ptr + rows * KEYS_PER_ROW + pid_n * K
    for i in tl.static_range(K):
        m = tl.min(keys, axis=1)
        tl.store(out + i, m, mask=rmask)
        # keys are unique (they carry the index), so this removes exactly one per row
        keys = tl.where(keys == m[:, None], 9223372036854775807, keys)


@triton.jit
def _select_kernel(
    keys_in,
    M,
    keys_out,
    dist_out,
    idx_out,
    KEYS_OUT_PER_ROW,
    K: tl.constexpr,
    IDX_BITS: tl.constexpr,
    BM: tl.constexpr,
    FINAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    offs = blk * BM + tl.arange(0, BM)
    keys = tl.load(keys_in + row * M + offs, mask=offs < M, other=9223372036854775807)
    for i in tl.static_range(K):
        m = tl.min(keys, axis=0)
        if FINAL:
            tl.store(dist_out + row * K + i, m >> IDX_BITS)
            tl.store(idx_out + row * K + i, m & ((1 << IDX_BITS) - 1))
        else:
            tl.store(keys_out + row * KEYS_OUT_PER_ROW + blk * K + i, m)
        keys = tl.where(keys == m, 9223372036854775807, keys)


# ----------------------------------------------------------------------------- weights

N_PLANES = 31  # non-negative int32 weights use bits 0..30


@triton.jit
def _planes_kernel(w_ptr, planes_ptr, W, NP: tl.constexpr):
    # planes[b, word] packs bit b of the 64 weights of that word, site l at bit l % 64
    word = tl.program_id(0)
    pos = tl.arange(0, 64).to(tl.int64)
    wv = tl.load(w_ptr + word * 64 + pos).to(tl.int64)
    for b in tl.static_range(NP):
        # distinct powers of two: the (wrapping) int64 sum is a bitwise OR
        tl.store(planes_ptr + b * W + word, tl.sum(((wv >> b) & 1) << pos, axis=0))


def weight_planes(weights: torch.Tensor, n_words: int) -> torch.Tensor:
    """Bit planes of the integer site weights, ``planes[b, w]`` = bit ``b`` of the weights in
    word ``w`` (int64 ``[N_PLANES, W]``): one launch, no host sync. Negative weights fail an
    (asynchronous on CUDA) assertion."""
    torch._assert_async((weights >= 0).all(), "hamming_topk: weights must be non-negative")
    planes = torch.empty((N_PLANES, n_words), dtype=torch.int64, device=weights.device)
    _planes_kernel[(n_words,)](weights.contiguous(), planes, n_words, NP=N_PLANES)
    return planes


def _launch(query_bits, ref_bits, weights, k):
    """Run the two-stage Triton search; inputs already checked."""
    q = query_bits.contiguous()
    r = ref_bits.contiguous()
    n_q, n_words = q.shape
    n_ref = r.shape[0]
    dist = torch.empty((n_q, k), dtype=torch.int64, device=q.device)
    index = torch.empty((n_q, k), dtype=torch.int64, device=q.device)
    if n_q == 0:
        return dist, index
    idx_bits = max(1, (n_ref - 1).bit_length())
    limit = (1 << (63 - idx_bits)) - 1  # keys dist << idx_bits | index must stay below INT64_MAX
    if weights is None:
        planes, n_planes = q, 0  # planes unused
        max_dist = n_words * 64
    else:
        planes = WEIGHT_CACHE.get(weights, ("planes", n_words), lambda: weight_planes(weights, n_words))
        n_planes = N_PLANES
        if weights.device.type == "cpu":  # interpreter: no sync to avoid, and loops cost time
            n_planes = max(1, int(weights.max()).bit_length())
        max_dist = (2**31 - 1) * n_words * 64  # static bound: no host sync in the common case
        if max_dist >= limit:
            max_dist = int(weights.to(torch.int64).sum())  # huge N: check the real bound (syncs)
    if max_dist >= limit:
        raise ValueError(
            f"hamming_topk: weights sum to {max_dist}, too large to pack with {n_ref} indices into "
            "int64 keys; quantise the weights to fewer bits"
        )
    n_blocks = triton.cdiv(n_ref, _BN)
    keys = torch.empty((n_q, n_blocks * k), dtype=torch.int64, device=q.device)
    grid = (n_blocks, triton.cdiv(n_q, _BQ))
    _hamming_block_topk_kernel[grid](
        q,
        r,
        planes,
        keys,
        n_q,
        n_ref,
        n_words,
        n_planes,
        n_blocks * k,
        K=k,
        IDX_BITS=idx_bits,
        WEIGHTED=weights is not None,
        BQ=_BQ,
        BN=_BN,
        num_warps=2,  # a 16 x 32 tile: 8 keys per thread; small tiles -> more programs in flight
    )
    # merge candidates: reduce in chunks until one block per query holds them all
    m = keys.shape[1]
    while m > _SELECT_MAX_BLOCK:
        n_out = triton.cdiv(m, _SELECT_MAX_BLOCK)
        nxt = torch.empty((n_q, n_out * k), dtype=torch.int64, device=q.device)
        _select_kernel[(n_q, n_out)](
            keys, m, nxt, dist, index, n_out * k, K=k, IDX_BITS=idx_bits, BM=_SELECT_MAX_BLOCK, FINAL=False
        )
        keys, m = nxt, n_out * k
    _select_kernel[(n_q, 1)](
        keys, m, keys, dist, index, k, K=k, IDX_BITS=idx_bits, BM=triton.next_power_of_2(m), FINAL=True
    )
    return dist, index


def hamming_topk_triton(
    query_bits: torch.Tensor, ref_bits: torch.Tensor, weights: torch.Tensor | None = None, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (weighted) Hamming top-``k`` by the Triton kernel; see the module docstring.

    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``. Callers normally go through the op
    (or :func:`vcfbert_fast.ops.hamming_topk`), which also serves ``k > MAX_K`` and CPU tensors.
    """
    check_args(query_bits, ref_bits, k, weights)
    if k > MAX_K:
        raise ValueError(f"hamming_topk: the Triton kernel takes k <= {MAX_K}, got k = {k}; use the op")
    if query_bits.device.type != "cuda" and not interpret_mode():
        raise ValueError(
            f"hamming_topk: the Triton kernel needs CUDA tensors (CPU ones only under TRITON_INTERPRET=1), "
            f"got {query_bits.device}; use the op"
        )
    return _launch(query_bits, ref_bits, weights, k)
