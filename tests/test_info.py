"""``info()`` reports the install truthfully and ``vcfbert-fast info`` runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from vcfbert_fast import _ext
from vcfbert_fast.info import info, run
from vcfbert_fast.ops import pbwt_backend


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
    pbwt = "cpp" if _ext.has_kernel("pbwt_donors", "CPU") else "numpy-reference"
    assert pbwt == pbwt_backend()
    if paths["device"] == "cuda":
        pbwt += " (on the CPU)"
    assert paths["pbwt_donors"] == paths["match_runs"] == pbwt
    assert d["sdpa_backends"]["math"] is True


def test_info_cli_exit_zero():
    res = subprocess.run(
        [sys.executable, "-m", "vcfbert_fast", "info", "--json"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["torch"] == torch.__version__
    assert d["extension"]["cpu_ops"] == _ext.HAS_EXT
    assert d["op_paths"]["pbwt_donors"].split()[0] == pbwt_backend()


def test_info_text_names_the_pbwt_path(capsys):
    assert run(argparse.Namespace(model=False, json=False)) == 0
    out = capsys.readouterr().out
    want = pbwt_backend() + ("" if not torch.cuda.is_available() else " (on the CPU)")
    assert f"  pbwt_donors: {want}\n" in out and f"  match_runs: {want}\n" in out
