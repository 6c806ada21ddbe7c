"""``gather_rows`` bandwidth on a GPU (issue 5): retrieved rows from a pinned host store to the device.

One window of pre-encoded references, ``[2008, 1030, 192]`` bf16 (0.79 GB) in pinned host memory;
64 random rows (2 haplotypes x 32 queries x K = 1, 25 MB) gathered into a preallocated device
buffer. Each test measures, in the same process and on the same bytes:

* the gather (CUDA events, median), as GB/s of rows delivered;
* the pinned host -> device copy rate of one contiguous buffer of the same size (the link's
  ceiling: a zero-copy gather cannot beat it);
* the plain path: host ``index_select`` + copy (``ops.gather_rows_reference``), wall time.

Target: >= 45 GB/s (DESIGN.md section 5: 55 GB/s pinned copy on an H200, zero-copy kernel
49 GB/s, host index_select + copy 5.4 GB/s). All tests need CUDA: ``pytest benchmarks/ -m gpu``.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

pytestmark = pytest.mark.gpu

ROWS, LENGTH, DIMS, GATHER = 2008, 1030, 192, 64
TARGET_GBPS = 45.0


def event_ms(fn, reps: int = 30, warmup: int = 5) -> float:
    """Median device time of ``fn`` in ms (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_ms(fn, reps: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in ms, synchronised (for host-side work)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


@pytest.fixture(scope="module")
def store() -> torch.Tensor:
    """The pinned bf16 store, filled with random values generated on the device (fast)."""
    src = torch.empty((ROWS, LENGTH, DIMS), dtype=torch.bfloat16, pin_memory=True)
    for a in range(0, ROWS, 256):
        n = min(256, ROWS - a)
        src[a : a + n].copy_(torch.randn(n, LENGTH, DIMS, dtype=torch.bfloat16, device="cuda"))
    torch.cuda.synchronize()
    return src


def _case(src: torch.Tensor):
    idx = torch.randint(0, ROWS, (GATHER,), device="cuda")
    out = torch.empty((GATHER, LENGTH, DIMS), dtype=torch.bfloat16, device="cuda")
    return idx, out


def _baselines(src: torch.Tensor, idx: torch.Tensor) -> dict:
    """Pinned copy rate of the same bytes, and host index_select + copy, measured now."""
    from vcfbert_fast.ops import gather_rows_reference

    host = torch.empty((GATHER, LENGTH, DIMS), dtype=torch.bfloat16, pin_memory=True)
    host.copy_(src[:GATHER])
    dev = torch.empty_like(host, device="cuda")
    nbytes = dev.numel() * dev.element_size()
    copy_ms = event_ms(lambda: dev.copy_(host, non_blocking=True))
    out = torch.empty_like(dev)
    host_ms = wall_ms(lambda: gather_rows_reference(src, idx, out=out))
    assert torch.equal(out.cpu(), src[idx.cpu()])
    return {
        "copy_ms": copy_ms,
        "copy_gbps": gbps(nbytes, copy_ms),
        "index_select_copy_ms": host_ms,
        "index_select_copy_gbps": gbps(nbytes, host_ms),
    }


def _bench(benchmark, src: torch.Tensor, gather, path: str) -> dict:
    idx, out = _case(src)
    gather(src, idx, out)
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), src[idx.cpu()]), f"{path}: gathered rows differ from src[index]"
    nbytes = out.numel() * out.element_size()
    ms = event_ms(lambda: gather(src, idx, out))
    info = {
        "path": path,
        "store_shape": [ROWS, LENGTH, DIMS],
        "rows": GATHER,
        "bytes": nbytes,
        "gather_ms": ms,
        "gbps": gbps(nbytes, ms),
        "target_gbps": TARGET_GBPS,
    }
    info.update(_baselines(src, idx))
    info["fraction_of_copy_rate"] = info["gbps"] / info["copy_gbps"]
    info["speedup_vs_index_select"] = info["index_select_copy_ms"] / ms
    benchmark.extra_info.update(info)
    print(
        f"\ngather_rows [{path}] {GATHER} x [{LENGTH}, {DIMS}] bf16 from pinned [{ROWS}, ...]: "
        f"{ms:.3f} ms = {info['gbps']:.1f} GB/s (target >= {TARGET_GBPS}); pinned copy "
        f"{info['copy_gbps']:.1f} GB/s ({100 * info['fraction_of_copy_rate']:.0f}% of it); host "
        f"index_select + copy {info['index_select_copy_gbps']:.1f} GB/s "
        f"({info['speedup_vs_index_select']:.1f}x slower)"
    )

    def run():
        gather(src, idx, out)
        torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    return info


def test_gather_rows_gpu(benchmark, store):
    """The public op, on whichever path is live (CUDA extension, CuPy/NVRTC, or the fallback)."""
    from vcfbert_fast.ops import gather_backend, gather_rows

    path = gather_backend("cuda", src_pinned=True)
    info = _bench(benchmark, store, lambda s, i, o: gather_rows(s, i, out=o), path)
    assert info["gbps"] >= TARGET_GBPS, (
        f"gather_rows via {path}: {info['gbps']:.1f} GB/s < {TARGET_GBPS} GB/s target"
        + (
            " (no zero-copy kernel: build the CUDA extension or install CuPy)"
            if path == "torch-reference"
            else ""
        )
    )


def test_gather_rows_unchecked_gpu(benchmark, store):
    """``check=False``, the training step's path (retrieved rows): no range-check read-back/stream sync."""
    from vcfbert_fast.ops import gather_backend, gather_rows

    path = gather_backend("cuda", src_pinned=True)
    info = _bench(
        benchmark, store, lambda s, i, o: gather_rows(s, i, out=o, check=False), path + "-unchecked"
    )
    assert info["gbps"] >= TARGET_GBPS, f"unchecked gather_rows via {path}: {info['gbps']:.1f} GB/s"


def test_gather_rows_cupy_gpu(benchmark, store):
    """The same kernel source compiled at run time through CuPy/NVRTC (installs without the extension)."""
    pytest.importorskip("cupy", reason="CuPy not installed")
    from vcfbert_fast.ops import _cupy_gather

    if not _cupy_gather.available():
        pytest.skip("CuPy path unavailable (kernel source or device missing)")
    info = _bench(benchmark, store, _cupy_gather.gather_rows_cupy, "cupy-nvrtc")
    assert info["gbps"] >= TARGET_GBPS, f"CuPy gather: {info['gbps']:.1f} GB/s < {TARGET_GBPS} GB/s target"
