"""Op APIs: each picks the fastest available path at call time and has a torch reference beside it.

Importing this package registers the ops' Python pieces with ``torch.ops.vcfbert_fast`` (the
Triton CUDA kernel, fakes, and the schemas the C++ extension did not define); the Triton kernel
modules under :mod:`vcfbert_fast.ops.triton` are imported only when a kernel first runs.
"""

from __future__ import annotations

from .embed_flatten import embed_flatten, embed_flatten_backend, embed_flatten_reference
from .gather import gather_backend, gather_rows, gather_rows_reference
from .hamming import (
    hamming_backend,
    hamming_topk,
    hamming_topk_reference,
    pack_bits,
    quantize_weights,
    unpack_bits,
)
from .pbwt import match_runs, match_runs_reference, pbwt_backend, pbwt_donors, pbwt_donors_reference

__all__ = [
    "embed_flatten",
    "embed_flatten_backend",
    "embed_flatten_reference",
    "gather_backend",
    "gather_rows",
    "gather_rows_reference",
    "hamming_backend",
    "hamming_topk",
    "hamming_topk_reference",
    "match_runs",
    "match_runs_reference",
    "pack_bits",
    "pbwt_backend",
    "pbwt_donors",
    "pbwt_donors_reference",
    "quantize_weights",
    "unpack_bits",
]
