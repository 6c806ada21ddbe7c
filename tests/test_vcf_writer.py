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


@pytest.mark.parametrize("gp_from", ["array", "gp_het"])
def test_written_vcf_is_sorted_indexed_consistent(tmp_path, gp_from):
    import cyvcf2

    rng = np.random.default_rng(np.random.randint(2**31))
    sites, unph = _random_sites(rng)
    want_gp = sites.gp
    if gp_from == "gp_het":  # impute's way: GP from HDS per written block, one-hot at unphased hets
        sites.gp, sites.gp_het = None, unph
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
        assert np.allclose(gp, want_gp[i], atol=0.0011)
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
    # worked through in blocks (bounded float64 memory): the same numbers
    for block in (1, 22, 23, 10**6):
        af_b, r2_b = estimated_r2(hds, block=block)
        np.testing.assert_allclose(af_b, af, rtol=1e-12)
        np.testing.assert_allclose(r2_b, r2, rtol=1e-12, atol=1e-15)


def _written(path):
    import cyvcf2

    vcf = cyvcf2.VCF(str(path))
    return vcf, list(vcf)


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
@pytest.mark.parametrize(
    ("name", "given", "kind", "index"),
    [("o.vcf", None, "v", None), ("o.vcf.gz", None, "z", ".tbi"), ("o.bcf", None, "b", ".csi"),
     ("o.vcf.gz", "b", "b", ".csi"), ("o.bcf", "v", "v", None)],
)  # fmt: skip
def test_output_type_follows_the_name_or_O(tmp_path, name, given, kind, index):
    """Was: every name got BGZF text, so a .bcf was no BCF (plink2 --bcf failed) and a .vcf was gzip."""
    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _ = _random_sites(rng, m=int(rng.integers(20, 80)), s=3)
    out = tmp_path / name
    summary = write_imputed_vcf(out, sites, ["a", "b", "c"], output=given)
    head = out.read_bytes()[:16]
    magic = {"v": b"##fileformat=VCF", "z": b"\x1f\x8b", "b": b"\x1f\x8b"}[kind]
    assert head.startswith(magic) and summary["output_type"] == kind
    # what htslib says the file is (bcftools's own detection, not the name)
    fmt = subprocess.run(["htsfile", str(out)], capture_output=True, text=True, check=False).stdout
    if fmt:
        want = {"v": "VCF version 4.2 variant calling text", "z": "BGZF-compressed", "b": "BCF"}[kind]
        assert want in fmt, fmt
    assert summary["index"] == (str(out) + index if index else None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name] + ([name + index] if index else []))
    view = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in view.stdout.splitlines()]
    assert [int(r[1]) for r in rows] == sites.positions.tolist()
    # the same calls whatever the container (GT, DS as text)
    gts = [r[9].split(":")[0] for r in rows]
    sep = np.where(sites.phased[:, 0], "|", "/")
    assert gts == [f"{a}{s}{b}" for (a, b), s in zip(sites.gt[:, 0].tolist(), sep)]
    if index:  # a region query answered through the index
        p = int(sites.positions[len(rows) // 2])
        reg = subprocess.run(
            ["bcftools", "view", "-H", "-r", f"chr9:{p}", str(out)], capture_output=True, text=True, check=True
        )
        assert [int(x.split("\t")[1]) for x in reg.stdout.splitlines()] == [p]


@pytest.mark.parametrize("fields", ["GT", "DS", "GP,HDS", "HDS,GT", "DS,GT,GP", "GT,DS,GP,HDS"])
def test_format_fields_subset(tmp_path, fields):
    """-f picks the FORMAT fields (GT first when present); each has the values of the full output."""
    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _ = _random_sites(rng, m=40, s=4)
    samples = list("abcd")
    write_imputed_vcf(tmp_path / "all.vcf", sites, samples)
    write_imputed_vcf(tmp_path / "sub.vcf", sites, samples, fields=fields)
    names = fields.split(",")
    want = (["GT"] if "GT" in names else []) + [n for n in names if n != "GT"]
    vcf, recs = _written(tmp_path / "sub.vcf")
    _, full = _written(tmp_path / "all.vcf")
    defined = [h["ID"] for h in vcf.header_iter() if h["HeaderType"] == "FORMAT"]
    assert defined == want
    for r, f in zip(recs, full):
        assert r.FORMAT == want
        for n in want:
            if n == "GT":
                assert r.genotypes == f.genotypes
            else:
                np.testing.assert_array_equal(r.format(n), f.format(n))


def test_format_fields_refused():
    from vcfbert_fast.errors import InputError
    from vcfbert_fast.vcf_writer import format_fields

    assert format_fields(None) == ("GT", "DS", "GP", "HDS")
    for bad, word in [("GT,XX", "XX"), ("gt", "gt"), ("", "no field"), ("GT,GT", "twice")]:
        with pytest.raises(InputError, match=word):
            format_fields(bad)


def test_input_contig_lines_are_kept(tmp_path):
    """Was: the input's ##contig length and assembly were dropped and a bare ##contig=<ID=..> written."""
    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _ = _random_sites(rng, m=30, s=2)
    given = ["##contig=<ID=chr8,length=145138636>", "##contig=<ID=chr9,length=138394717,assembly=GRCh38>"]
    extra = [*given, "##contig=<ID=chr9,length=1>", '##FILTER=<ID=q10,Description="Quality below 10">']
    out = tmp_path / "c.vcf.gz"
    write_imputed_vcf(out, sites, ["a", "b"], extra_header=extra)
    vcf, _ = _written(out)
    contigs = [x for x in vcf.raw_header.splitlines() if x.startswith("##contig")]
    assert contigs == given  # as given, the first per ID, no line of our own
    assert dict(zip(vcf.seqnames, vcf.seqlens)) == {"chr8": 145138636, "chr9": 138394717}
    write_imputed_vcf(tmp_path / "d.vcf", sites, ["a", "b"], extra_header=extra[:1])  # none for chr9: ours added
    contigs = [x for x in _written(tmp_path / "d.vcf")[0].raw_header.splitlines() if x.startswith("##contig")]
    assert contigs == ["##contig=<ID=chr9>", given[0]]


def test_min_r2_and_sites_table(tmp_path):
    """--min-r2 leaves out imputed sites below it (never typed ones) and counts them; --sites lists every site."""
    rng = np.random.default_rng(np.random.randint(2**31))
    sites, _ = _random_sites(rng, m=200, s=6)
    _, r2 = estimated_r2(sites.hds)
    cut = float(np.quantile(r2[sites.imputed], 0.5))
    out, table = tmp_path / "m.vcf.gz", tmp_path / "m.sites.tsv"
    summary = write_imputed_vcf(out, sites, list("abcdef"), min_r2=cut, sites_path=str(table))
    r2_written = np.round(r2, 3)
    keep = ~sites.imputed | (r2_written >= cut)
    assert 0 < (~keep).sum() < sites.imputed.sum()
    assert summary["below_min_r2"] == int((~keep).sum()) and summary["panel_sites"] == int(keep.sum())
    assert summary["typed_sites"] == int((~sites.imputed).sum())
    _, recs = _written(out)
    assert [r.POS for r in recs] == sites.positions[keep].tolist()
    assert all(r.INFO["DR2"] >= cut - 1e-9 for r in recs if r.INFO.get("IMP"))
    lines = table.read_text().splitlines()
    assert lines[0].split("\t") == ["#CHROM", "POS", "ID", "REF", "ALT", "AF", "DR2", "STATUS", "FILTER"]
    rows = [x.split("\t") for x in lines[1:]]
    assert [int(r[1]) for r in rows] == sites.positions.tolist()
    assert [r[7] for r in rows] == ["IMPUTED" if i else "TYPED" for i in sites.imputed]
    assert [r[8] for r in rows] == ["PASS" if k else "MIN_R2" for k in keep]
    np.testing.assert_allclose([float(r[6]) for r in rows], r2, atol=0.0005)
    assert [r[2] for r in rows] == list(sites.ids) and [r[3] + r[4] for r in rows] == [
        a + b for a, b in zip(sites.ref, sites.alt)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sites.tsv", "m.vcf.gz", "m.vcf.gz.tbi"]


@pytest.mark.parametrize(("name", "index"), [("o.bcf", ".csi"), ("o.vcf", None)])
def test_no_bcftools_on_path_leaves_no_stale_index(tmp_path, monkeypatch, capsys, name, index):
    """Item 7 for BCF and text: with no tabix/bcftools, no old index is left beside the new file."""
    rng = np.random.default_rng(np.random.randint(2**31))
    d = tmp_path / "w"
    d.mkdir()
    for suffix in (".tbi", ".csi"):
        (d / (name + suffix)).write_bytes(rng.bytes(100))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("bcftools") is None and shutil.which("tabix") is None
    sites, _ = _random_sites(rng, m=25, s=2)
    summary = write_imputed_vcf(d / name, sites, ["a", "b"])
    assert summary["index"] is None
    assert [p.name for p in d.iterdir()] == [name]
    err = capsys.readouterr().err
    assert "stale index" in err
    if index:
        assert "without an index" in err and "bcftools is on PATH" in err and "bcftools index -c" in err
    _, recs = _written(d / name)
    assert [r.POS for r in recs] == sites.positions.tolist()


def test_sample_columns_are_python_formatting_of_the_values(rng):
    """``format_genotypes`` writes fixed-width bytes by table lookup; read back as text, every field
    must be Python's own formatting of the same rounded values (GP summing to exactly 1)."""
    from vcfbert_fast.vcf_writer import format_genotypes

    m, s = 40, 9
    gt = rng.integers(0, 2, (m, s, 2)).astype(np.int8)
    phased = rng.random((m, s)) < 0.8
    hds = rng.random((m, s, 2))
    hds[rng.random((m, s, 2)) < 0.2] = 1.0
    gp = rng.dirichlet([0.3, 0.3, 0.3], (m, s))
    buf, ds = format_genotypes(gt, phased, hds, gp, ("GT", "DS", "GP", "HDS"))
    lines = [bytes(row).decode() for row in buf]
    for i, line in enumerate(lines):
        for j, col in enumerate(line.split("\t")[1:]):
            g_t, d_s, g_p, h_ds = col.split(":")
            assert g_t == f"{gt[i, j, 0]}{'|' if phased[i, j] else '/'}{gt[i, j, 1]}"
            gps = [round(float(x) * 1000) for x in g_p.split(",")]
            assert sum(gps) == 1000 and all(abs(q - 1000 * p) <= 1 for q, p in zip(gps, gp[i, j], strict=True))
            assert d_s == f"{(gps[1] + 2 * gps[2]) / 1000:.3f}" and int(ds[i, j]) == gps[1] + 2 * gps[2]
            assert h_ds == ",".join(f"{round(float(h) * 1000) / 1000:.3f}" for h in hds[i, j])
