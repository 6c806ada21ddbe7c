"""Shared test configuration: the ``gpu`` marker and small simulated data sets."""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """A small msprime simulation (seconds): 60 panel samples, 8 targets, 150 kb."""
    from vcfbert_fast.simulate import simulate

    out = tmp_path_factory.mktemp("sim")
    return simulate(out, n_ref_samples=60, n_target_samples=8, length_bp=150_000, seed=7)
