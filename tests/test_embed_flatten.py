"""Fused embed_flatten (Triton + custom op + autograd) vs independent torch computations.

The Triton kernel runs on CPU only in interpret mode, which Triton fixes at kernel decoration
(import) time: the ``triton``-marked ``test_interp_*`` run in one ``TRITON_INTERPRET=1`` child
pytest process (tests/interpret_child.py) and report its outcome. Inputs come from torch's global
RNG, seeded per test by the root conftest (printed; VCFBERT_TEST_SEED replays it).
"""

from __future__ import annotations

import pytest
import torch

from vcfbert_fast.ops.embed_flatten import embed_flatten, embed_flatten_backend, embed_flatten_reference
from vcfbert_fast.ops.triton import interpret_mode

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _naive(tokens, token_table=None, site_rows=None, out_dtype=None, site_table=None):
    """Row-by-row loops: the definition, written independently of the vectorised reference."""
    n_b, n_l = tokens.shape
    rows = []
    for b in range(n_b):
        for l in range(n_l):
            t = int(tokens[b, l])
            if site_table is not None:
                rows.append(site_table[l, t].to(out_dtype))
            else:
                acc = (
                    torch.float64 if torch.float64 in (token_table.dtype, site_rows.dtype) else torch.float32
                )
                s = site_rows[b, l] if site_rows.dim() == 3 else site_rows[l]
                rows.append((token_table[t].to(acc) + s.to(acc)).to(out_dtype))
    return torch.stack(rows).view(n_b, n_l, -1)


def _case(n_b=3, n_l=37, n_v=7, dim=24, table_dtype=torch.float32, site_dtype=torch.float32, device="cpu"):
    tokens = torch.randint(0, n_v, (n_b, n_l), device=device)
    return {
        "tokens": tokens,
        "token_table": torch.randn(n_v, dim, dtype=table_dtype, device=device),
        "site_rows": torch.randn(n_l, dim, dtype=site_dtype, device=device),
        "site_rows_b": torch.randn(n_b, n_l, dim, dtype=site_dtype, device=device),
        "site_table": torch.randn(n_l, n_v, dim, dtype=table_dtype, device=device),
    }


def _modes(c):
    return {
        "add": {"token_table": c["token_table"], "site_rows": c["site_rows"]},
        "add_batched": {"token_table": c["token_table"], "site_rows": c["site_rows_b"]},
        "table": {"site_table": c["site_table"]},
    }


def _grads_via_plain_autograd(tokens, kw, out_dtype, grad_out):
    """Gradients from torch autograd through plain indexing (independent of register_autograd)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in kw.items()}
    out = embed_flatten_reference(tokens, out_dtype=out_dtype, **leaves)
    out.backward(grad_out)
    return {k: v.grad for k, v in leaves.items()}


def _grads_via_op(tokens, kw, out_dtype, grad_out):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in kw.items()}
    out = embed_flatten(tokens, out_dtype=out_dtype, **leaves)
    out.backward(grad_out)
    return out, {k: v.grad for k, v in leaves.items()}


# ----------------------------------------------------------------------------- torch paths (plain CPU)


def test_backend_names():
    assert embed_flatten_backend("cpu") == ("triton-interpret" if interpret_mode() else "torch")
    if torch.cuda.is_available():
        assert embed_flatten_backend("cuda") == "triton"


def test_reference_matches_naive_loops():
    c = _case(n_b=2, n_l=9, table_dtype=torch.bfloat16)
    for mode, kw in _modes(c).items():
        for od in (torch.float32, torch.bfloat16):
            got = embed_flatten_reference(c["tokens"], out_dtype=od, **kw)
            assert got.dtype == od and torch.equal(got, _naive(c["tokens"], out_dtype=od, **kw)), mode


def test_cpu_op_forward_and_flatten_view():
    c = _case()
    out = embed_flatten(c["tokens"], c["token_table"], c["site_rows"], torch.bfloat16)
    assert out.shape == (3, 37, 24) and out.dtype == torch.bfloat16
    flat = out.view(3, 37 * 24)  # the free flatten
    expect = _naive(c["tokens"], c["token_table"], c["site_rows"], torch.bfloat16)
    assert torch.equal(flat, expect.reshape(3, -1))


def test_gradcheck_float64():
    c = _case(n_b=2, n_l=5, n_v=4, dim=3, table_dtype=torch.float64, site_dtype=torch.float64)
    tok = c["tokens"]
    for kw in _modes(c).values():
        names = list(kw)
        leaves = [kw[n].detach().clone().requires_grad_(True) for n in names]

        def fn(*xs, names=names):
            return embed_flatten(tok, **dict(zip(names, xs)))

        assert torch.autograd.gradcheck(fn, leaves)


def test_grads_closed_form():
    """grad_table[v] = sum of output grads where token == v; grad_site_rows = batch sum."""
    c = _case()
    tok = c["tokens"]
    g = torch.randn(3, 37, 24)
    _, grads = _grads_via_op(tok, _modes(c)["add"], torch.float32, g)
    for v in range(7):
        assert torch.allclose(grads["token_table"][v], g[tok == v].sum(0), atol=1e-5)
    assert torch.allclose(grads["site_rows"], g.sum(0), atol=1e-6)
    _, grads = _grads_via_op(tok, _modes(c)["table"], torch.float32, g)
    one_hot = torch.nn.functional.one_hot(tok, 7).float()  # [B, L, V]
    assert torch.allclose(grads["site_table"], torch.einsum("blv,bld->lvd", one_hot, g), atol=1e-5)


def test_opcheck_cpu():
    c = _case(n_b=2, n_l=5, n_v=4, dim=8)
    tab = c["token_table"].requires_grad_(True)
    torch.library.opcheck(
        torch.ops.vcfbert_fast.embed_flatten_add.default,
        (c["tokens"], tab, c["site_rows"].requires_grad_(True), torch.bfloat16),
    )
    torch.library.opcheck(
        torch.ops.vcfbert_fast.embed_flatten_table.default,
        (c["tokens"], c["site_table"].requires_grad_(True), torch.float32),
    )


def test_bad_inputs_raise():
    c = _case()
    tok, tab, site = c["tokens"], c["token_table"], c["site_rows"]
    with pytest.raises(ValueError, match="site_rows"):
        embed_flatten(tok, tab, site[:-1])
    with pytest.raises(ValueError, match="tokens"):
        embed_flatten(tok.float(), tab, site)
    with pytest.raises(ValueError, match="not both"):
        embed_flatten(tok, tab, site, site_table=c["site_table"])
    with pytest.raises(ValueError, match="site_table"):
        embed_flatten(tok, site_table=c["site_table"][:-1])
    with pytest.raises(ValueError, match="out_dtype"):
        embed_flatten(tok, tab, site, torch.int32)
    bad = tok.clone()
    bad[1, 3] = 7  # == V: outside the table
    with pytest.raises(RuntimeError, match="outside"):
        embed_flatten(bad, tab, site)


# ----------------------------------------------------------------------------- interpreter child


@pytest.mark.triton
@pytest.mark.parametrize("table_dtype", DTYPES)
def test_interp_forward_every_dtype(table_dtype):
    """Triton (interpreted) == reference bit for bit: every input/output dtype, odd L and D."""
    from vcfbert_fast.ops.triton.embed_flatten import embed_flatten_add_triton, embed_flatten_table_triton

    c = _case(table_dtype=table_dtype, site_dtype=DTYPES[torch.randint(0, 4, ()).item()])
    tok = c["tokens"]
    for od in DTYPES:
        for mode, kw in _modes(c).items():
            if mode == "table":
                got = embed_flatten_table_triton(tok, kw["site_table"], od)
            else:
                got = embed_flatten_add_triton(tok, kw["token_table"], kw["site_rows"], od)
            ref = embed_flatten_reference(tok, out_dtype=od, **kw)
            assert got.dtype == od and torch.equal(got, ref), (mode, table_dtype, od)


@pytest.mark.triton
def test_interp_grads_match_plain_autograd():
    """The op (Triton forward under the interpreter) backpropagates like plain torch indexing."""
    assert embed_flatten_backend("cpu") == "triton-interpret"
    c = _case(n_b=4, n_l=19, n_v=7, dim=40, table_dtype=torch.bfloat16, site_dtype=torch.float32)
    for kw in _modes(c).values():
        for od in (torch.float32, torch.bfloat16):
            g = torch.randn(4, 19, 40).to(od)
            out, got = _grads_via_op(c["tokens"], kw, od, g)
            assert torch.equal(out, embed_flatten_reference(c["tokens"], out_dtype=od, **kw))
            expect = _grads_via_plain_autograd(c["tokens"], kw, od, g)
            for name in kw:
                assert got[name].dtype == kw[name].dtype
                # bf16 sums round in a different order on each side: a few bf16 ulps of the largest
                # gradient (a wrong row or token would be off by O(1) of it)
                tol = 2.0**-6 * float(expect[name].float().abs().amax()) + 1e-6
                torch.testing.assert_close(got[name].float(), expect[name].float(), rtol=2.0**-6, atol=tol)


@pytest.mark.triton
def test_interp_out_of_range_tokens_never_read_out_of_bounds():
    c = _case()
    bad = c["tokens"].clone()
    bad[1, 3], bad[2, 0] = 7, -1
    with pytest.raises(RuntimeError, match="outside"):
        embed_flatten(bad, c["token_table"], c["site_rows"])
    out = embed_flatten(bad, c["token_table"], c["site_rows"], validate=False)
    assert not out[1, 3].any() and not out[2, 0].any()
    good = torch.ones_like(bad, dtype=torch.bool)
    good[1, 3] = good[2, 0] = False
    ref = embed_flatten_reference(bad.clamp(0, 6), c["token_table"], c["site_rows"])
    assert torch.equal(out[good], ref[good])


@pytest.mark.triton
def test_interp_opcheck_fake():
    c = _case(n_b=2, n_l=5, n_v=4, dim=8)
    torch.library.opcheck(
        torch.ops.vcfbert_fast.embed_flatten_add.default,
        (c["tokens"], c["token_table"], c["site_rows_b"], torch.float16),
        test_utils=("test_schema", "test_faketensor"),
    )


# ----------------------------------------------------------------------------- real GPU


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["add", "add_batched", "table"])
def test_gpu_real_size_bf16(mode):
    c = _case(n_b=64, n_l=1030, n_v=7, dim=192, device="cuda")
    kw = _modes(c)[mode]
    out = embed_flatten(c["tokens"], out_dtype=torch.bfloat16, **kw)
    assert embed_flatten_backend("cuda") == "triton"
    assert torch.equal(out, embed_flatten_reference(c["tokens"], out_dtype=torch.bfloat16, **kw))
    g = torch.randn_like(out)
    _, got = _grads_via_op(c["tokens"], kw, torch.bfloat16, g)
    expect = _grads_via_plain_autograd(c["tokens"], kw, torch.bfloat16, g)
    for name in kw:
        torch.testing.assert_close(got[name].float(), expect[name].float(), rtol=1.6e-2, atol=1e-2)


@pytest.mark.gpu
def test_gpu_every_dtype_and_compile():
    c = _case(n_b=5, n_l=131, n_v=7, dim=72, table_dtype=torch.bfloat16, device="cuda")
    for od in DTYPES:
        for kw in _modes(c).values():
            assert torch.equal(
                embed_flatten(c["tokens"], out_dtype=od, **kw),
                embed_flatten_reference(c["tokens"], out_dtype=od, **kw),
            )
    fn = torch.compile(lambda t, a, b: embed_flatten(t, a, b, torch.bfloat16).view(t.shape[0], -1))
    got = fn(c["tokens"], c["token_table"], c["site_rows"])
    ref = embed_flatten_reference(c["tokens"], c["token_table"], c["site_rows"], torch.bfloat16)
    assert torch.equal(got, ref.view(5, -1))


def test_kernel_compiles_for_gpu():
    """The GPU code path (bf16 output, float32 and float64 inputs) compiles for an H100 (sm_90)."""
    if interpret_mode():
        pytest.skip("needs JIT (not interpreted) kernels")
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from vcfbert_fast.ops.triton.embed_flatten import _embed_flatten_kernel

    names = ("PER_SITE_TABLE", "SITE_BATCHED", "F64", "OUT16", "BF16_RNE", "BR", "BD")
    for per_site, f64 in ((False, False), (True, True)):
        fp = "*fp64" if f64 else "*fp32"
        sig = {"tok_ptr": "*i64", "table_ptr": fp, "site_ptr": fp, "out_ptr": "*bf16"}
        sig.update({n: "i32" for n in ("R", "L", "D", "V")})
        sig.update({n: "constexpr" for n in names})
        consts = dict(zip(names, (per_site, False, f64, True, False, 16, 256)))
        try:
            kernel = triton.compile(
                ASTSource(fn=_embed_flatten_kernel, signature=sig, constexprs=consts),
                target=GPUTarget("cuda", 90, 32),
            )
        except (ImportError, FileNotFoundError) as exc:
            pytest.skip(f"cannot compile for sm_90 here: {exc}")
        assert "cvt.rn.bf16" in kernel.asm["ptx"]
