"""Op APIs: each picks the fastest available path at call time and has a torch reference beside it.

``embed_flatten`` (Triton side) is imported guarded: if it fails to import, these ops still work
and calling it raises with the reason.
"""

from __future__ import annotations

from .gather import gather_backend, gather_rows, gather_rows_reference
from .hamming import (
    hamming_backend,
    hamming_topk,
    hamming_topk_reference,
    pack_bits,
    quantize_weights,
    unpack_bits,
)

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
    "pack_bits",
    "quantize_weights",
    "unpack_bits",
]


try:  # owned by the Triton side; torch-only at import time, but never let it break these ops
    from .embed_flatten import embed_flatten, embed_flatten_backend, embed_flatten_reference
except Exception as _exc:  # noqa: BLE001
    _EMBED_ERROR = f"{type(_exc).__name__}: {_exc}"

    def _missing(*args, **kwargs):
        raise ImportError(f"vcfbert_fast.ops.embed_flatten is unavailable ({_EMBED_ERROR})")

    embed_flatten = embed_flatten_reference = embed_flatten_backend = _missing
