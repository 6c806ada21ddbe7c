"""Row gather ``out[i] = src[index[i]]``: the step that moves retrieved reference embeddings
from a (pinned host) store into the device buffer the fusion layer reads.

Paths, best first (:func:`gather_backend` says which is live):

1. ``torch.ops.vcfbert_fast.gather_rows[_out]`` (C++ on CPU; CUDA kernel reading pinned host
   memory zero-copy through UVA with 16-byte loads),
2. the same CUDA kernel source compiled at run time by CuPy/NVRTC (pinned host ``src`` and a
   CUDA ``index``, when the extension has no CUDA kernels and CuPy is installed),
3. :func:`gather_rows_reference`: ``index_select`` on the host, then ``copy_`` to the device.

Every path gives bit-identical results; an index outside ``[0, N)`` raises. ``check=False`` is
for hot paths whose indices are valid by construction (retrieved rows of the same store): no range
check and so no host synchronisation on CUDA (the checked kernel reads back a 4-byte error flag,
a stream sync); an out-of-range index then zero-fills its output row instead of raising (no path
ever reads out of bounds).
"""

from __future__ import annotations

import torch

from .. import _ext


def _out_shape(src: torch.Tensor, index: torch.Tensor) -> tuple[int, ...]:
    return (index.shape[0], *src.shape[1:])


def _check(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None) -> None:
    if src.dim() < 1:
        raise ValueError("gather_rows: src must have at least one dimension (rows)")
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"gather_rows: index must be 1-D int64/int32, got {index.dtype} {tuple(index.shape)}; use index.long()"
        )
    if out is not None:
        if out.dtype != src.dtype:
            raise ValueError(f"gather_rows: out dtype {out.dtype} does not match src dtype {src.dtype}")
        if tuple(out.shape) != _out_shape(src, index):
            raise ValueError(
                f"gather_rows: out has shape {tuple(out.shape)} but {_out_shape(src, index)} is needed"
            )


def gather_rows_reference(
    src: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None, check: bool = True
) -> torch.Tensor:
    """Plain torch: ``index_select`` where ``src`` lives, then one copy to ``index``'s device.

    ``check=False``: out-of-range rows come back zero-filled (the kernels' unchecked behaviour)."""
    _check(src, index, out)
    n = src.shape[0]
    idx = index.to(src.device, torch.int64)
    if check:
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            bad = index[(index < 0) | (index >= n)][0]
            raise IndexError(f"gather_rows: index value {int(bad)} is out of range for src with {n} rows")
        rows = src.index_select(0, idx)
    else:
        valid = (idx >= 0) & (idx < n)
        if n == 0:
            rows = src.new_zeros(_out_shape(src, index))
        else:
            rows = src.index_select(0, torch.where(valid, idx, 0))
            rows[~valid] = 0
    if out is None:
        return rows.to(index.device, non_blocking=True)
    out.copy_(rows, non_blocking=True)
    return out


def _cupy_usable(src: torch.Tensor, index: torch.Tensor) -> bool:
    if not (index.is_cuda and src.device.type == "cpu" and src.is_pinned()):
        return False
    from . import _cupy_gather

    return _cupy_gather.available()


def gather_backend(device: torch.device | str, src_pinned: bool = True) -> str:
    """The path :func:`gather_rows` takes for an ``index`` on ``device`` (``src`` pinned or not)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if _ext.HAS_CUDA_EXT:
            return "cuda-ext"
        if src_pinned:
            from . import _cupy_gather

            if _cupy_gather.available():
                return "cupy-nvrtc"
        return "torch-reference"
    return "cpp" if _ext.HAS_EXT else "torch-reference"


def gather_rows(
    src: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None, check: bool = True
) -> torch.Tensor:
    """``out[i] = src[index[i]]`` for ``src [N, ...]``; returns ``out`` (allocated on ``index``'s
    device when not given). ``src`` on the CPU with ``index`` on CUDA should be pinned
    (``src.pin_memory()``): the CUDA kernel then reads it zero-copy. ``check=False``: no range
    check, no host sync; out-of-range rows zero-filled (module doc)."""
    _check(src, index, out)
    check = bool(check)
    if index.is_cuda and _ext.HAS_CUDA_EXT or not index.is_cuda and _ext.HAS_EXT and src.device.type == "cpu":
        if out is None:
            return torch.ops.vcfbert_fast.gather_rows(src, index, check)
        torch.ops.vcfbert_fast.gather_rows_out(src, index, out, check)
        return out
    if _cupy_usable(src, index):
        from . import _cupy_gather

        if out is None:
            out = torch.empty(_out_shape(src, index), dtype=src.dtype, device=index.device)
        _cupy_gather.gather_rows_cupy(src, index, out, check=check)
        return out
    if not index.is_cuda:
        _ext.warn_fallback("gather_rows")
    return gather_rows_reference(src, index, out, check=check)
