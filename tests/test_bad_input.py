"""One test per bad-input case: InputError with a one-line message naming the file (and record)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import align_target, read_panel, read_target

HEADER = (
    "##fileformat=VCFv4.2\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\n"
)


def rec(pos, gts=("0|1", "1|0", "0|0"), chrom="20", ref="A", alt="G"):
    return f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gts) + "\n"


def good_records(n=20, start=100, step=10, chrom="20"):
    rng = np.random.default_rng(np.random.randint(2**31))
    return [
        rec(start + step * i, [f"{a}|{b}" for a, b in rng.integers(0, 2, (3, 2))], chrom) for i in range(n)
    ]


def write(tmp_path, body, name="bad.vcf"):
    p = tmp_path / name
    p.write_text(HEADER + "".join(body))
    return p


def expect_error(fn, path, record=None, words=()):
    with pytest.raises(InputError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    if record is not None:
        assert record in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


@pytest.mark.parametrize("engine", ["auto", "cyvcf2"])
def test_unphased_panel(tmp_path, engine):
    body = good_records()
    body[7] = rec(170, ("0|1", "0/1", "1|1"))
    p = write(tmp_path, body)
    expect_error(
        lambda: read_panel(p, progress=False, engine=engine), p, "20:170", ("unphased", "sample B", "phase")
    )


@pytest.mark.parametrize("gt", [".|.", "0|.", "."])
def test_missing_genotype_in_panel(tmp_path, gt):
    body = good_records()
    body[3] = rec(130, ("0|1", "1|1", gt))
    p = write(tmp_path, body)
    expect_error(lambda: read_panel(p, progress=False), p, "20:130", ("missing genotype", "sample C"))


def test_haploid_and_polyploid_panel(tmp_path):
    body = good_records()
    body[5] = rec(150, ("0|1", "1", "0|0"))
    p = write(tmp_path, body)
    expect_error(lambda: read_panel(p, progress=False), p, "20:150", ("haploid",))
    body[5] = rec(150, ("0|1", "1|1|0", "0|0"))
    p = write(tmp_path, body, "poly.vcf")
    expect_error(lambda: read_panel(p, progress=False), p, "20:150", ("polyploid",))


def test_multiallelic_is_a_counted_skip(tmp_path):
    body = good_records()
    body[4] = rec(140, ("0|2", "1|0", "0|0"), alt="G,T")
    body[9] = rec(190, ref="C", alt="T") + rec(190, ref="C", alt="G")  # split multi-allelic: both skipped
    body[12] = rec(220) + rec(220, ("0|2", "1|0", "0|0"), alt="G,T")  # SNP + multi-allelic: both skipped
    p = write(tmp_path, body)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        panel = read_panel(p, progress=False)
    assert panel.skipped == {"multiallelic": 5}
    assert not {140, 190, 220} & set(panel.positions.tolist()) and panel.n_sites == 17
    assert any("multiallelic" in str(x.message) for x in w)
    # nothing but multi-allelic records: zero usable sites is an error
    q = write(tmp_path, [rec(100 + i, ("0|2", "1|0", "0|0"), alt="G,T") for i in range(3)], "multi.vcf")
    expect_error(lambda: read_panel(q, progress=False), q, None, ("no usable", "multiallelic=3"))


def test_duplicate_positions(tmp_path):
    body = good_records()
    body.insert(6, rec(160))
    p = write(tmp_path, body)
    expect_error(lambda: read_panel(p, progress=False), p, "20:160", ("duplicate", "bcftools norm"))


def test_unsorted_positions(tmp_path):
    body = good_records()
    body[10], body[11] = body[11], body[10]
    p = write(tmp_path, body)
    expect_error(lambda: read_panel(p, progress=False), p, "20:200", ("not sorted", "bcftools sort"))


def test_several_contigs(tmp_path):
    body = good_records() + good_records(chrom="21")
    p = write(tmp_path, body)
    expect_error(lambda: read_panel(p, progress=False), p, "21:100", ("several contigs", "bcftools view -r"))


def test_target_panel_contig_mismatch(tmp_path):
    panel = read_panel(write(tmp_path, good_records()), progress=False)
    t = write(tmp_path, good_records(chrom="chr20"), "target.vcf")
    target = read_target(t)
    expect_error(lambda: align_target(target, panel), t, "chr20:100", ("rename-chrs",))


def test_zero_overlapping_sites(tmp_path):
    panel = read_panel(write(tmp_path, good_records()), progress=False)
    t = write(tmp_path, good_records(start=105), "target.vcf")
    target = read_target(t)
    expect_error(lambda: align_target(target, panel), t, None, ("no target site", "GRCh37", "GRCh38"))


@pytest.mark.skipif(shutil.which("bgzip") is None, reason="bgzip not installed")
@pytest.mark.parametrize("reader", ["panel", "target"])
def test_truncated_bgzip(tmp_path, reader):
    p = write(tmp_path, good_records(n=3000))
    subprocess.run(["bgzip", "-f", str(p)], check=True)
    gz = tmp_path / "bad.vcf.gz"
    data = gz.read_bytes()
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    fn = (lambda: read_panel(cut, progress=False)) if reader == "panel" else (lambda: read_target(cut))
    expect_error(fn, cut, None, ("truncated",))


@pytest.mark.parametrize("engine", ["auto", "cyvcf2"])
def test_truncated_plain_gzip(tmp_path, engine):
    data = gzip.compress((HEADER + "".join(good_records(n=3000))).encode())
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) // 2])
    expect_error(lambda: read_panel(cut, progress=False, engine=engine), cut, None, ("truncated",))


def test_truncated_plain_text_mid_line(tmp_path):
    text = HEADER + "".join(good_records())
    p = tmp_path / "cut.vcf"
    p.write_text(text[: len(text) - 7])
    expect_error(lambda: read_panel(p, progress=False), p, None, ())


@pytest.mark.parametrize("reader", ["panel", "target"])
def test_empty_file(tmp_path, reader):
    p = tmp_path / "empty.vcf.gz"
    p.write_bytes(b"")
    fn = (lambda: read_panel(p, progress=False)) if reader == "panel" else (lambda: read_target(p))
    expect_error(fn, p, None, ("empty",))


@pytest.mark.parametrize("content", [b"sample\tpop\nA\tYRI\n", b"\x00\x01binary junk" * 10, b"#CHROM\tPOS\n"])
def test_not_a_vcf(tmp_path, content):
    p = tmp_path / "notvcf.vcf"
    p.write_bytes(content)
    expect_error(lambda: read_panel(p, progress=False), p, None, ("not a VCF",))
    g = tmp_path / "notvcf.vcf.gz"
    g.write_bytes(gzip.compress(content))
    expect_error(lambda: read_panel(g, progress=False), g, None, ("not a VCF",))


def test_missing_file(tmp_path):
    p = tmp_path / "nope.vcf.gz"
    expect_error(lambda: read_panel(p, progress=False), p, None, ("no such file",))


def test_no_samples(tmp_path):
    p = tmp_path / "nosamples.vcf"
    p.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n20\t100\t.\tA\tG\t.\t.\t.\n"
    )
    expect_error(lambda: read_panel(p, progress=False), p, None, ("no samples",))


def test_zero_records(tmp_path):
    p = write(tmp_path, [])
    expect_error(lambda: read_panel(p, progress=False), p, None, ("no usable",))


def test_target_unknown_samples(tmp_path):
    t = write(tmp_path, good_records(), "target.vcf")
    expect_error(lambda: read_target(t, samples=["A", "Z9"]), t, None, ("Z9",))
