"""``infer_dosages(settle=C)``: haplotypes the donors' vote settles take the vote, the model runs on the rest.

The expectation is built independently of the settled path: the model everywhere (``settle=None``,
the batch path) and the vote (``vote_dosages``), combined by the rule itself, per window and
haplotype, from the vote and the input calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_impute import _fresh_checkpoint


@pytest.fixture(scope="module")
def setup(small_sim, tmp_path_factory):
    from vcfbert_fast.imputation import TargetCalls, load_model, model_tables, unphased_hets
    from vcfbert_fast.io import align_target, read_panel, read_target

    panel = read_panel(small_sim.ref_vcf, progress=False)
    ckpt = _fresh_checkpoint(tmp_path_factory.mktemp("settle") / "m.pt", panel, 4, max_sites=40, engine="pbwt")
    model, state = load_model(ckpt, panel, torch.device("cpu"))
    target = read_target(str(small_sim.target_vcf), progress=False)
    tc = TargetCalls.from_alignment(
        target, align_target(target, panel), panel.n_sites, unphased_hets(target.alleles, target.phased)
    )
    tc.typed_calls[1, 0, :3] = -1  # missing input calls at three typed sites: sites a haplotype needs
    tables = model_tables(panel, state, target.samples, None, None)
    return panel, model, tables, tc


def _pop_af(tables, tc, rng):
    """A per-sample af_p table, so that packed halves of different samples must keep their own."""
    n_pop = 3
    table = rng.random((n_pop + 1, tables.freqs.af.size)).astype(np.float32)
    return dataclasses.replace(tables, pop_af=(table, rng.integers(0, n_pop + 1, tc.n_samples)))


def _run(panel, model, tables, tc, settle, batch_size=3):
    from vcfbert_fast.imputation import infer_dosages

    stats: dict = {}
    hds = infer_dosages(model, panel, tables, tc, torch.device("cpu"), batch_size, False, settle=settle, stats=stats)
    return hds, stats


def _needed(tc) -> np.ndarray:
    return (tc.calls(slice(None)) < 0).transpose(2, 0, 1)  # [M, S, 2]: no input call, so the dosage is written


def test_never_settled_equals_the_model_everywhere(setup, rng):
    """No vote is 1.5 sure: every haplotype is packed into the model's forwards (odd counts, halves of
    different samples with their own af_p), and gives what the per-sample batches give."""
    panel, model, tables, tc = setup
    tables = _pop_af(tables, tc, rng)
    want, st0 = _run(panel, model, tables, tc, None)
    got, st = _run(panel, model, tables, tc, 1.5, batch_size=int(rng.integers(1, 5)))
    need = _needed(tc)
    np.testing.assert_allclose(got[need], want[need], atol=1e-5)
    assert st["model_haplotype_windows"] == st["haplotype_windows"] == st0["model_haplotype_windows"] > 0


def test_always_settled_is_the_vote(setup):
    from vcfbert_fast.imputation import vote_dosages

    panel, model, tables, tc = setup
    got, st = _run(panel, model, tables, tc, 0.5)
    want = vote_dosages(panel, tables, tc, 4, False)
    need = _needed(tc)
    np.testing.assert_array_equal(got[need], want[need])
    assert st["model_haplotype_windows"] == 0 < st["haplotype_windows"]


@pytest.mark.parametrize("settle", [0.9, 0.99, 1.0])
def test_each_haplotype_window_takes_the_vote_or_the_model(setup, rng, settle):
    from vcfbert_fast.imputation import vote_dosages

    panel, model, tables, tc = setup
    tables = _pop_af(tables, tc, rng)
    model_all, _ = _run(panel, model, tables, tc, None)
    vote = vote_dosages(panel, tables, tc, 4, False)
    got, st = _run(panel, model, tables, tc, settle, batch_size=int(rng.integers(1, 5)))
    need = _needed(tc)
    want = np.full_like(got, np.nan)
    n_model = n_total = 0
    for w in range(len(tables.layout)):
        sl = tables.layout.sites(w)
        sites = sl.start + np.flatnonzero(tables.central[sl] == w)
        if sites.size == 0:
            continue
        v, nd = vote[sites], need[sites]  # [c, S, 2]
        settled = (~nd | (np.maximum(v, 1 - v) >= settle)).all(0)  # [S, 2]
        want[sites] = np.where(settled[None], v, model_all[sites])
        n_model += int((~settled).sum())
        n_total += settled.size
    np.testing.assert_allclose(got[need], want[need], atol=1e-5)
    assert 0 < n_model < n_total  # both kinds occur in this data
    assert st["model_haplotype_windows"] == n_model and st["haplotype_windows"] == n_total
    print(f"settle {settle}: the model ran on {n_model} of {n_total} haplotype-windows")


def test_impute_option_reaches_inference_and_the_summary(small_sim, tmp_path):
    """``impute(settle=...)`` end to end: 0.5 settles everything (the model never runs), off runs it
    on every haplotype-window; both write every panel site; the CLI's parser takes off or a number."""
    import argparse

    import cyvcf2

    from vcfbert_fast.impute import impute, settle_argument
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    ckpt = _fresh_checkpoint(tmp_path / "m.pt", panel, 4, max_sites=40, engine="pbwt")
    runs = {}
    for name, settle in (("off", None), ("all", 0.5)):
        out = str(tmp_path / f"{name}.vcf.gz")
        runs[name] = impute(small_sim.ref_vcf, small_sim.target_vcf, ckpt, out, progress=False, settle=settle)
        assert sum(1 for r in cyvcf2.VCF(out) if r.INFO.get("IMP")) == runs[name]["imputed_sites"] > 0
    assert runs["off"]["model_haplotype_windows"] == runs["off"]["haplotype_windows"] > 0
    assert runs["all"]["model_haplotype_windows"] == 0 < runs["all"]["haplotype_windows"]
    assert runs["all"]["settle"] == 0.5 and runs["off"]["settle"] is None
    assert settle_argument("off") is None and settle_argument(" OFF ") is None
    assert settle_argument("0.99") == 0.99
    with pytest.raises(argparse.ArgumentTypeError, match="not a number or 'off'"):
        settle_argument("sure")
