"""The Triton weighted-Hamming top-K kernel (the CUDA kernel of ``vcfbert_fast::hamming_topk``)
vs a pure-Python brute force and the op's torch reference.

Triton decides interpret mode when a kernel is decorated (module import), so the CPU kernel
checks (the ``triton``-marked ``test_interp_*``) run in one ``TRITON_INTERPRET=1`` child pytest
process (tests/interpret_child.py) and report its outcome. Inputs come from torch's global RNG,
seeded per test by the root conftest (printed; VCFBERT_TEST_SEED replays it).
"""

from __future__ import annotations

import pytest
import torch

from vcfbert_fast.ops.hamming import hamming_topk_reference_int
from vcfbert_fast.ops.triton import HAMMING_MAX_K, interpret_mode


def _packed_case(n_q: int, n_ref: int, n_sites: int, dup: bool = True, device="cpu"):
    """Random 0/1 sites, padding bits zero, packed 64 per int64 word; some refs duplicated."""
    n_words = (n_sites + 63) // 64
    bits = torch.randint(0, 2, (n_q + n_ref, n_words * 64), device=device)
    bits[:, n_sites:] = 0
    if dup and n_ref >= 4:
        # forced ties: copies of other refs and of a query at random positions
        for _ in range(max(2, n_ref // 8)):
            a, b = torch.randint(0, n_ref, (2,)).tolist()
            bits[n_q + a] = bits[n_q + b]
        bits[n_q + n_ref - 1] = bits[0]
    packed = (bits.view(-1, n_words, 64) << torch.arange(64, device=device)).sum(-1)
    return packed[:n_q].contiguous(), packed[n_q:].contiguous(), bits[:n_q], bits[n_q:]


def _bruteforce(qbits, rbits, weights, k):
    """Pure Python: per-query distances from 0/1 lists, sorted by (dist, index)."""
    w = [1] * qbits.shape[1] if weights is None else [int(x) for x in weights.tolist()]
    out_d, out_i = [], []
    for q in qbits.tolist():
        d = [sum(wi for wi, a, b in zip(w, q, r) if a != b) for r in rbits.tolist()]
        order = sorted(range(len(d)), key=lambda j: (d[j], j))[:k]
        out_d.append([d[j] for j in order])
        out_i.append(order)
    return torch.tensor(out_d, dtype=torch.int64), torch.tensor(out_i, dtype=torch.int64)


def _planes_expected(weights: torch.Tensor, n_words: int) -> torch.Tensor:
    """Python loops: planes[b, w] has bit l set when bit b of weight w*64 + l is (as int64 words)."""
    w = [int(x) for x in weights.tolist()]
    planes = [[0] * n_words for _ in range(31)]
    for b in range(31):
        for word in range(n_words):
            v = sum(((w[word * 64 + l] >> b) & 1) << l for l in range(64))
            planes[b][word] = v - (1 << 64) if v >= 1 << 63 else v
    return torch.tensor(planes, dtype=torch.int64)


# ----------------------------------------------------------------------------- parent (plain CPU)


def test_launcher_checks_like_the_op():
    """One checker (ValueError) plus the kernel's own limits: k <= MAX_K, CUDA or the interpreter."""
    pytest.importorskip("triton")
    from vcfbert_fast.ops.triton.hamming_topk import MAX_K, hamming_topk_triton

    assert MAX_K == HAMMING_MAX_K
    q, r, _, _ = _packed_case(2, 80, 64)
    for args, match in (
        ((q.int(), r, None, 1), "int64"),
        ((q, r, None, 81), "k = 81"),
        ((q, r, torch.ones(64, dtype=torch.float32), 1), "int32"),
        ((q, r, torch.ones(65, dtype=torch.int32), 1), "int32"),
        ((q, r[:, :0], None, 1), "words per row"),
        ((q, r, None, MAX_K + 1), f"k <= {MAX_K}"),
        *([] if interpret_mode() else [((q, r, None, 1), "CUDA tensors")]),  # CPU, not interpreted
    ):
        with pytest.raises(ValueError, match=match):
            hamming_topk_triton(*args)


# ----------------------------------------------------------------------------- interpreter child


@pytest.mark.triton
@pytest.mark.parametrize(
    "n_q,n_ref,n_sites,k,weighted",
    [
        (5, 200, 100, 8, False),  # N not a multiple of 64, padding bits in word 2
        (3, 70, 65, 1, True),  # one site in the last word
        (17, 130, 130, 8, True),  # Q spans two query tiles
        (2, 9, 64, 8, False),  # k close to N
    ],
)
def test_interp_matches_references(n_q, n_ref, n_sites, k, weighted):
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    q, r, qb, rb = _packed_case(n_q, n_ref, n_sites)
    n_words = q.shape[1]
    w = torch.randint(0, 1000, (n_words * 64,), dtype=torch.int32) if weighted else None
    d, i = hamming_topk_triton(q, r, w, k)
    rd, ri = hamming_topk_reference_int(q, r, w, k)
    assert torch.equal(d, rd) and torch.equal(i, ri)
    if n_q * n_ref <= 2000:
        ed, ei = _bruteforce(qb, rb, w, k)
        assert torch.equal(d, ed) and torch.equal(i, ei)


@pytest.mark.triton
def test_interp_all_ties_lowest_index():
    """Every reference identical: the answer is indices 0..k-1 (across tile borders too)."""
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    q, r, qb, rb = _packed_case(3, 1, 120, dup=False)
    refs = r.expand(150, -1).contiguous()
    d, i = hamming_topk_triton(q, refs, None, 8)
    expect_d = (qb != rb).sum(1, keepdim=True).expand(-1, 8)
    assert torch.equal(i, torch.arange(8).expand(3, -1))
    assert torch.equal(d, expect_d)


@pytest.mark.triton
def test_interp_multistage_merge(monkeypatch):
    """Force the candidate merge through several select stages (large-N path) at tiny sizes."""
    import vcfbert_fast.ops.triton.hamming_topk as H

    monkeypatch.setattr(H, "_SELECT_MAX_BLOCK", 16)
    q, r, _, _ = _packed_case(3, 600, 64)
    w = torch.randint(0, 7, (64,), dtype=torch.int32)
    for weights, k in ((None, 4), (w, 3)):
        d, i = H.hamming_topk_triton(q, r, weights, k)
        rd, ri = hamming_topk_reference_int(q, r, weights, k)
        assert torch.equal(d, rd) and torch.equal(i, ri)


@pytest.mark.triton
def test_interp_full_width_weights():
    """31 weight planes and sums near 2^40 stay exact in the int64 keys."""
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    q, r, qb, rb = _packed_case(2, 30, 128)
    w = torch.randint(2**30, 2**31 - 1, (128,), dtype=torch.int32)
    d, i = hamming_topk_triton(q, r, w, 5)
    ed, ei = _bruteforce(qb, rb, w, 5)
    assert torch.equal(d, ed) and torch.equal(i, ei)


@pytest.mark.triton
def test_interp_cuda_kernel_of_the_op(monkeypatch):
    """The function registered as the op's CUDA kernel runs Triton for k <= MAX_K and the torch
    reference beyond (here on CPU tensors, through the interpreter)."""
    import vcfbert_fast.ops.hamming as ops_hamming
    import vcfbert_fast.ops.triton.hamming_topk as H

    assert ops_hamming.hamming_backend("cuda") == "triton"
    calls = []
    real = H._launch
    monkeypatch.setattr(H, "_launch", lambda *a: calls.append(a[3]) or real(*a))
    q, r, qb, rb = _packed_case(3, HAMMING_MAX_K + 20, 77)
    w = torch.randint(0, 50, (128,), dtype=torch.int32)
    for k in (3, HAMMING_MAX_K, HAMMING_MAX_K + 1):
        d, i = ops_hamming._cuda_kernel(q, r, w, k)
        ed, ei = _bruteforce(qb, rb, w, k)
        assert torch.equal(d, ed) and torch.equal(i, ei)
    assert calls == [3, HAMMING_MAX_K]  # k = MAX_K + 1 took the reference


@pytest.mark.triton
def test_interp_planes_kernel_and_the_weight_cache(monkeypatch):
    import vcfbert_fast.ops.triton.hamming_topk as H

    w = torch.randint(0, 2**31 - 1, (128,), dtype=torch.int32)
    w[5] = 2**31 - 1
    planes = H.weight_planes(w, 2)
    assert torch.equal(planes, _planes_expected(w, 2))
    rebuilt = sum(((planes[b][:, None] >> torch.arange(64)) & 1) << b for b in range(H.N_PLANES))
    assert torch.equal(rebuilt.flatten(), w.long())
    # the planes are built once per weight tensor and version, through the one weight cache
    built = []
    real = H.weight_planes
    monkeypatch.setattr(H, "weight_planes", lambda t, n: built.append(t) or real(t, n))
    q, r, _, _ = _packed_case(2, 40, 128)
    small = torch.randint(0, 2**15, (128,), dtype=torch.int32)
    H.hamming_topk_triton(q, r, small, 2)
    H.hamming_topk_triton(q, r, small, 3)
    assert len(built) == 1
    small[7] = 3  # an in-place edit bumps the version: rebuilt, and the results follow it
    d, i = H.hamming_topk_triton(q, r, small, 2)
    rd, ri = hamming_topk_reference_int(q, r, small, 2)
    assert len(built) == 2 and torch.equal(d, rd) and torch.equal(i, ri)
    others = [torch.randint(0, 2**15, (128,), dtype=torch.int32) for _ in range(3)]
    for _ in range(2):  # several windows' weights interleaved (window-interleaved batches)
        for o in others:
            H.hamming_topk_triton(q, r, o, 1)
    assert len(built) == 5


@pytest.mark.triton
def test_interp_empty_query_batch():
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    _, r, _, _ = _packed_case(1, 10, 64)
    d, i = hamming_topk_triton(r[:0], r, None, 2)
    assert d.shape == (0, 2) and i.shape == (0, 2)


# ----------------------------------------------------------------------------- real GPU


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 8, 16])
@pytest.mark.parametrize("weighted", [False, True])
def test_gpu_matches_reference_real_size(k, weighted):
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    q, r, _, _ = _packed_case(32, 2008, 1030, device="cuda")
    w = torch.randint(0, 2**16, (q.shape[1] * 64,), dtype=torch.int32, device="cuda") if weighted else None
    d, i = hamming_topk_triton(q, r, w, k)
    rd, ri = hamming_topk_reference_int(q, r, w, k)
    assert torch.equal(d, rd) and torch.equal(i, ri)


@pytest.mark.gpu
def test_gpu_large_n_multistage():
    from vcfbert_fast.ops.triton.hamming_topk import hamming_topk_triton

    q, r, _, _ = _packed_case(8, 70_001, 200, device="cuda")
    d, i = hamming_topk_triton(q, r, None, 16)
    rd, ri = hamming_topk_reference_int(q, r, None, 16)
    assert torch.equal(d, rd) and torch.equal(i, ri)


@pytest.mark.gpu
def test_gpu_op_dispatches_to_triton_and_compiles(monkeypatch):
    """``torch.ops.vcfbert_fast.hamming_topk`` on CUDA tensors is the Triton kernel, also under
    torch.compile (fullgraph: the fake impl traces it); beyond MAX_K it is the reference."""
    import vcfbert_fast.ops.triton.hamming_topk as H

    calls = []
    real = H._launch
    monkeypatch.setattr(H, "_launch", lambda *a: calls.append(a[3]) or real(*a))
    q, r, _, _ = _packed_case(16, 500, 300, device="cuda")
    rd, ri = hamming_topk_reference_int(q, r, None, 4)
    d, i = torch.ops.vcfbert_fast.hamming_topk(q, r, None, 4)
    assert torch.equal(d, rd) and torch.equal(i, ri) and calls == [4]
    fn = torch.compile(lambda a, b: torch.ops.vcfbert_fast.hamming_topk(a, b, None, 4), fullgraph=True)
    d, i = fn(q, r)
    assert torch.equal(d, rd) and torch.equal(i, ri) and calls == [4, 4]
    k = HAMMING_MAX_K + 1
    d, i = torch.ops.vcfbert_fast.hamming_topk(q, r, None, k)
    assert torch.equal(i, hamming_topk_reference_int(q, r, None, k)[1]) and calls == [4, 4]


def _compile_for_sm90(fn, signature, constexprs) -> str:
    """AOT-compile a kernel for an H100 (sm_90) without a GPU; returns its PTX."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        kernel = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32)
        )
    except (ImportError, FileNotFoundError, RuntimeError) as exc:  # no NVIDIA backend / ptxas here
        if "ptxas" in str(exc) or isinstance(exc, (ImportError, FileNotFoundError)):
            pytest.skip(f"cannot compile for sm_90 here: {exc}")
        raise
    return kernel.asm["ptx"]


def test_kernels_compile_for_gpu_with_hardware_popcount():
    """The GPU code path (which the interpreter does not exercise) compiles, and the SWAR
    popcount lowers to popc.b64."""
    pytest.importorskip("triton")
    if interpret_mode():
        pytest.skip("needs JIT (not interpreted) kernels")
    import vcfbert_fast.ops.triton.hamming_topk as H

    sig = {n: "*i64" for n in ("q_ptr", "r_ptr", "planes_ptr", "keys_ptr")}
    sig.update({n: "i32" for n in ("Q", "N", "W", "NPLANES", "KEYS_PER_ROW")})
    sig.update({n: "constexpr" for n in ("K", "IDX_BITS", "WEIGHTED", "BQ", "BN")})
    ptx = _compile_for_sm90(
        H._hamming_block_topk_kernel,
        sig,
        {"K": 8, "IDX_BITS": 11, "WEIGHTED": True, "BQ": H._BQ, "BN": H._BN},
    )
    assert "popc.b64" in ptx
    sig = {n: "*i64" for n in ("keys_in", "keys_out", "dist_out", "idx_out")}
    sig.update({"M": "i32", "KEYS_OUT_PER_ROW": "i32"})
    sig.update({n: "constexpr" for n in ("K", "IDX_BITS", "BM", "FINAL")})
    ptx = _compile_for_sm90(H._select_kernel, sig, {"K": 8, "IDX_BITS": 11, "BM": 512, "FINAL": True})
    assert ".entry" in ptx
    sig = {"w_ptr": "*i32", "planes_ptr": "*i64", "W": "i32", "NP": "constexpr"}
    assert ".entry" in _compile_for_sm90(H._planes_kernel, sig, {"NP": H.N_PLANES})
