"""vcf_writer: the written VCF read back with independent readers (cyvcf2, gzip, bcftools)."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pytest

from vcfbert_fast.vcf_writer import ImputedSites, estimated_r2, write_imputed_vcf


def _random_sites(rng, m=300, s=7):
    positions = np.sort(rng.choice(np.arange(1000, 1_000_000), size=m, replace=False)).astype(np.int64)
    hds = rng.random((m, s, 2)).astype(np.float32)
    # some confident calls, some exact 0/1, some near the 0.5 boundary
    hds[rng.random((m, s, 2)) < 0.3] = 0.0
    hds[rng.random((m, s, 2)) < 0.2] = 1.0
    imputed = rng.random(m) < 0.8
    gt = (hds > 0.5).astype(np.int8)
    typed_alleles = rng.integers(0, 2, size=(m, s, 2)).astype(np.int8)
    gt[~imputed] = typed_alleles[~imputed]
    hds[~imputed] = typed_alleles[~imputed]
    phased = np.ones((m, s), dtype=bool)
    # a few unphased typed hets: GT "0/1", HDS 0.5,0.5, GP one-hot het
    unph = (~imputed)[:, None] & (gt[..., 0] != gt[..., 1]) & (rng.random((m, s)) < 0.3)
    phased[unph] = False
    gt[unph] = np.array([0, 1], dtype=np.int8)
    hds[unph] = 0.5
    gp = None
    sites = ImputedSites(
        contig="chr9",
        positions=positions,
        ids=np.array([f"rs{i}" for i in range(m)], dtype=object),
        ref=np.array(rng.choice(list("AC"), size=m), dtype=object),
        alt=np.array(rng.choice(list("GT"), size=m), dtype=object),
        hds=hds,
        imputed=imputed,
        gt=gt,
        phased=phased,
        gp=gp,
    )
    # GP: product formula except at unphased typed hets where it is one-hot het
    from vcfbert_fast.vcf_writer import gp_from_hds

    gp = gp_from_hds(hds)
    gp[unph] = [0.0, 1.0, 0.0]
    sites.gp = gp
    return sites, unph


def test_written_vcf_is_sorted_indexed_consistent(tmp_path):
    import cyvcf2

    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _unph = _random_sites(rng)
    m, s = sites.hds.shape[:2]
    samples = [f"T{i}" for i in range(s)]
    # pass-through records: a target site absent from the panel, one before, one at a panel position, one after
    pt = [
        (int(sites.positions[0]) - 5, "chr9\t{}\tx1\tA\tAT\t.\tPASS\t.\tGT\t" + "\t".join(["0/1"] * s)),
        (int(sites.positions[10]), "chr9\t{}\tx2\tG\tC\t.\tPASS\t.\tGT\t" + "\t".join(["1|1"] * s)),
        (int(sites.positions[-1]) + 7, "chr9\t{}\tx3\tT\tA\t.\tPASS\t.\tGT\t" + "\t".join(["0|0"] * s)),
    ]
    pt = [(p, t.format(p)) for p, t in pt]
    out = tmp_path / "o.vcf.gz"
    summary = write_imputed_vcf(out, sites, samples, passthrough=pt[::-1], command="vcfbert-fast impute --x")
    assert summary["panel_sites"] == m and summary["passthrough_records"] == 3
    assert (tmp_path / "o.vcf.gz.tbi").exists()

    with gzip.open(out, "rt") as fh:  # plain gzip reads BGZF
        text = fh.read()
    assert "##vcfbert_fastCommand=vcfbert-fast impute --x" in text
    assert "##source=vcfbert-fast" in text

    vcf = cyvcf2.VCF(str(out))
    assert vcf.samples == samples
    recs = list(vcf)
    assert len(recs) == m + 3
    pos = [r.POS for r in recs]
    assert pos == sorted(pos)
    panel = [r for r in recs if r.ID and r.ID.startswith("rs")]
    others = {r.ID: r for r in recs if not (r.ID and r.ID.startswith("rs"))}
    assert set(others) == {"x1", "x2", "x3"}
    assert others["x1"].ALT == ["AT"] and others["x1"].genotypes[0][:2] == [0, 1]
    assert [r.ID for r in panel] == [f"rs{i}" for i in range(m)]
    af_expect, r2_expect = estimated_r2(sites.hds)
    for i, r in enumerate(panel):
        ds = r.format("DS")[:, 0]
        gp = r.format("GP")
        hds = r.format("HDS")
        assert np.allclose(gp.sum(axis=1), 1.0, atol=1e-6)
        assert np.allclose(ds, gp[:, 1] + 2 * gp[:, 2], atol=1e-6)
        assert np.allclose(ds, hds.sum(axis=1), atol=0.0021)
        assert np.allclose(hds, sites.hds[i], atol=0.0005)
        assert np.allclose(gp, sites.gp[i], atol=0.0011)
        g = np.array([x[:2] for x in r.genotypes])
        phased = np.array([x[2] for x in r.genotypes])
        assert (g == sites.gt[i]).all()
        assert (phased == sites.phased[i]).all()
        if sites.imputed[i]:
            assert r.INFO.get("IMP") is True and r.INFO.get("TYPED") is None
            clear = np.abs(hds - 0.5) > 0.001
            assert (g[clear] == np.rint(hds[clear])).all()  # best guess
        else:
            assert r.INFO.get("TYPED") is True and r.INFO.get("IMP") is None
            # typed: GP one-hot on the called genotype, DS = allele count
            assert np.allclose(ds, g.sum(axis=1))
        assert r.INFO["AF"] == pytest.approx(af_expect[i], rel=1e-3, abs=1e-6)
        assert r.INFO["DR2"] == pytest.approx(r2_expect[i], abs=0.0006)


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
def test_bcftools_accepts_output(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _ = _random_sites(rng, m=120, s=3)
    out = tmp_path / "b.vcf.gz"
    write_imputed_vcf(out, sites, ["a", "b", "c"])
    view = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True, check=True)
    assert len(view.stdout.splitlines()) == 120
    # region query through the index
    p = int(sites.positions[50])
    reg = subprocess.run(
        ["bcftools", "view", "-H", "-r", f"chr9:{p}-{p}", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [int(line.split("\t")[1]) for line in reg.stdout.splitlines()] == [p]
    # bcftools index also succeeds (csi) and stats sees every record
    subprocess.run(["bcftools", "index", "-f", str(out)], check=True)
    stats = subprocess.run(["bcftools", "index", "-n", str(out)], capture_output=True, text=True, check=True)
    assert int(stats.stdout.strip()) == 120


def test_estimated_r2_formula():
    rng = np.random.default_rng(np.random.randint(2**31))
    hds = rng.random((5, 11, 2))
    af, r2 = estimated_r2(hds)
    for i in range(5):
        h = hds[i].ravel()
        p = h.mean()
        assert af[i] == pytest.approx(p)
        assert r2[i] == pytest.approx(min(1.0, np.var(h) / (p * (1 - p))))
