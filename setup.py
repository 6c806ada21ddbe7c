"""Build of vcfbert-fast with its C++/CUDA extension ``vcfbert_fast._C``.

    pip install --no-build-isolation .        # or -e . ; compiles against the installed torch

* C++ CPU ops (csrc/ops.cpp, csrc/cpu/*.cpp) are always built when torch is importable.
* CUDA ops (csrc/cuda/*.cu) are added when a CUDA toolkit (CUDA_HOME / nvcc) and a CUDA build of
  torch are both present. VCFBERT_FAST_CUDA=0 forces them off, =1 forces them on (an error if
  either is missing).
* Without torch at build time the pure-Python package is built (torch fallbacks at run time).

torch is not a build requirement in pyproject.toml on purpose: with build isolation pip would
install a second (possibly CUDA) torch just to compile against, which need not match the
torch the package runs with.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _say(msg: str) -> None:
    print(f"vcfbert-fast setup: {msg}", file=sys.stderr)


def _ship_kernel_sources() -> None:
    """Copy the plain CUDA kernel headers into the package so the CuPy/NVRTC path can read them."""
    dest = os.path.join(ROOT, "vcfbert_fast", "csrc_kernels")
    os.makedirs(dest, exist_ok=True)
    for path in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cuh")):
        shutil.copyfile(path, os.path.join(dest, os.path.basename(path)))


def _extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as exc:  # noqa: BLE001 - any failure means: no extension, say why
        _say(
            f"torch is not importable at build time ({exc!r}); building the pure-Python package "
            "without vcfbert_fast._C (torch fallbacks are used). To build the extension: install "
            "torch, then `pip install --no-build-isolation .`"
        )
        return [], {}

    flag = os.environ.get("VCFBERT_FAST_CUDA", "").strip()
    # torch only looks for a toolkit in CUDA builds; look ourselves too, for an honest message.
    has_toolkit = bool(
        (CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")))
        or shutil.which("nvcc")
        or os.path.exists("/usr/local/cuda/bin/nvcc")
    )
    torch_cuda = torch.version.cuda is not None
    if flag == "0":
        use_cuda = False
        _say("VCFBERT_FAST_CUDA=0: CUDA ops disabled")
    elif flag == "1":
        if not has_toolkit or not torch_cuda:
            sys.exit(
                "vcfbert-fast setup: VCFBERT_FAST_CUDA=1 but "
                + ("no CUDA toolkit was found (set CUDA_HOME or put nvcc on PATH)" if not has_toolkit else "")
                + (" and " if not has_toolkit and not torch_cuda else "")
                + (f"torch {torch.__version__} is not a CUDA build" if not torch_cuda else "")
            )
        use_cuda = True
    else:
        use_cuda = has_toolkit and torch_cuda
        if not use_cuda:
            why = "no CUDA toolkit" if not has_toolkit else f"torch {torch.__version__} is a CPU build"
            _say(f"building CPU ops only ({why}); set VCFBERT_FAST_CUDA=1 to insist on CUDA")

    sources = ["csrc/ops.cpp"] + sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp"))
    )
    # -fopenmp: at::parallel_for is an OpenMP template in headers; -g0 overrides the -g in Python's
    # CFLAGS (a 6 MB library of debug info otherwise, and slower compiles).
    cxx = ["-O3", "-g0", "-std=c++20", "-fopenmp"]
    kwargs = {"extra_compile_args": {"cxx": cxx}, "extra_link_args": ["-fopenmp"]}
    if use_cuda:
        sources += sorted(
            os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu"))
        )
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]
        ext = CUDAExtension("vcfbert_fast._C", sources, **kwargs)
        _say(f"building CPU and CUDA ops (CUDA_HOME={CUDA_HOME}, torch CUDA {torch.version.cuda})")
    else:
        ext = CppExtension("vcfbert_fast._C", sources, **kwargs)
    # ninja (when installed) compiles the sources in parallel and incrementally.
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


_ship_kernel_sources()
ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
