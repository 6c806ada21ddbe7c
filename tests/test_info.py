"""``info()`` reports the install truthfully and ``vcfbert-fast info`` runs."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from vcfbert_fast import _ext
from vcfbert_fast.info import info


def test_info_keys_and_values():
    d = info()
    for key in ("torch", "cuda_available", "triton", "faiss", "cyvcf2", "msprime", "extension", "cupy"):
        assert key in d
    assert d["torch"] == torch.__version__
    assert d["cuda_available"] == torch.cuda.is_available()
    assert d["extension"] == {"cpu_ops": _ext.HAS_EXT, "cuda_ops": _ext.HAS_CUDA_EXT, "error": _ext.EXT_ERROR}
    paths = d["op_paths"]
    assert paths["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert paths["gather_rows"] == ("cpp" if _ext.HAS_EXT else "torch-reference")
        assert paths["hamming_topk"] == ("cpp" if _ext.HAS_EXT else "torch-reference")
    assert "embed_flatten" in paths
    assert d["sdpa_backends"]["math"] is True


def test_info_cli_exit_zero():
    res = subprocess.run(
        [sys.executable, "-m", "vcfbert_fast", "info", "--json"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["torch"] == torch.__version__
    assert d["extension"]["cpu_ops"] == _ext.HAS_EXT
