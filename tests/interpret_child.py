"""Run a test file's ``test_interp_*`` cases under ``TRITON_INTERPRET=1`` in a fresh process.

Triton reads ``TRITON_INTERPRET`` when its kernels are first imported, so interpret-mode cases
cannot share the parent pytest process with anything that already imported Triton.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CHILD = os.environ.get("VCFBERT_INTERPRET_CHILD") == "1"
REPO = Path(__file__).resolve().parents[1]


def run_interpret_suite(test_file: str, n_expected: int) -> None:
    """Assert that exactly ``n_expected`` ``test_interp_*`` cases of ``test_file`` pass in the child."""
    env = dict(os.environ)
    env.update(TRITON_INTERPRET="1", VCFBERT_INTERPRET_CHILD="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        test_file,
        "-q",
        "-x",
        "-k",
        "test_interp_",
        "-p",
        "no:cacheprovider",
    ]
    res = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    m = re.search(r"(\d+) passed", out)
    assert m and int(m.group(1)) == n_expected, out[-3000:]
    assert "failed" not in out and "error" not in out.lower().split("passed")[-1], out[-3000:]
