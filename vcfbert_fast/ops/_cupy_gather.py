"""gather_rows through CuPy/NVRTC: the extension's CUDA kernel source compiled at run time.

For installs without a compiled CUDA extension (e.g. a CPU-built wheel on a GPU machine with
``pip install cupy-cuda12x``). The kernel text is ``csrc/cuda/gather_rows_kernel.cuh``, shipped
as package data in ``vcfbert_fast/csrc_kernels/`` (read from the source tree when running from a
checkout that was never built).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

KERNEL_FILE = "gather_rows_kernel.cuh"
THREADS = 256  # VF_GATHER_THREADS in the kernel source


def kernel_source() -> str:
    """The CUDA source of the gather kernels (package data first, then the source tree)."""
    here = Path(__file__).resolve().parent.parent
    for path in (here / "csrc_kernels" / KERNEL_FILE, here.parent / "csrc" / "cuda" / KERNEL_FILE):
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(
        f"{KERNEL_FILE} not found in vcfbert_fast/csrc_kernels or csrc/cuda; reinstall vcfbert-fast"
    )


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """CuPy importable, a CUDA device present and the kernel source readable."""
    try:
        import cupy  # noqa: F401

        kernel_source()
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any failure means this path is off
        return False


@functools.lru_cache(maxsize=8)
def _module(device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=kernel_source(), options=("--std=c++14",))


def _width(row_bytes: int, *addresses: int) -> int:
    width = 16
    while width > 1 and (row_bytes % width or any(a % width for a in addresses)):
        width //= 2
    return width


def gather_rows_cupy(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor, check: bool = True) -> None:
    """``out[i] = src[index[i]]`` with ``src`` pinned host memory, ``index``/``out`` on one CUDA
    device. Uses the current torch stream; raises on an out-of-range index (one 4-byte read-back),
    or with ``check=False`` zero-fills such rows without reading anything back (no host sync)."""
    import cupy

    if not src.is_contiguous() or not out.is_contiguous():
        raise ValueError("gather_rows: src and out must be contiguous")
    if src.device.type == "cpu" and not src.is_pinned():
        raise ValueError("gather_rows: src must be pinned (src.pin_memory()) to be read from the GPU")
    n_out, n_rows = index.shape[0], src.shape[0]
    if n_out == 0:
        return
    if n_rows == 0:
        if not check:
            out.zero_()
            return
        raise IndexError("gather_rows: src has 0 rows, so every index is out of range")
    row_bytes = src.numel() * src.element_size() // n_rows
    if row_bytes == 0:
        return
    dev = index.device.index if index.device.index is not None else torch.cuda.current_device()
    index = index.contiguous()
    width = _width(row_bytes, src.data_ptr(), out.data_ptr())
    suffix = "i64" if index.dtype == torch.int64 else "i32"
    kernel = _module(dev).get_function(f"vf_gather_rows_v{width}_{suffix}")
    n_vec = row_bytes // width
    bx = min(max(1, -(-n_vec // (THREADS * 4))), 1024)
    by = min(n_out, 65535)
    err = torch.zeros(1, dtype=torch.int32, device=index.device)
    stream = torch.cuda.current_stream(index.device)
    with cupy.cuda.Device(dev), cupy.cuda.ExternalStream(stream.cuda_stream):
        # Pinned memory is mapped into the device address space (UVA): the host pointer is valid.
        kernel(
            (bx, by),
            (THREADS,),
            (
                cupy.uint64(src.data_ptr()),
                cupy.uint64(index.data_ptr()),
                cupy.uint64(out.data_ptr()),
                cupy.int64(n_out),
                cupy.int64(n_rows),
                cupy.int64(n_vec),
                cupy.uint64(err.data_ptr()),
            ),
        )
    if check and int(err.item()):
        raise IndexError(
            f"gather_rows: index holds a value outside [0, {n_rows}) (those rows were zero-filled)"
        )
