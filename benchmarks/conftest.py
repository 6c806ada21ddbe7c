"""pytest-benchmark configuration for ``python -m pytest benchmarks/ --benchmark-only``.

* ``gpu`` marker: skipped without a CUDA device (the repository root's conftest.py).
* ``--bench-config {cpu-small,gpu}`` (default: ``gpu`` when CUDA is available, else ``cpu-small``)
  picks problem sizes through the ``bench_config`` fixture: ``cpu-small`` fits a 2-core CI box,
  ``gpu`` is the seed-scale configuration quoted in BENCHMARKS.md.
"""

from __future__ import annotations

import pytest
import torch

CONFIGS = {
    "cpu-small": {
        # retrieval: one training batch against one window of the panel
        "queries": 32,
        "refs": 2008,
        "sites": 1030,
        "k": 8,
        # gather: K*B rows of [L, D] bf16 from a store (kept small: 128 x 1030 x 192 bf16 = 51 MB)
        "store_rows": 128,
        "gather_rows": 64,
        "row_shape": (1030, 192),
    },
    "gpu": {
        "queries": 32,
        "refs": 2008,
        "sites": 1030,
        "k": 8,
        "store_rows": 2008,  # one full window pre-encoded: 0.79 GB bf16, pinned
        "gather_rows": 64,
        "row_shape": (1030, 192),
    },
}


def pytest_addoption(parser):
    parser.addoption(
        "--bench-config",
        choices=sorted(CONFIGS),
        default=None,
        help="problem sizes for the benchmarks (default: gpu with CUDA, else cpu-small)",
    )


@pytest.fixture(scope="session")
def bench_config(request) -> dict:
    name = request.config.getoption("--bench-config") or ("gpu" if torch.cuda.is_available() else "cpu-small")
    return {"name": name, **CONFIGS[name]}
