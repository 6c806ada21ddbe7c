"""vcfbert_fast.io: every module imports, the package map names each one, the public names resolve."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import vcfbert_fast
import vcfbert_fast.io as vio

MODULES = sorted(m.name for m in pkgutil.iter_modules(vio.__path__))


def test_modules_found():
    assert {"bgzf", "checks", "panel_reader", "populations", "target"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    module = importlib.import_module(f"vcfbert_fast.io.{name}")
    assert module.__doc__, f"vcfbert_fast.io.{name} has no module docstring saying its job"


def test_package_map_names_every_module():
    missing = [name for name in MODULES if f"``{name}``" not in vio.__doc__]
    assert not missing, f"vcfbert_fast/io/__init__.py's module map lacks {missing}"


def test_public_names():
    for name in vio.__all__:
        assert getattr(vio, name) is not None
    for name in ("Panel", "Target", "read_panel", "read_target", "align_target"):
        assert getattr(vcfbert_fast, name) is getattr(vio, name)


def test_panel_module_is_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("vcfbert_fast.panel")
