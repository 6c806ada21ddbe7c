"""Device resolution, one rule for every subcommand: ``auto`` -> CUDA when available, else CPU."""

from __future__ import annotations

import os

import torch

from .errors import InputError

__all__ = ["PRECISIONS", "available_cpus", "inference_dtype", "resolve_device", "set_threads"]

_KNOWN = ("auto", "cpu", "cuda")


def resolve_device(pref: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a usable ``torch.device``.

    ``local_rank`` picks the GPU of a torchrun process when no index is given. Anything else
    (``tpu``, ``cuda`` without CUDA, ``cuda:7`` on a 1-GPU box) is a one-line ``InputError``.
    """
    text = str(pref).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    kind = text.split(":", 1)[0]
    if kind not in _KNOWN:
        raise InputError(None, f"--device {pref!r} is not supported", "use auto, cpu, cuda or cuda:N")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(None, f"--device {pref!r} is not a device name", "use auto, cpu, cuda or cuda:N")
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise InputError(None, f"--device {pref} but CUDA is not available", "use --device cpu or auto")
    if dev.index is None:
        dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    if dev.index >= torch.cuda.device_count():
        raise InputError(
            None,
            f"--device {dev} but only {torch.cuda.device_count()} CUDA device(s) are visible",
            "pick an index below that, or set CUDA_VISIBLE_DEVICES",
        )
    return dev


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a Slurm or taskset allocation), not the box's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None, flag: str = "--threads") -> int:
    """Check ``threads`` (None: ``available_cpus()``), set torch's intra-op pool to it, return it."""
    if threads is None:
        threads = available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(None, f"{flag} {threads} must be a whole number >= 1", f"omit {flag} to use all allowed CPUs")
    torch.set_num_threads(threads)
    return threads


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16_matmul() -> bool:
    """The CPU multiplies bf16 in hardware (Intel AMX tiles): bf16 inference is then faster than fp32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means "no"
        return False


def inference_dtype(dev: torch.device, precision: str = "auto", encode: str = "informative") -> torch.dtype | None:
    """The autocast dtype of inference: ``bf16`` or None (fp32).

    ``auto``: bf16 on CUDA. On a CPU with AMX, bf16 for a model whose encoder runs on every token
    (``encode="all"``: 1.3-1.4x faster forward, dosages within 1e-4 on average), fp32 for an
    informative model (``encode="informative"``, the default): its forward is gathers and small
    matmuls, where the casts cost more than AMX saves (inference 11.1 s against 12.9 s in bf16,
    and 0.15 GB less, on the 5 Mb benchmark: BENCHMARKS.md). fp32 elsewhere (bf16 emulated on
    AVX-512/AVX2 is slower than fp32).
    """
    if precision not in PRECISIONS:
        raise InputError(None, f"--precision {precision!r} is not supported", "use auto, fp32 or bf16")
    if precision == "fp32":
        return None
    if precision == "bf16" or dev.type == "cuda":
        return torch.bfloat16
    if dev.type == "cpu" and encode == "all" and cpu_has_bf16_matmul():
        return torch.bfloat16
    return None
