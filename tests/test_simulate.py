"""The msprime simulator's outputs, checked by reading them back independently with cyvcf2."""

from __future__ import annotations

import numpy as np
import pytest

cyvcf2 = pytest.importorskip("cyvcf2")
pytest.importorskip("msprime")


def load(path):
    """Independent read: cyvcf2 directly, no vcfbert_fast code."""
    vcf = cyvcf2.VCF(str(path))
    samples = list(vcf.samples)
    pos, ref, alt, gts, phased, chroms = [], [], [], [], [], set()
    for v in vcf:
        chroms.add(v.CHROM)
        pos.append(v.POS)
        ref.append(v.REF)
        alt.append(v.ALT)
        g = v.genotype.array()
        gts.append(g[:, :2])
        phased.append(g[:, 2].astype(bool))
    return samples, np.array(pos), ref, alt, np.array(gts), np.array(phased), chroms


def test_files_exist_and_indexed(small_sim):
    for p in (small_sim.ref_vcf, small_sim.truth_vcf, small_sim.target_vcf, small_sim.panel_txt):
        assert p.exists() and p.stat().st_size > 0
    for idx in (small_sim.ref_index, small_sim.truth_index, small_sim.target_index):
        assert idx.exists() and idx.stat().st_size > 0
    # the index works: a region query returns exactly the records in that region
    _, pos, *_ = load(small_sim.truth_vcf)
    lo, hi = int(pos[len(pos) // 4]), int(pos[len(pos) // 2])
    got = [v.POS for v in cyvcf2.VCF(str(small_sim.truth_vcf))(f"{small_sim.contig}:{lo}-{hi}")]
    assert got == [int(p) for p in pos if lo <= p <= hi]


def test_panel_truth_target_consistent(small_sim):
    rs, rpos, rref, ralt, rg, rph, rchr = load(small_sim.ref_vcf)
    ts, tpos, tref, talt, tg, tph, tchr = load(small_sim.truth_vcf)
    as_, apos, aref, aalt, ag, aph, achr = load(small_sim.target_vcf)
    assert rchr == tchr == achr == {small_sim.contig}
    assert len(rs) == 60 and len(ts) == 8 and as_ == ts
    assert not set(rs) & set(ts)  # disjoint panel / held-out samples
    assert rs == small_sim.ref_samples and ts == small_sim.target_samples
    # all sites: biallelic SNPs, 1-based strictly increasing positions, same in ref and truth
    assert (np.diff(rpos) > 0).all() and rpos.min() >= 1 and rpos.max() <= 150_000
    np.testing.assert_array_equal(rpos, tpos)
    assert rref == tref and ralt == talt
    assert all(len(a) == 1 and len(a[0]) == 1 and len(r) == 1 for r, a in zip(rref, ralt))
    assert rph.all() and tph.all() and aph.all()  # phased everywhere
    assert set(np.unique(rg)) <= {0, 1} and set(np.unique(tg)) <= {0, 1}
    # every site polymorphic across panel + targets
    both = np.concatenate([rg.reshape(len(rpos), -1), tg.reshape(len(tpos), -1)], axis=1)
    assert (both.min(axis=1) == 0).all() and (both.max(axis=1) == 1).all()
    # target sites are a subset of truth sites with identical genotypes there
    where = np.searchsorted(tpos, apos)
    np.testing.assert_array_equal(tpos[where], apos)
    np.testing.assert_array_equal(tg[where], ag)
    assert [tref[i] for i in where] == aref and [talt[i] for i in where] == aalt
    # about 1 in 15 sites on the array, favouring common variants
    assert small_sim.n_array_sites == len(apos) == round(len(rpos) / 15)
    af = rg.reshape(len(rpos), -1).mean(axis=1)
    maf = np.minimum(af, 1 - af)
    assert np.median(maf[where]) > np.median(maf)


def test_panel_txt(small_sim):
    lines = small_sim.panel_txt.read_text().splitlines()
    assert lines[0].split() == ["sample", "pop", "super_pop"]
    rows = [ln.split() for ln in lines[1:]]
    names = {r[0] for r in rows}
    assert names == set(small_sim.ref_samples) | set(small_sim.target_samples)
    sup = {"YRI": "AFR", "CEU": "EUR", "CHB": "EAS"}
    for name, pop, sp in rows:
        assert name.startswith(f"sim_{pop}_") and sup[pop] == sp
    counts = {p: sum(1 for r in rows if r[0] in small_sim.ref_samples and r[1] == p) for p in sup}
    assert sorted(counts.values()) == [20, 20, 20]


def test_read_back_with_package(small_sim):
    from vcfbert_fast.io import align_target, read_panel, read_target

    panel = read_panel(small_sim.ref_vcf, panel_file=small_sim.panel_txt, progress=False)
    target = read_target(small_sim.target_vcf)
    al = align_target(target, panel)
    assert al.n_matched == target.n_sites == small_sim.n_array_sites and al.n_absent == 0
    assert set(panel.populations) == {"YRI", "CEU", "CHB"}


def test_deterministic_and_seed_dependent(tmp_path):
    from vcfbert_fast.simulate import simulate

    kw = {"n_ref_samples": 9, "n_target_samples": 3, "length_bp": 40_000, "progress": False}
    a = simulate(tmp_path / "a", seed=3, **kw)
    b = simulate(tmp_path / "b", seed=3, **kw)
    c = simulate(tmp_path / "c", seed=4, **kw)
    ra, rb, rc = load(a.ref_vcf), load(b.ref_vcf), load(c.ref_vcf)
    np.testing.assert_array_equal(ra[1], rb[1])
    np.testing.assert_array_equal(ra[4], rb[4])
    np.testing.assert_array_equal(load(a.target_vcf)[1], load(b.target_vcf)[1])
    assert ra[1].shape != rc[1].shape or not np.array_equal(ra[1], rc[1])


def test_cli(tmp_path):
    from vcfbert_fast.cli import main

    rc = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "o"),
            "--n-ref",
            "6",
            "--n-target",
            "3",
            "--length",
            "30000",
            "--no-progress",
        ]
    )
    assert rc == 0 and (tmp_path / "o" / "target.vcf.gz.tbi").exists()
