"""The README's Python API example runs as written (on the small simulation instead of sim/)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(small_sim, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 2, "README should hold the model example and the data/retrieval example"
    sim_dir = Path(small_sim.ref_vcf).parent
    code = "\n".join(blocks).replace('"sim/', f'"{sim_dir}/')
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    ns = runpy.run_path(str(script))
    hap1, gt = ns["hap1"], ns["gt"]
    assert hap1.shape == (2, 66, 2) and gt.shape == (2, 66, 4)
    torch.testing.assert_close(hap1.sum(-1), torch.ones(2, 66))
    rows, batch, panel = ns["rows"], ns["batch"], ns["panel"]
    assert rows.shape == (batch["hap_1"].shape[0], 4)
    assert int(rows.min()) >= 0 and int(rows.max()) < panel.n_haplotypes
    assert not (rows // 2 == batch["sample_idx"][:, None]).any(), "a query retrieved its own haplotype"
