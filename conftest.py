"""pytest configuration shared by tests/ and benchmarks/: the ``gpu`` skip, the Triton count,
per-test seeds, the ``one_thread`` fixture (the markers are declared in pyproject.toml).

``triton`` tests run a Triton kernel on CPU in the interpreter (tests/interpret_child.py runs them
in a ``TRITON_INTERPRET=1`` child). The summary says how many of those collected passed;
``--require-triton`` (CI) fails the run unless all of them did and there was at least one, so a
missing triton or a skipped interpreter suite cannot pass unnoticed.

Every test starts from a seed that is printed, so a random failure can be replayed. The run has
one session seed (random, or ``VCFBERT_TEST_SEED``; it heads the pytest output and is exported to
child processes); each test's seed is derived from it and the test's node id, so the same test
gets the same seed however the run is selected. The autouse ``seed`` fixture seeds ``torch``,
numpy's global RNG and ``random`` with it; ``rng`` is a numpy Generator from the same seed. A
failing test's captured output shows, for example::

    seed 2718281828 (replay: VCFBERT_TEST_SEED=31415926 python -m pytest 'tests/test_loss.py::test_x')

Run that command to get the same inputs again.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets

import numpy as np
import pytest
import torch

SEED_ENV = "VCFBERT_TEST_SEED"
_SESSION_SEED = pytest.StashKey[int]()


def pytest_addoption(parser):
    parser.addoption(
        "--require-triton",
        action="store_true",
        help="fail unless every collected `triton` test passed (and there was one): CI's guard",
    )


def pytest_configure(config):
    config.pluginmanager.register(_TritonCount(config.getoption("require_triton")), "vcfbert-triton-count")
    if SEED_ENV not in os.environ:
        os.environ[SEED_ENV] = str(secrets.randbits(32))  # exported: subprocess suites reuse it
    config.stash[_SESSION_SEED] = int(os.environ[SEED_ENV])


def pytest_report_header(config):
    return f"test seed: {SEED_ENV}={config.stash[_SESSION_SEED]} (set it to replay this run)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _TritonCount:
    """Counts the ``triton`` tests that passed against those collected (the derived expectation)."""

    def __init__(self, required: bool):
        self.required = required
        self.passed: set[str] = set()
        self.line = ""

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.passed:
            self.passed.add(report.nodeid)

    def pytest_sessionfinish(self, session):
        collected = {item.nodeid for item in session.items if item.get_closest_marker("triton")}
        ran = len(collected & self.passed)
        if collected or self.required:
            self.line = f"Triton interpreter tests: {ran} of {len(collected)} collected passed"
        if self.required and (not collected or ran < len(collected)):
            self.line += " -- --require-triton needs all of them (and at least one)"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.line:
            terminalreporter.write_line(self.line)


def derive_seed(session_seed: int, nodeid: str) -> int:
    """The seed of one test: a stable 32-bit hash of the session seed and the node id."""
    digest = hashlib.blake2b(f"{session_seed}:{nodeid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@pytest.fixture(autouse=True)
def seed(request) -> int:
    """Seed torch, numpy's global RNG and ``random`` for this test; print how to replay it."""
    session = request.config.stash[_SESSION_SEED]
    s = derive_seed(session, request.node.nodeid)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    print(f"seed {s} (replay: {SEED_ENV}={session} python -m pytest '{request.node.nodeid}')")
    request.node.user_properties.append(("seed", s))
    return s


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy Generator from this test's seed."""
    return np.random.default_rng(seed)


@pytest.fixture
def one_thread():
    """Ratios on one thread: a loaded 2-core box makes torch's thread pool swing 10x between runs,
    so speed ratios measure contention instead of work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
