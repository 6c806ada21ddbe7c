"""Optional dependencies (extras): msprime, faiss and matplotlib are imported only where used, and a
missing one is a one-line error naming the extra to install (they were hard dependencies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vcfbert_fast.cli import main
from vcfbert_fast.optional import EXTRAS, MissingDependencyError, optional_import

ROOT = Path(__file__).resolve().parents[1]
BLOCK = sorted(EXTRAS)  # msprime, faiss, matplotlib


def test_package_imports_and_core_commands_run_without_the_extras(tmp_path):
    """A child in which the three cannot be imported: every module still imports; --help and info run."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {BLOCK!r}: sys.modules[name] = None  # import raises ImportError\n"
        "import vcfbert_fast\n"
        "mods = [m.name for m in pkgutil.walk_packages(vcfbert_fast.__path__, 'vcfbert_fast.')\n"
        "        if not m.name.endswith(('_C', '__main__'))]\n"
        "for m in mods: importlib.import_module(m)\n"
        "from vcfbert_fast.cli import main\n"
        "for cmd in ('simulate', 'train', 'impute', 'evaluate', 'demo'):\n"
        "    try: main([cmd, '--help'])\n"
        "    except SystemExit as e: assert e.code == 0, cmd\n"
        "print(len(mods))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) > 30  # the walk found the package's modules


@pytest.mark.parametrize("name", BLOCK)
def test_missing_extra_is_one_line_naming_it(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    extra, package, _ = EXTRAS[name]
    with pytest.raises(MissingDependencyError) as e:
        optional_import(name)
    msg = str(e.value)
    assert "\n" not in msg and f"pip install 'vcfbert-fast[{extra}]'" in msg and package in msg
    assert isinstance(e.value, ImportError)  # `except ImportError` callers still work


def test_simulate_without_msprime_is_a_one_line_cli_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "msprime", None)
    rc = main(["simulate", "--out", str(tmp_path / "sim"), "--n-ref", "4", "--n-target", "2"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1 and "vcfbert-fast[sim]" in err[0], err


def test_faiss_engine_and_plots_without_their_extras(monkeypatch, small_sim, tmp_path):
    from vcfbert_fast.evaluate import plot_r2
    from vcfbert_fast.frequencies import compute_frequencies
    from vcfbert_fast.io import read_panel
    from vcfbert_fast.retrieval import make_retriever
    from vcfbert_fast.windows import make_windows

    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    panel = read_panel(small_sim.ref_vcf, progress=False)
    layout = make_windows(panel.n_sites, max_sites=64)
    with pytest.raises(MissingDependencyError, match=r"vcfbert-fast\[faiss\]"):
        make_retriever("faiss", panel, compute_frequencies(panel), layout, k=2)
    with pytest.raises(MissingDependencyError, match=r"vcfbert-fast\[plot\]"):
        plot_r2({"maf_bins": [], "files": {}, "af_baseline": {}}, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_pyproject_extras_match_the_optional_imports():
    """msprime, faiss-cpu and matplotlib are extras, not dependencies; [test] has all of them and triton."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {d.split(";")[0].split(">")[0].split("=")[0].strip() for d in project["dependencies"]}
    extras = {k: [d.split(";")[0].strip() for d in v] for k, v in project["optional-dependencies"].items()}
    for extra, package, _ in EXTRAS.values():
        assert package not in deps and extras[extra] == [package] and package in extras["test"]
    assert "triton" in extras["gpu"] and "triton" in extras["test"] and "torch>=2.4" in project["dependencies"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["readme"] == "README.md" and project["classifiers"]


def test_readme_install_lines():
    """The README's install block: the CPU torch build for CPU machines beside the plain one, and extras
    that pyproject defines (a typo there would install without them and fail at `demo`)."""
    import re

    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(pip install torch.*?)```", text, re.DOTALL).group(1)
    lines = [x.split("#")[0].strip() for x in block.splitlines()]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in lines
    assert "pip install torch" in lines
    named = re.findall(r'"\.\[([a-z,]+)\]"', block)
    assert named and all(e in extras for group in named for e in group.split(","))
    assert {"sim", "plot"} <= set(named[0].split(","))  # what the demo on that line needs
    assert "setuptools" in block  # a new Python 3.12 venv has none, and --no-build-isolation needs it
