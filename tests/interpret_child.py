"""Run the ``triton``-marked tests under ``TRITON_INTERPRET=1`` in one child pytest process.

Triton fixes interpret mode when a kernel is decorated (at module import), so interpreted kernels
cannot share a process with anything that already imported them as JIT kernels. The parent
collects the marked tests like any other; the first one to run starts a child on all of the
session's marked tests (by node id, so the child gets the same per-test seeds), and each marked
test then passes, fails or skips as it did in the child, with the child's report. So every Triton
test appears once, with its true outcome, and the root conftest's ``--require-triton`` can count
them. In a process that is already interpreted (the child itself, or ``TRITON_INTERPRET=1
python -m pytest -m triton``), marked tests simply run.

tests/conftest.py imports the hooks below; nothing else uses this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vcfbert_fast.ops.triton import interpret_mode, triton_available

REPO = Path(__file__).resolve().parents[1]
RESULTS_ENV = "VCFBERT_INTERPRET_RESULTS"  # child side: where to write {node id: [outcome, text]}
TIMEOUT_S = 900
_RESULTS = pytest.StashKey[dict]()
_recorded: dict[str, list[str]] = {}  # child side


def _run_child(session: pytest.Session) -> dict:
    """Run every marked test of the session in one interpreted child; its results by node id."""
    nodeids = [item.nodeid for item in session.items if item.get_closest_marker("triton")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        env = {**os.environ, "TRITON_INTERPRET": "1", RESULTS_ENV: str(out)}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "pytest", *nodeids, "-q", "-p", "no:cacheprovider"]
        try:
            res = subprocess.run(
                cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            log = res.stdout + res.stderr
        except subprocess.TimeoutExpired as exc:
            log = f"the child ran past {TIMEOUT_S} s\n{exc.stdout or ''}{exc.stderr or ''}"
        results = json.loads(out.read_text()) if out.exists() else {}
    return {"results": results, "log": log[-4000:]}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """Parent side: a marked test takes the outcome its node id had in the interpreted child."""
    if pyfuncitem.get_closest_marker("triton") is None or interpret_mode():
        return None
    if not triton_available():
        pytest.skip("triton is not installed (pip install -e '.[test]')")
    stash = pyfuncitem.session.stash
    if _RESULTS not in stash:
        stash[_RESULTS] = _run_child(pyfuncitem.session)
    child = stash[_RESULTS]
    outcome, text = child["results"].get(pyfuncitem.nodeid, ("missing", ""))
    if outcome == "passed":
        return True
    if outcome == "skipped":
        pytest.skip(f"skipped in the TRITON_INTERPRET=1 child: {text}")
    if outcome == "missing":
        pytest.fail(f"no report from the TRITON_INTERPRET=1 child; it wrote:\n{child['log']}", pytrace=False)
    pytest.fail(f"failed in the TRITON_INTERPRET=1 child:\n{text}", pytrace=False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Child side: a test's outcome over its setup, call and teardown (the first non-pass wins)."""
    if not os.environ.get(RESULTS_ENV):
        return
    current = _recorded.get(report.nodeid)
    if current is not None and current[0] != "passed":
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _recorded[report.nodeid] = ["skipped", reason]
    elif report.failed:
        _recorded[report.nodeid] = ["failed", f"({report.when}) {report.longreprtext}"]
    elif report.when == "call":
        _recorded[report.nodeid] = ["passed", ""]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path:
        Path(path).write_text(json.dumps(_recorded))
