"""The root conftest: the per-test seed (every RNG is seeded from it, it is printed, it replays) and
the ``--require-triton`` count."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PROBE = "VCFBERT_SEED_PROBE"  # set by test_replay_in_a_fresh_process for its child runs
PROBE_ID = "tests/test_conftest.py::test_probe"


def _draws() -> dict:
    return {
        "torch": torch.rand(3).tolist(),
        "numpy": np.random.rand(3).tolist(),
        "random": [random.random() for _ in range(3)],
    }


def _reseed(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def test_probe(seed, rng, request):
    """Every RNG starts from the printed seed. Under PROBE it records its draws and fails on purpose."""
    session = int(os.environ["VCFBERT_TEST_SEED"])
    assert seed == _root_conftest(request.config).derive_seed(session, request.node.nodeid)
    assert torch.initial_seed() == seed
    assert 0 <= seed < 2**32
    n = rng.integers(2**62)
    assert n == np.random.default_rng(seed).integers(2**62)
    first = _draws()
    _reseed(seed)
    assert _draws() == first
    if os.environ.get(PROBE):
        with open(os.environ[PROBE], "a") as f:
            f.write(json.dumps({"seed": seed, "draws": first}) + "\n")
        raise AssertionError("probe failure (on purpose: its report must show the replay line)")


def _run_child(args: list[str], session_seed: int, out: Path) -> str:
    env = {**os.environ, "VCFBERT_TEST_SEED": str(session_seed), PROBE: str(out)}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]  # only the probe fails
    return res.stdout


def test_replay_in_a_fresh_process(tmp_path, rng, request):
    """A fresh process with VCFBERT_TEST_SEED set gives the probe the seed derived for it, prints
    it in the failure report, and draws what that seed draws."""
    session = int(rng.integers(2**32))
    out = tmp_path / "draws.jsonl"
    text = _run_child([PROBE_ID], session, out)
    (run,) = [json.loads(line) for line in out.read_text().splitlines()]
    s = _root_conftest(request.config).derive_seed(session, PROBE_ID)
    assert run["seed"] == s
    _reseed(s)
    assert run["draws"] == _draws()
    replay = f"seed {s} (replay: VCFBERT_TEST_SEED={session} python -m pytest '{PROBE_ID}')"
    assert replay in text, text[-3000:]


def _root_conftest(config):
    path = str(REPO / "conftest.py")
    return next(p for p in config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == path)


def _item(nodeid: str, triton: bool):
    marker = object() if triton else None
    return SimpleNamespace(nodeid=nodeid, get_closest_marker=lambda n: marker if n == "triton" else None)


@pytest.mark.parametrize(
    "marked,passed,required,fails",
    [
        (["a", "b"], ["a", "b", "c"], True, False),  # every collected triton test passed
        (["a", "b"], ["a", "c"], True, True),  # one skipped or failed: the count is short
        ([], ["c"], True, True),  # none collected (e.g. every Triton module skipped at import)
        (["a", "b"], ["a"], False, False),  # without --require-triton the count is only reported
    ],
)
def test_triton_count(request, marked, passed, required, fails):
    gate = type(request.config.pluginmanager.get_plugin("vcfbert-triton-count"))(required)
    items = [_item(n, n in marked) for n in ("a", "b", "c")]
    for n in passed:
        gate.pytest_runtest_logreport(SimpleNamespace(when="setup", passed=True, nodeid=n))
        gate.pytest_runtest_logreport(SimpleNamespace(when="call", passed=True, nodeid=n))
    session = SimpleNamespace(items=items, exitstatus=pytest.ExitCode.OK)
    gate.pytest_sessionfinish(session)
    assert (session.exitstatus == pytest.ExitCode.TESTS_FAILED) == fails
    ran = len(set(marked) & set(passed))
    assert gate.line.startswith(f"Triton interpreter tests: {ran} of {len(marked)} collected passed")


def test_require_triton_fails_a_run_without_triton_tests():
    res = subprocess.run(
        [sys.executable, "-m", "pytest", f"{PROBE_ID}", "-q", "-p", "no:cacheprovider", "--require-triton"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout[-3000:]
    assert "1 passed" in res.stdout and "Triton interpreter tests: 0 of 0 collected passed" in res.stdout
