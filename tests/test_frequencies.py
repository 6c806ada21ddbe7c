"""compute_frequencies / population_af_for_samples against brute-force loops on random panels."""

from __future__ import annotations

import numpy as np

from vcfbert_fast.frequencies import compute_frequencies, population_af_for_samples
from vcfbert_fast.io import Panel


def random_panel(rng, with_pops=True):
    s, m = int(rng.integers(1, 30)), int(rng.integers(1, 200))
    p = rng.random(m)
    haps = (rng.random((2 * s, m)) < p).astype(np.uint8)
    pops = sups = None
    if with_pops:
        pops = np.array(rng.choice(["YRI", "CEU", "CHB", "GBR"], size=s), dtype=object)
        sups = np.array(
            [{"YRI": "AFR", "CEU": "EUR", "CHB": "EAS", "GBR": "EUR"}[x] for x in pops], dtype=object
        )
    return Panel(
        path="x.vcf",
        contig="20",
        positions=np.arange(1, m + 1, dtype=np.int64),
        ref=np.array(["A"] * m, dtype=object),
        alt=np.array(["G"] * m, dtype=object),
        ids=np.array(["."] * m, dtype=object),
        samples=[f"s{i}" for i in range(s)],
        haplotypes=haps,
        populations=pops,
        super_populations=sups,
    )


def brute(panel, samples, labels=None):
    m = panel.n_sites
    af, ref, het, hom = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    for j in range(m):
        for s in samples:
            a, b = int(panel.haplotypes[2 * s, j]), int(panel.haplotypes[2 * s + 1, j])
            af[j] += a + b
            ref[j] += a + b == 0
            het[j] += a + b == 1
            hom[j] += a + b == 2
    n = len(samples)
    return af / (2 * n), ref / n, het / n, hom / n


def test_global_frequencies_all_and_subset():
    rng = np.random.default_rng(np.random.randint(2**31))
    for _ in range(3):
        panel = random_panel(rng)
        for subset in (
            None,
            np.sort(
                rng.choice(panel.n_samples, size=int(rng.integers(1, panel.n_samples + 1)), replace=False)
            ),
        ):
            f = compute_frequencies(panel, subset)
            idx = list(range(panel.n_samples)) if subset is None else list(subset)
            af, ref, het, hom = brute(panel, idx)
            for got, want in ((f.af, af), (f.ref, ref), (f.het, het), (f.hom, hom)):
                assert got.dtype == np.float32 and got.shape == (panel.n_sites,)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
            np.testing.assert_allclose(f.ref + f.het + f.hom, 1.0, atol=1e-6)


def test_population_frequencies():
    rng = np.random.default_rng(np.random.randint(2**31))
    panel = random_panel(rng)
    subset = np.sort(rng.choice(panel.n_samples, size=max(1, panel.n_samples // 2), replace=False))
    f = compute_frequencies(panel, subset)
    present = sorted(set(panel.populations[subset]))
    assert f.populations == present and f.pop_af.shape == (len(present), panel.n_sites)
    for i, pop in enumerate(present):
        members = [s for s in subset if panel.populations[s] == pop]
        np.testing.assert_allclose(f.pop_af[i], brute(panel, members)[0], atol=1e-6)
    for i, sp in enumerate(f.super_populations):
        members = [s for s in subset if panel.super_populations[s] == sp]
        np.testing.assert_allclose(f.super_pop_af[i], brute(panel, members)[0], atol=1e-6)
    # each sample's own population AF; populations absent from the subset fall back to the global AF
    query = rng.integers(0, panel.n_samples, size=7)
    got = population_af_for_samples(f, panel, query)
    assert got.shape == (7, panel.n_sites) and got.dtype == np.float32
    for r, s in enumerate(query):
        pop = panel.populations[s]
        want = f.pop_af[present.index(pop)] if pop in present else f.af
        np.testing.assert_array_equal(got[r], want)


def test_no_populations_gives_global_af():
    rng = np.random.default_rng(np.random.randint(2**31))
    panel = random_panel(rng, with_pops=False)
    f = compute_frequencies(panel)
    assert f.pop_af is None and f.populations == []
    got = population_af_for_samples(f, panel, [0, panel.n_samples - 1])
    np.testing.assert_array_equal(got, np.stack([f.af, f.af]))
