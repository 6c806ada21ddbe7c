"""Optional dependencies (the package's extras): imported on first use, a one-line error when missing.

msprime (``simulate``, the demo), faiss (``--engine faiss``) and matplotlib (the r^2 plots) are
not hard dependencies: ``impute`` and ``train`` never need them, and faiss-cpu alone is a large
wheel. A missing one is a ``MissingDependencyError`` (a ``VcfBertError``, so the CLI prints one
line) naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import VcfBertError

# module -> (extra, its pip package, what needs it)
EXTRAS: dict[str, tuple[str, str, str]] = {
    "msprime": ("sim", "msprime", "simulate (and the demo)"),
    "faiss": ("faiss", "faiss-cpu", "the FAISS retrieval engine (--engine faiss)"),
    "matplotlib": ("plot", "matplotlib", "the r^2 plots"),
}


class MissingDependencyError(VcfBertError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def optional_import(name: str) -> ModuleType:
    """``import name`` (one of ``EXTRAS``), or a one-line ``MissingDependencyError`` naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra, package, what = EXTRAS[name.split(".")[0]]
        raise MissingDependencyError(
            f"{package} is not installed and {what} needs it: pip install 'vcfbert-fast[{extra}]' "
            f"(or pip install {package})"
        ) from exc
