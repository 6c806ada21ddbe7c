"""Triton kernels of the ops in :mod:`vcfbert_fast.ops` (imported lazily: only where Triton is installed).

The kernel modules here import ``triton`` at import time, so nothing in the package imports them
at package import; the op APIs in :mod:`vcfbert_fast.ops` load them at call time. This file
itself never imports ``triton``.

Interpret mode (``TRITON_INTERPRET=1``) lets the kernels run on CPU tensors for tests;
Triton reads that variable when a kernel is *decorated*, i.e. when these modules are
first imported, so it must be set before that (tests run them in a fresh process).
"""

from __future__ import annotations

import importlib.util
import os

# The Triton hamming_topk kernel unrolls its per-tile top-k, so it takes k <= this; the op serves
# larger k with the torch reference. Here, not in hamming_topk.py, so it reads without triton.
HAMMING_MAX_K = 64


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (no import is done here)."""
    return importlib.util.find_spec("triton") is not None


def interpret_mode() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def use_triton(device) -> bool:
    """Whether a Triton kernel can run on tensors of ``device``.

    CUDA with Triton installed: yes. CPU: only in interpret mode (tests), never by default.
    """
    import torch

    device = torch.device(device)
    if not triton_available():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpret_mode()
