"""Shared test fixtures: small simulated data sets; the interpreter child of ``triton`` tests.

Markers, the ``gpu`` skip and per-test seeds are in ../conftest.py.
"""

from __future__ import annotations

import pytest
from interpret_child import pytest_pyfunc_call, pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """A small msprime simulation (seconds): 60 panel samples, 8 targets, 150 kb."""
    from vcfbert_fast.simulate import simulate

    out = tmp_path_factory.mktemp("sim")
    return simulate(out, n_ref_samples=60, n_target_samples=8, length_bp=150_000, seed=7)
