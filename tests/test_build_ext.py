"""The compiled extension is built, loaded and registers its ops with the expected schemas."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from vcfbert_fast import _ext

HAMMING_SCHEMA = (
    "vcfbert_fast::hamming_topk(Tensor query_bits, Tensor ref_bits, Tensor? weights, int k) "
    "-> (Tensor, Tensor)"
)


def test_extension_loaded():
    assert _ext.HAS_EXT, f"vcfbert_fast._C did not load: {_ext.EXT_ERROR}"
    assert _ext.EXT_ERROR is None


@pytest.mark.parametrize("name", ["gather_rows", "gather_rows_out", "hamming_topk"])
def test_ops_registered_with_schema(name):
    op = getattr(torch.ops.vcfbert_fast, name).default
    schema = str(op._schema)
    assert schema.startswith(f"vcfbert_fast::{name}(")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vcfbert_fast::{name}", "CPU")


def test_schemas_exact():
    ops = torch.ops.vcfbert_fast
    assert (
        str(ops.gather_rows.default._schema)
        == "vcfbert_fast::gather_rows(Tensor src, Tensor index, bool check=True) -> Tensor"
    )
    assert (
        str(ops.gather_rows_out.default._schema)
        == "vcfbert_fast::gather_rows_out(Tensor src, Tensor index, Tensor(a!) out, bool check=True) -> ()"
    )
    assert str(ops.hamming_topk.default._schema) == HAMMING_SCHEMA


def test_cuda_kernels_match_torch_build():
    # CUDA kernels are registered exactly when the build had a CUDA torch and toolkit; a CPU torch
    # can never carry them.
    if torch.version.cuda is None:
        assert not _ext.HAS_CUDA_EXT
    assert _ext.HAS_CUDA_EXT == torch._C._dispatch_has_kernel_for_dispatch_key(
        "vcfbert_fast::gather_rows", "CUDA"
    )


def test_kernel_source_shipped():
    from vcfbert_fast.ops import _cupy_gather

    src = _cupy_gather.kernel_source()
    for width in (16, 8, 4, 2, 1):
        for idx in ("i64", "i32"):
            assert f"vf_gather_rows_v{width}_{idx}" in src
    assert "#include" not in src  # NVRTC compiles it without any headers


def test_import_without_extension_falls_back(tmp_path):
    # A library path that cannot load: the package must still import and the ops must still work;
    # torch.ops.vcfbert_fast.hamming_topk still exists (schema from Python, the reference on CPU).
    code = (
        "import warnings, torch\n"
        "from vcfbert_fast import _ext\n"
        "from vcfbert_fast.ops import gather_rows, gather_backend, hamming_backend, pack_bits\n"
        "assert not _ext.HAS_EXT and 'missing' in _ext.EXT_ERROR, _ext.EXT_ERROR\n"
        "assert gather_backend('cpu') == 'torch-reference' == hamming_backend('cpu')\n"
        "src = torch.randn(5, 3); idx = torch.tensor([4, 0])\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = gather_rows(src, idx)\n"
        "assert torch.equal(out, src[idx]) and any('unavailable' in str(x.message) for x in w)\n"
        f"assert str(torch.ops.vcfbert_fast.hamming_topk.default._schema) == {HAMMING_SCHEMA!r}\n"
        "refs = torch.zeros(6, 70, dtype=torch.uint8); refs[2, :3] = 1; refs[4, 69] = 1\n"
        "w = torch.zeros(128, dtype=torch.int32); w[:70] = 2\n"
        "d, i = torch.ops.vcfbert_fast.hamming_topk(pack_bits(refs[2:3]), pack_bits(refs), w, 6)\n"
        "assert i.tolist() == [[2, 0, 1, 3, 5, 4]] and d.tolist() == [[0, 6, 6, 6, 6, 8]], (d, i)\n"
    )
    env = {**os.environ, "VCFBERT_FAST_EXT_LIBRARY": str(tmp_path / "missing.so")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_extension_module_is_in_package():
    spec = importlib.util.find_spec("vcfbert_fast._C")
    assert spec is not None and spec.origin.endswith(".so")
