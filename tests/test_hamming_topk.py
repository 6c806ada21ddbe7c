"""hamming_topk: the op (C++ on CPU; the torch reference where the extension is absent) vs the torch
reference vs brute-force numpy on unpacked alleles, ties included; registration, checks, weight cache.

Inputs come from the ``rng`` fixture (the root conftest's printed per-test seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcfbert_fast import _ext
from vcfbert_fast.ops import (
    hamming_backend,
    hamming_topk,
    hamming_topk_reference,
    pack_bits,
    quantize_weights,
    unpack_bits,
)
from vcfbert_fast.ops.hamming import WEIGHT_BITS, TensorCache, check_args, hamming_topk_reference_int

OP = torch.ops.vcfbert_fast.hamming_topk


def brute_force(q_alleles: np.ndarray, r_alleles: np.ndarray, w: np.ndarray | None, k: int):
    """Independent expectation: integer distances on unpacked alleles, lexsort on (dist, index)."""
    w = np.ones(q_alleles.shape[1], dtype=np.int64) if w is None else w.astype(np.int64)
    d = ((q_alleles[:, None, :] != r_alleles[None, :, :]).astype(np.int64) * w).sum(-1)
    idx = np.stack([np.lexsort((np.arange(d.shape[1]), row))[:k] for row in d])
    return np.take_along_axis(d, idx, 1), idx


def _panel(rng, n_q, n_ref, n_sites, dup=True):
    r = rng.integers(0, 2, (n_ref, n_sites)).astype(np.uint8)
    if dup and n_ref > 6:
        r[5] = r[1]  # exact duplicates force ties at every distance
        r[n_ref - 1] = r[1]
    q = rng.integers(0, 2, (n_q, n_sites)).astype(np.uint8)
    q[0] = r[1]  # distance-0 ties: 1, 5, N-1 in that order
    return q, r


def _int_weights(rng, n_sites):
    w = rng.integers(0, 2**15 + 1, n_sites).astype(np.int32)
    w[: n_sites // 4] = 0  # an all-zero-weight region: mismatches there cost nothing
    return w


def test_pack_unpack_roundtrip_and_layout(rng):
    n_sites = int(rng.integers(1, 300))
    a = rng.integers(0, 2, (3, n_sites)).astype(np.uint8)
    bits = pack_bits(a)
    assert bits.dtype == torch.int64 and bits.shape == (3, (n_sites + 63) // 64)
    assert torch.equal(unpack_bits(bits, n_sites), torch.from_numpy(a))
    # site l at bit l % 64 of word l // 64; bit 63 is the sign bit
    one = np.zeros((1, 130), dtype=np.uint8)
    one[0, 63] = one[0, 64] = one[0, 129] = 1
    b = pack_bits(one)
    assert b[0, 0].item() == -(2**63) and b[0, 1].item() == 1 and b[0, 2].item() == 2
    assert unpack_bits(b)[0, 130:].sum() == 0  # zero padding
    with pytest.raises(ValueError, match="0/1"):
        pack_bits(np.array([[0, 4, 1]]))


@pytest.mark.parametrize("k", [1, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_reference_matches_brute_force(k, weighted, rng):
    n_sites = int(rng.integers(65, 200))  # not a multiple of 64
    q, r = _panel(rng, 6, int(rng.integers(20, 90)), n_sites)
    w = _int_weights(rng, n_sites) if weighted else None
    d_exp, i_exp = brute_force(q, r, w, k)
    d, i = hamming_topk_reference(pack_bits(q), pack_bits(r), None if w is None else torch.from_numpy(w), k)
    assert np.array_equal(i.numpy(), i_exp)
    assert np.array_equal(d.numpy(), d_exp.astype(np.float32))
    assert i[0, 0].item() == 1  # tie at distance 0 goes to the lowest duplicate


@pytest.mark.parametrize("k", [1, 8, 100])
@pytest.mark.parametrize("weighted", [False, True])
def test_op_matches_reference_and_brute_force(k, weighted, rng):
    n_sites = int(rng.integers(70, 1100))
    n_ref = int(rng.integers(130, 2100))  # not a multiple of 64; > 1024 splits refs over threads
    q, r = _panel(rng, int(rng.integers(1, 12)), n_ref, n_sites)
    qb, rb = pack_bits(q), pack_bits(r)
    w_int = None
    if weighted:
        w_int, _ = quantize_weights(torch.from_numpy(_int_weights(rng, n_sites)), qb.shape[1])
    d, i = OP(qb, rb, w_int, k)
    d_ref, i_ref = hamming_topk_reference_int(qb, rb, w_int, k)
    assert d.dtype == torch.int64 and i.dtype == torch.int64 and d.shape == (q.shape[0], k)
    assert torch.equal(i, i_ref) and torch.equal(d, d_ref)
    d_bf, i_bf = brute_force(q, r, None if w_int is None else w_int.numpy()[:n_sites], k)
    assert np.array_equal(i.numpy(), i_bf) and np.array_equal(d.numpy(), d_bf)
    assert i[0, 0].item() == 1 and d[0, 0].item() == 0
    if k >= 3:
        assert i[0, :3].tolist() == [1, 5, n_ref - 1]


def test_op_all_ties_lowest_index(rng):
    # Every reference identical: any k must return 0..k-1 in order (also across thread chunks).
    r = np.tile(rng.integers(0, 2, (1, 150)).astype(np.uint8), (3000, 1))
    q = rng.integers(0, 2, (1, 150)).astype(np.uint8)
    for k in (1, 7, 64, 65, 3000):
        d, i = OP(pack_bits(q), pack_bits(r), None, k)
        assert i[0].tolist() == list(range(k))
        assert len(set(d[0].tolist())) == 1


def test_one_op_registered_for_every_device():
    """One op name: a CPU kernel (C++ where built), the Triton CUDA kernel and a fake, all on
    ``vcfbert_fast::hamming_topk``; no second op name."""
    for key in ("CPU", "CUDA", "Meta"):
        assert _ext.has_kernel("hamming_topk", key), key
    assert hamming_backend("cpu") == ("cpp" if _ext.HAS_EXT else "torch-reference")
    assert not hasattr(torch.ops.vcfbert_fast, "hamming_topk_triton")


def test_torch_compile_traces_the_op(rng):
    qb = pack_bits(rng.integers(0, 2, (4, 130)).astype(np.uint8))
    rb = pack_bits(rng.integers(0, 2, (50, 130)).astype(np.uint8))
    w, _ = quantize_weights(torch.rand(130), qb.shape[1])
    fn = torch.compile(lambda a, b, c: OP(a, b, c, 5), backend="aot_eager", fullgraph=True)
    d, i = fn(qb, rb, w)
    d_ref, i_ref = hamming_topk_reference_int(qb, rb, w, 5)
    assert torch.equal(d, d_ref) and torch.equal(i, i_ref)


def test_public_api_float_weights_identical_across_paths(rng):
    n_sites = 300
    q, r = _panel(rng, 5, 257, n_sites)
    w = torch.rand(n_sites) * 3.7
    w[10:40] = 0
    qb, rb = pack_bits(q), pack_bits(r)
    d, i = hamming_topk(qb, rb, w, k=8)
    d_ref, i_ref = hamming_topk_reference(qb, rb, w, k=8)
    assert d.dtype == torch.float32 and torch.equal(d, d_ref) and torch.equal(i, i_ref)
    # quantisation error bound: |d - exact| < L * max(w) / 2**(WEIGHT_BITS + 1)
    exact = ((torch.from_numpy(q[:, None, :] != r[None, :, :]).double()) * w.double()).sum(-1)
    picked = torch.gather(exact, 1, i)
    assert float((picked - d.double()).abs().max()) < n_sites * float(w.max()) / 2 ** (WEIGHT_BITS + 1)


def test_prequantised_int32_weights_passed_as_given_and_float_quantised_once(rng):
    """int32 [W*64] weights reach the kernel as the same tensor (no copy: the Triton plane cache
    can hit); float weights are quantised once per tensor version; results identical."""
    n_sites = int(rng.integers(65, 300))
    q, r = _panel(rng, 4, int(rng.integers(20, 200)), n_sites)
    qb, rb = pack_bits(q), pack_bits(r)
    w = torch.rand(n_sites) * 5.0
    w_int, scale = quantize_weights(w, qb.shape[1])
    assert w_int.dtype == torch.int32 and w_int.shape == (qb.shape[1] * 64,)
    assert quantize_weights(w, qb.shape[1])[0] is w_int  # cached: same tensor object
    assert quantize_weights(w, qb.shape[1], cache=False)[0] is not w_int  # the caller caches
    assert quantize_weights(w_int, qb.shape[1]) == (w_int, 1.0)  # pre-quantised: as given
    # independent quantisation: round(w / max * 2**WEIGHT_BITS), zero-padded
    expect = np.zeros(qb.shape[1] * 64, dtype=np.int64)
    expect[:n_sites] = np.rint(w.double().numpy() / float(w.max()) * 2**WEIGHT_BITS)
    assert np.array_equal(w_int.numpy(), expect)
    k = int(rng.integers(1, 8))
    d_f, i_f = hamming_topk(qb, rb, w, k=k)
    d_i, i_i = hamming_topk(qb, rb, w_int, k=k)
    assert torch.equal(i_f, i_i)
    assert torch.equal(d_f, (d_i.double() * scale).float())  # integer distances < 2**24: exact in float32
    w.mul_(2.0)  # an in-place edit bumps the version: quantised again (same integers, new scale)
    w2, scale2 = quantize_weights(w, qb.shape[1])
    assert w2 is not w_int and torch.equal(w2, w_int) and scale2 == pytest.approx(2 * scale)
    with pytest.raises(ValueError, match="non-negative"):
        quantize_weights(-w, qb.shape[1])


def test_weight_cache_identity_version_and_lru():
    cache = TensorCache(2)
    built = []

    def get(t):
        return cache.get(t, "x", lambda: built.append(t) or len(built))

    a, b, c = torch.zeros(3), torch.zeros(3), torch.zeros(3)
    assert get(a) == 1 and get(a) == 1 and get(b) == 2  # hit while unmodified
    a.add_(1)  # in-place edit: a new version, rebuilt
    assert get(a) == 3 and get(b) == 2 and get(a) == 3
    assert get(c) == 4 and get(a) == 3  # b was the least recently used: c evicted it
    assert get(b) == 5
    assert cache.get(a, "other key", lambda: "y") == "y"  # keys separate what is derived


def test_errors_one_checker_one_exception_type(rng):
    """Every path raises ValueError with the checker's message: the op (C++ or the reference
    kernel), the torch reference, the public API, the fake (meta tensors)."""
    qb = pack_bits(rng.integers(0, 2, (2, 100)).astype(np.uint8))
    rb = pack_bits(rng.integers(0, 2, (5, 100)).astype(np.uint8))
    bad = [  # (args, message pattern, C++ words it identically: no dtype printed)
        ((qb, rb, None, 6), r"k = 6 must lie in \[1, N\] with N = 5", True),
        ((qb, rb, None, 0), r"k = 0 must lie in", True),
        ((qb, rb[:, :1], None, 1), "words per row", True),
        ((qb[0], rb, None, 1), r"must be 2-D, got \[2\] and \[5, 2\]", True),
        ((qb.int(), rb, None, 1), "must be int64", False),
        ((qb, rb, torch.ones(128), 1), r"int32 \[W \* 64\] = \[128\]", False),
        ((qb, rb, torch.ones(64, dtype=torch.int32), 1), r"int32 \[W \* 64\] = \[128\]", False),
        ((qb, rb, -torch.ones(128, dtype=torch.int32), 1), "non-negative", False),
    ]
    for args, match, same_text in bad:
        messages = []
        for fn in (OP, hamming_topk_reference_int):
            with pytest.raises(ValueError, match=match) as err:
                fn(*args)
            messages.append(str(err.value).splitlines()[0])
        if same_text:
            assert messages[0] == messages[1]
        if match != "non-negative":  # metadata: the fake checks it too (values only run time)
            with pytest.raises(ValueError, match=match):
                OP(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args))
    with pytest.raises(ValueError, match="but ref_bits on meta"):
        check_args(qb, rb.to("meta"), 1)
    for fn in (hamming_topk, hamming_topk_reference):
        with pytest.raises(ValueError, match="k = 6"):
            fn(qb, rb, k=6)
        with pytest.raises(ValueError, match="non-negative"):
            fn(qb, rb, -torch.ones(100), 1)


def test_opcheck(rng):
    qb = pack_bits(rng.integers(0, 2, (3, 90)).astype(np.uint8))
    rb = pack_bits(rng.integers(0, 2, (40, 90)).astype(np.uint8))
    w, _ = quantize_weights(torch.rand(90), qb.shape[1])
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(OP.default, (qb, rb, w, 4), test_utils=utils)
    torch.library.opcheck(OP.default, (qb, rb, None, 1), test_utils=utils)
