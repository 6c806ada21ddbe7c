"""Load the compiled extension ``vcfbert_fast._C`` once and say what it provides.

``HAS_EXT``: the C++ ops are registered in ``torch.ops.vcfbert_fast``; ``HAS_CUDA_EXT``: their
CUDA kernels are too; ``EXT_ERROR``: why the extension is absent (None when loaded). Without the
extension every op falls back to its torch reference; that is reported once (a warning) on the
first fallback, not at import, so a pure-Python install stays quiet until it matters.

``VCFBERT_FAST_EXT_LIBRARY=/path/to/_C*.so`` loads a library built elsewhere (e.g. by CMake)
instead of the in-package module.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

HAS_EXT: bool = False
HAS_CUDA_EXT: bool = False
EXT_ERROR: str | None = None
_warned = False


def has_kernel(op: str, key: str) -> bool:
    """Whether ``vcfbert_fast::<op>`` has a kernel for dispatch key ``key`` (e.g. "CPU", "CUDA")."""
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"vcfbert_fast::{op}", key))
    except Exception:  # noqa: BLE001 - a private API; absence means "unknown", i.e. no
        return False


def _register_fakes() -> None:
    """Shape-only (meta) implementations so ``torch.compile`` and FakeTensor tracing work.

    ``hamming_topk`` has its fake (and its CUDA and fallback kernels) in ops/hamming.py, which also
    serves builds without this extension.
    """

    @torch.library.register_fake("vcfbert_fast::gather_rows")
    def _gather_rows_fake(src, index, check=True):
        return src.new_empty((index.shape[0], *src.shape[1:]), device=index.device)

    @torch.library.register_fake("vcfbert_fast::gather_rows_out")
    def _gather_rows_out_fake(src, index, out, check=True):
        return None


def _load() -> None:
    global HAS_EXT, HAS_CUDA_EXT, EXT_ERROR
    path = os.environ.get("VCFBERT_FAST_EXT_LIBRARY")
    try:
        if path:
            torch.ops.load_library(path)
        else:
            importlib.import_module("vcfbert_fast._C")
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (ABI/undefined symbol), ...
        EXT_ERROR = f"{type(exc).__name__}: {exc}"
        return
    if not has_kernel("gather_rows", "CPU"):
        EXT_ERROR = "vcfbert_fast._C loaded but registered no CPU kernels (stale build?); rebuild it"
        return
    HAS_EXT = True
    HAS_CUDA_EXT = has_kernel("gather_rows", "CUDA")
    try:
        _register_fakes()
    except Exception as exc:  # noqa: BLE001 - tracing support is optional, the ops still run
        warnings.warn(f"vcfbert_fast: could not register fake ops for torch.compile: {exc}", stacklevel=2)


def warn_fallback(op: str) -> None:
    """Say once per process that an op runs on its torch reference because ``_C`` is missing."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"vcfbert_fast: C++ extension unavailable ({EXT_ERROR}); {op} and other ops use torch "
            "fallbacks. Rebuild with `pip install --no-build-isolation -e .`",
            RuntimeWarning,
            stacklevel=3,
        )


_load()
