"""Build of vcfbert-fast with its C++/CUDA extension ``vcfbert_fast._C``.

    pip install --no-build-isolation .        # or -e . ; compiles against the installed torch

* C++ CPU ops (csrc/ops.cpp, csrc/cpu/*.cpp) are always built when torch is importable.
* CUDA ops (csrc/cuda/*.cu) are added when a CUDA toolkit (CUDA_HOME / nvcc) and a CUDA build of
  torch are both present. VCFBERT_FAST_CUDA=0 forces them off, =1 forces them on (an error if
  either is missing).
* Without torch at build time, or without a working C++ compiler (``$CXX``, else ``c++``: the one
  torch's BuildExtension calls), the pure-Python package is built and the build says so; the
  ops then use their torch fallbacks at run time (``vcfbert-fast info`` shows which).

torch is not a build requirement in pyproject.toml on purpose: with build isolation pip would
install a second (possibly CUDA) torch just to compile against, which need not match the
torch the package runs with.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

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


def _compiler_problem() -> str | None:
    """Why no C++ compiler can build the extension (None: one compiled a test file).

    The compiler torch's BuildExtension uses on POSIX: ``$CXX``, else ``c++``. A probe compile
    costs well under a second and turns "no compiler" into a pure-Python build, not a failed install.
    """
    if sys.platform == "win32":
        return None  # MSVC is found by setuptools itself; let the build report its own errors
    cmd = shlex.split(os.environ.get("CXX", "c++")) or ["c++"]
    if shutil.which(cmd[0]) is None:
        return f"no C++ compiler: {cmd[0]!r} is not on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as fh:
            fh.write("#include <vector>\nint main() { std::vector<int> v{1}; return v[0] - 1; }\n")
        try:
            res = subprocess.run(
                [*cmd, "-std=c++17", "-c", src, "-o", os.path.join(tmp, "probe.o")],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the C++ compiler {' '.join(cmd)!r} could not run ({exc})"
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()
        return f"the C++ compiler {' '.join(cmd)!r} failed a test compile ({last[-1] if last else res.returncode})"
    return None


def _extensions():
    no_compiler = _compiler_problem()
    if no_compiler is not None and os.environ.get("VCFBERT_FAST_CUDA", "").strip() == "1":
        sys.exit(f"vcfbert-fast setup: VCFBERT_FAST_CUDA=1 but {no_compiler}")
    if no_compiler is not None:
        _say(
            f"{no_compiler}; building the pure-Python package without vcfbert_fast._C (its ops use "
            "torch fallbacks). Install a C++ compiler (e.g. apt install g++) and reinstall to build it"
        )
        return [], {}
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
