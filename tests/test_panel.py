"""read_panel against an independent pure-Python parse of freshly generated random VCFs."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import read_panel, read_panel_file

BASES = "ACGT"


def random_panel_vcf(rng, n_samples, n_sites, extra_format=False, skips=False, contig="20"):
    """VCF text with random phased haplotypes; optionally sprinkled with records the reader must skip."""
    samples = [f"s{i}_{rng.integers(1000)}" for i in range(n_samples)]
    positions = np.sort(rng.choice(np.arange(1, 50 * n_sites + 10), size=n_sites, replace=False))
    lines = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={contig}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DS,Number=1,Type=Float,Description="Dosage">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples),
    ]

    def record(pos, vid, ref, alt, n_alt=1):
        haps = rng.integers(0, n_alt + 1, size=(n_samples, 2))
        fmt = "GT:DS" if extra_format else "GT"
        calls = [f"{a}|{b}" + (f":{a + b}" if extra_format else "") for a, b in haps]
        return f"{contig}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\t.\t{fmt}\t" + "\t".join(calls)

    for pos in positions:
        r = rng.integers(4)
        ref, alt = BASES[r], BASES[(r + rng.integers(1, 4)) % 4]
        vid = f"rs{pos}" if rng.random() < 0.5 else "."
        if skips:
            u = rng.random()
            other = [b for b in BASES if b not in (ref, alt)][int(rng.integers(2))]
            if u < 0.08:
                lines.append(record(pos, vid, ref, f"{alt},{other}", n_alt=2))
                continue
            if u < 0.14:
                lines.append(record(pos, vid, ref + "T", alt))  # deletion
                continue
            if u < 0.18:
                lines.append(record(pos, vid, ref, alt))  # split multi-allelic: both records skipped
                lines.append(record(pos, vid, ref, other))
                continue
            if u < 0.20:
                lines.append(record(pos, vid, ref, "<DEL>"))
                continue
        lines.append(record(pos, vid, ref, alt))
    return samples, "\n".join(lines) + "\n"


def parse_vcf_text(text):
    """Independent parser: keeps biallelic ACGT SNPs, drops every record at a position with >1 SNP record."""
    samples, recs = None, []
    for line in text.splitlines():
        if line.startswith("##") or not line:
            continue
        f = line.split("\t")
        if line.startswith("#CHROM"):
            samples = f[9:]
            continue
        recs.append(f)
    snp_pos_count = {}  # SNP and multi-allelic records per position: >1 means a split multi-allelic site
    for f in recs:
        if (len(f[3]) == 1 and f[3] in BASES and len(f[4]) == 1 and f[4] in BASES) or "," in f[4]:
            snp_pos_count[int(f[1])] = snp_pos_count.get(int(f[1]), 0) + 1
    pos, ref, alt, ids, haps = [], [], [], [], []
    for f in recs:
        p = int(f[1])
        if (
            not (len(f[3]) == 1 and f[3] in BASES and len(f[4]) == 1 and f[4] in BASES)
            or snp_pos_count[p] > 1
        ):
            continue
        pos.append(p)
        ref.append(f[3])
        alt.append(f[4])
        ids.append(f[2])
        row = []
        for call in f[9:]:
            gt = call.split(":")[0]
            a, b = gt.split("|")
            row += [int(a), int(b)]
        haps.append(row)
    h = np.array(haps, dtype=np.uint8).T.reshape(2 * len(samples), len(pos))
    return samples, np.array(pos), ref, alt, ids, h


def _assert_same(panel, expected):
    samples, pos, ref, alt, ids, haps = expected
    assert panel.samples == samples
    np.testing.assert_array_equal(panel.positions, pos)
    assert panel.positions.dtype == np.int64
    assert list(panel.ref) == ref and list(panel.alt) == alt and list(panel.ids) == ids
    assert panel.haplotypes.dtype == np.uint8 and panel.haplotypes.flags.c_contiguous
    np.testing.assert_array_equal(panel.haplotypes, haps)


def _write(tmp_path, text, name="p.vcf"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("engine", ["auto", "cyvcf2", "text"])
def test_plain_vcf_matches_independent_parse(tmp_path, engine):
    rng = np.random.default_rng(np.random.randint(2**31))
    for trial in range(3):
        n_s, n_m = int(rng.integers(1, 9)), int(rng.integers(1, 80))
        _, text = random_panel_vcf(rng, n_s, n_m)
        p = _write(tmp_path, text, f"p{trial}.vcf")
        panel = read_panel(p, progress=False, engine=engine)
        _assert_same(panel, parse_vcf_text(text))
        assert panel.contig == "20" and panel.skipped == {}
        assert panel.n_samples == n_s and panel.n_sites == n_m and panel.n_haplotypes == 2 * n_s


@pytest.mark.skipif(shutil.which("bgzip") is None, reason="bgzip not installed")
def test_many_chunks_and_bgzip(tmp_path):
    """More sites than one internal chunk (1024), bgzipped: both engines agree with the parse."""
    rng = np.random.default_rng(np.random.randint(2**31))
    _, text = random_panel_vcf(rng, int(rng.integers(2, 6)), int(rng.integers(2100, 2600)))
    plain = _write(tmp_path, text)
    subprocess.run(["bgzip", "-k", "-f", str(plain)], check=True)
    gz = tmp_path / "p.vcf.gz"
    expected = parse_vcf_text(text)
    for engine in ("auto", "cyvcf2", "text"):
        _assert_same(read_panel(gz, progress=False, engine=engine), expected)


def test_plain_gzip_not_bgzf(tmp_path):
    import gzip

    rng = np.random.default_rng(np.random.randint(2**31))
    _, text = random_panel_vcf(rng, 3, 40)
    p = tmp_path / "p.vcf.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(text)
    _assert_same(read_panel(p, progress=False), parse_vcf_text(text))


def test_extra_format_fields_fall_back_to_cyvcf2(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    _, text = random_panel_vcf(rng, 4, 50, extra_format=True)
    p = _write(tmp_path, text)
    _assert_same(read_panel(p, progress=False), parse_vcf_text(text))
    with pytest.raises(RuntimeError):
        read_panel(p, progress=False, engine="text")


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
def test_bcf_input(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    _, text = random_panel_vcf(rng, 5, 120)
    plain = _write(tmp_path, text)
    bcf = tmp_path / "p.bcf"
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(plain)], check=True, capture_output=True)
    _assert_same(read_panel(bcf, progress=False), parse_vcf_text(text))


@pytest.mark.parametrize("engine", ["auto", "cyvcf2"])
def test_skipped_records_counted(tmp_path, engine):
    rng = np.random.default_rng(np.random.randint(2**31))
    _, text = random_panel_vcf(rng, 4, 300, skips=True)
    p = _write(tmp_path, text)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        panel = read_panel(p, progress=False, engine=engine)
    expected = parse_vcf_text(text)
    _assert_same(panel, expected)
    n_records = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert sum(panel.skipped.values()) == n_records - panel.n_sites
    assert set(panel.skipped) <= {"multiallelic", "not_snp", "no_alt"}
    if panel.skipped:
        assert len([x for x in w if "skipped" in str(x.message)]) == 1


def test_panel_file_with_and_without_header(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    samples, text = random_panel_vcf(rng, 6, 10)
    vcf = _write(tmp_path, text)
    pops = {s: rng.choice(["YRI", "CEU", "CHB"]) for s in samples}
    sup = {"YRI": "AFR", "CEU": "EUR", "CHB": "EAS"}
    order = list(rng.permutation(samples)) + ["extra_sample"]
    pops["extra_sample"] = "GBR"
    sup["GBR"] = "EUR"
    body = "".join(f"{s}\t{pops[s]} {sup[pops[s]]}\tfemale\n" for s in order)
    for header in ("", "sample\tpop\tsuper_pop\tgender\n"):
        pf = tmp_path / "panel.txt"
        pf.write_text(header + body)
        panel = read_panel(vcf, panel_file=pf, progress=False)
        assert list(panel.populations) == [pops[s] for s in samples]
        assert list(panel.super_populations) == [sup[pops[s]] for s in samples]
    # column choice: population from the super-population column, no super population
    pop, sp = read_panel_file(pf, samples, population_column=2, super_population_column=None)
    assert list(pop) == [sup[pops[s]] for s in samples] and sp is None


def test_panel_file_missing_samples(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    samples, text = random_panel_vcf(rng, 8, 5)
    vcf = _write(tmp_path, text)
    pf = tmp_path / "panel.txt"
    pf.write_text("".join(f"{s} POP SUP\n" for s in samples[2:]))
    with pytest.raises(InputError) as exc:
        read_panel(vcf, panel_file=pf, progress=False)
    msg = str(exc.value)
    assert (
        "\n" not in msg
        and str(pf) in msg
        and samples[0] in msg
        and samples[1] in msg
        and "2 VCF samples" in msg
    )
