"""gather_rows: the C++/CUDA op against index_select on fresh random inputs, out= slices, errors.

Inputs come from torch's global RNG, seeded per test by the root conftest (printed; replay with
VCFBERT_TEST_SEED)."""

from __future__ import annotations

import pytest
import torch

from vcfbert_fast import _ext
from vcfbert_fast.ops import gather_backend, gather_rows, gather_rows_reference

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason=f"extension not built: {_ext.EXT_ERROR}")
ops = torch.ops.vcfbert_fast

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.uint8, torch.int64]
# Row shapes: 16-byte multiples and odd byte counts (3 x 5 uint8 = 15 bytes, 7 fp16 = 14 bytes).
ROW_SHAPES = [(), (7,), (3, 5), (2, 3, 4)]


def _random(shape, dtype):
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    return torch.randint(0, 250 if dtype == torch.uint8 else 2**40, shape, dtype=dtype)


def _index(n_src, n_out, dtype=torch.int64):
    idx = torch.randint(0, n_src, (n_out,), dtype=dtype)
    if n_out >= 4:
        idx[-1] = idx[0]  # duplicates are legal
    return idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row_shape", ROW_SHAPES)
def test_cpu_op_matches_index_select(dtype, row_shape):
    n = int(torch.randint(1, 300, ()))
    src = _random((n, *row_shape), dtype)
    for n_out in (0, 1, int(torch.randint(2, 700, ()))):
        for idx_dtype in (torch.int64, torch.int32):
            idx = _index(n, n_out, idx_dtype)
            expected = src.index_select(0, idx.long())
            got = ops.gather_rows(src, idx)
            assert got.dtype == dtype and got.shape == expected.shape
            assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))  # bit-exact, NaN-safe
            assert torch.equal(gather_rows(src, idx), expected)


def test_large_rows_parallel():
    src = torch.randn(64, 1030, 24).to(torch.bfloat16)
    idx = torch.randint(0, 64, (300,))
    assert torch.equal(ops.gather_rows(src, idx), src[idx])


def test_out_variant_writes_slice_only():
    src = _random((50, 9, 3), torch.float16)
    idx = _index(50, 17)
    buf = torch.full((40, 9, 3), -7.0, dtype=torch.float16)
    out = buf[11:28]
    ops.gather_rows_out(src, idx, out)
    assert torch.equal(buf[11:28], src[idx])
    assert bool((buf[:11] == -7).all()) and bool((buf[28:] == -7).all())
    out2 = torch.empty(17, 9, 3, dtype=torch.float16)
    assert gather_rows(src, idx, out=out2) is out2
    assert torch.equal(out2, src[idx])


def test_reference_matches_index_select():
    src = torch.randn(30, 6)
    idx = _index(30, 50)
    assert torch.equal(gather_rows_reference(src, idx), src.index_select(0, idx))


@pytest.mark.parametrize("bad", [-1, 10, 1 << 40])
def test_out_of_range_index_raises(bad):
    src = torch.randn(10, 4)
    idx = torch.tensor([0, 3, bad, 2])
    with pytest.raises(RuntimeError, match=r"index\[2\] = .* out of range.*10 rows"):
        ops.gather_rows(src, idx)
    out = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="out of range"):
        ops.gather_rows_out(src, idx, out)
    assert bool((out == 0).all())  # checked before any write
    with pytest.raises(IndexError, match="out of range"):
        gather_rows_reference(src, idx)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.uint8, torch.float32])
def test_unchecked_cpu_matches_index_select(dtype):
    """check=False (no range check, no sync on CUDA): same result as the checked op for valid indices."""
    n = int(torch.randint(1, 200, ()))
    src = _random((n, *ROW_SHAPES[int(torch.randint(len(ROW_SHAPES), ()))]), dtype)
    idx = _index(n, int(torch.randint(0, 300, ())), torch.int64 if torch.rand(()) < 0.5 else torch.int32)
    expected = src.index_select(0, idx.long())
    got = ops.gather_rows(src, idx, False)
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
    assert torch.equal(gather_rows(src, idx, check=False), expected)
    assert torch.equal(gather_rows_reference(src, idx, check=False), expected)
    out = torch.empty_like(expected)
    ops.gather_rows_out(src, idx, out, False)
    assert torch.equal(out, expected)


def test_unchecked_out_of_range_rows_zero_filled():
    """Unchecked: a bad index never reads out of bounds; its row is zero-filled (op and reference agree)."""
    src = torch.randn(10, 4) + 5.0  # no zero entries
    idx = torch.tensor([0, 3, -1, 2, 10, 1 << 40])
    bad = torch.tensor([False, False, True, False, True, True])
    expected = torch.zeros(6, 4)
    expected[~bad] = src[idx[~bad]]
    out = torch.full((6, 4), 7.0)
    ops.gather_rows_out(src, idx, out, False)
    assert torch.equal(out, expected)
    assert torch.equal(gather_rows_reference(src, idx, check=False), expected)
    assert torch.equal(ops.gather_rows(torch.empty(0, 4), idx, False), torch.zeros(6, 4))


def test_dtype_mismatch_raises():
    src = torch.randn(10, 4)
    with pytest.raises(RuntimeError, match="out dtype .* does not match src dtype"):
        ops.gather_rows_out(src, torch.tensor([1, 2]), torch.empty(2, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="does not match src dtype"):
        gather_rows(src, torch.tensor([1, 2]), out=torch.empty(2, 4, dtype=torch.float64))


def test_shape_mismatch_raises():
    src = torch.randn(10, 4)
    with pytest.raises(RuntimeError, match=r"out has shape .* \[R, \*src.shape\[1:\]\]"):
        ops.gather_rows_out(src, torch.tensor([1, 2]), torch.empty(3, 4))
    with pytest.raises(RuntimeError, match="out has shape"):
        ops.gather_rows_out(src, torch.tensor([1, 2]), torch.empty(2, 5))


def test_non_contiguous_src_and_bad_index_raise():
    src = torch.randn(4, 10).t()
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.gather_rows(src, torch.tensor([0]))
    with pytest.raises(RuntimeError, match="int64 or int32"):
        ops.gather_rows(torch.randn(4, 2), torch.tensor([0.0]))
    with pytest.raises(RuntimeError, match="1-D"):
        ops.gather_rows(torch.randn(4, 2), torch.tensor([[0]]))


# The aot_dispatch check compiles graphs (~15 s on 2 cores); torch.compile is covered below.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


def test_opcheck():
    src = torch.randn(20, 3, 5)
    idx = _index(20, 9)
    torch.library.opcheck(ops.gather_rows.default, (src, idx), test_utils=OPCHECK_UTILS)
    torch.library.opcheck(
        ops.gather_rows_out.default, (src, idx, torch.empty(9, 3, 5)), test_utils=OPCHECK_UTILS
    )
    torch.library.opcheck(ops.gather_rows.default, (src, idx, False), test_utils=OPCHECK_UTILS)


def test_compile_traces_op():
    src = torch.randn(20, 8)
    idx = _index(20, 6)

    @torch.compile(backend="eager", fullgraph=True)
    def f(s, i):
        return ops.gather_rows(s, i) * 2

    assert torch.equal(f(src, idx), src[idx] * 2)


def test_backend_names():
    assert gather_backend("cpu") == "cpp"
    assert gather_backend("cuda") in ("cuda-ext", "cupy-nvrtc", "torch-reference")


# ---- GPU: pinned host store -> device buffer, read zero-copy -----------------------------------


def _gpu_cases():
    for dtype in (torch.bfloat16, torch.float32, torch.uint8):
        for row_shape in ((1030, 24), (13,), (3, 5)):  # 16-aligned rows and odd-byte rows
            yield dtype, row_shape


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,row_shape", list(_gpu_cases()))
def test_gpu_pinned_gather_bit_exact(dtype, row_shape):
    src = _random((200, *row_shape), dtype).pin_memory()
    idx = _index(200, 64).cuda()
    got = gather_rows(src, idx)
    assert got.is_cuda
    assert torch.equal(got.cpu().view(torch.uint8), src[idx.cpu()].view(torch.uint8))
    if _ext.HAS_CUDA_EXT:
        got32 = ops.gather_rows(src, idx.int())
        assert torch.equal(got32.cpu(), src[idx.cpu()])
        on_dev = src.cuda()
        assert torch.equal(ops.gather_rows(on_dev, idx).cpu(), src[idx.cpu()])


@pytest.mark.gpu
def test_gpu_writes_into_slice_and_checks():
    if not _ext.HAS_CUDA_EXT:
        pytest.skip("no CUDA kernels in this build")
    src = torch.randn(100, 33).to(torch.bfloat16).pin_memory()
    idx = _index(100, 20).cuda()
    buf = torch.full((50, 33), 5.0, dtype=torch.bfloat16, device="cuda")
    ops.gather_rows_out(src, idx, buf[7:27])
    assert torch.equal(buf[7:27].cpu(), src[idx.cpu()])
    assert bool((buf[:7] == 5).all()) and bool((buf[27:] == 5).all())
    with pytest.raises(RuntimeError, match="pin_memory"):
        ops.gather_rows(torch.randn(100, 33), idx)
    with pytest.raises(RuntimeError, match="outside"):
        ops.gather_rows(src, torch.tensor([0, 100], device="cuda"))
    # unchecked: same rows for valid indices, a bad one zero-filled, and no error raised
    got = ops.gather_rows(src, idx, False)
    assert torch.equal(got.cpu(), src[idx.cpu()])
    bad = ops.gather_rows(src, torch.tensor([1, 100, -3], device="cuda"), False).cpu()
    assert torch.equal(bad[0], src[1]) and bool((bad[1:] == 0).all())


@pytest.mark.gpu
def test_gpu_cupy_path_bit_exact():
    pytest.importorskip("cupy")
    from vcfbert_fast.ops import _cupy_gather

    for dtype, row_shape in _gpu_cases():
        src = _random((120, *row_shape), dtype).pin_memory()
        idx = _index(120, 40).cuda()
        out = torch.empty((40, *row_shape), dtype=dtype, device="cuda")
        _cupy_gather.gather_rows_cupy(src, idx, out)
        assert torch.equal(out.cpu().view(torch.uint8), src[idx.cpu()].view(torch.uint8))
    with pytest.raises(IndexError, match="outside"):
        _cupy_gather.gather_rows_cupy(src, torch.tensor([0, 999], device="cuda"), out[:2])
    unchecked = torch.empty_like(out[:2])
    _cupy_gather.gather_rows_cupy(src, torch.tensor([5, 999], device="cuda"), unchecked, check=False)
    assert torch.equal(unchecked[0].cpu(), src[5]) and bool((unchecked[1] == 0).all())
