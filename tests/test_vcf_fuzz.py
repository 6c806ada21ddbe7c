"""Property test: mutated VCF text gives a Panel that matches an independent parse, or an InputError.

Never another exception type, never a Panel that disagrees with the text.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import read_panel

BASES = "ACGT"
SAMPLES = ["A", "B", "C"]
HEADER = [
    "##fileformat=VCFv4.2",
    "##contig=<ID=20>",
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(SAMPLES),
]
BAD_FIELDS = [
    "",
    ".",
    "X",
    "-5",
    "0",
    "0/1",
    "0|2",
    "1|1|0",
    "1",
    ".|.",
    "chr21",
    "A,T",
    "AT",
    "<DEL>",
    "1e3",
    "0|",
    "|",
    "N",
    "a",
    "*",
    "99999999999999999999",
]


@st.composite
def valid_lines(draw):
    n = draw(st.integers(1, 8))
    pos = sorted(draw(st.sets(st.integers(1, 500), min_size=n, max_size=n)))
    lines = []
    for p in pos:
        r = draw(st.sampled_from(BASES))
        a = draw(st.sampled_from([b for b in BASES if b != r]))
        gts = [f"{draw(st.integers(0, 1))}|{draw(st.integers(0, 1))}" for _ in SAMPLES]
        lines.append(f"20\t{p}\t.\t{r}\t{a}\t.\tPASS\t.\tGT\t" + "\t".join(gts))
    return lines


mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("duplicate"), st.integers(0, 20)),
    st.tuples(st.just("swap"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("field"), st.integers(0, 20), st.integers(0, 11), st.sampled_from(BAD_FIELDS)),
    st.tuples(st.just("unphase"), st.integers(0, 20)),
    st.tuples(st.just("truncate"), st.integers(0, 2000)),
)


def apply(lines, muts):
    """Mutations index into the data lines; 'truncate' cuts the final text."""
    lines = list(lines)
    cut = None
    for m in muts:
        if not lines and m[0] != "truncate":
            continue
        i = m[1] % len(lines) if lines else 0
        if m[0] == "delete":
            del lines[i]
        elif m[0] == "duplicate":
            lines.insert(i, lines[i])
        elif m[0] == "swap":
            j = m[2] % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif m[0] == "field":
            f = lines[i].split("\t")
            f[m[2] % len(f)] = m[3]
            lines[i] = "\t".join(f)
        elif m[0] == "unphase":
            lines[i] = lines[i].replace("|", "/", 1)
        elif m[0] == "truncate":
            cut = m[1]
    text = "\n".join(HEADER + lines) + "\n"
    if cut is not None:
        text = text[: len(text) - cut % max(1, len(text) - len(HEADER[0]))]
    return text


def independent_parse(text):
    """Expected kept sites: clean biallelic ACGT SNP records, minus positions with several SNP/multi-allelic records."""
    recs = [ln.split("\t") for ln in text.split("\n") if ln and not ln.startswith("#")]
    recs = [f[:3] + [x.upper() for x in f[3:5]] + f[5:] for f in recs]  # bases are case-insensitive
    snp = [f for f in recs if len(f) >= 5 and f[3] in set(BASES) and f[4] in set(BASES) and f[3] != f[4]]
    count = {}  # SNP and multi-allelic records per position: >1 means a split multi-allelic site
    for f in snp + [f for f in recs if len(f) >= 5 and "," in f[4]]:
        count[f[1]] = count.get(f[1], 0) + 1
    kept = [f for f in snp if count[f[1]] == 1]
    return kept


def check(panel, text):
    kept = independent_parse(text)
    assert panel.samples == SAMPLES
    assert [str(p) for p in panel.positions] == [f[1] for f in kept]
    assert (np.diff(panel.positions) > 0).all()
    assert list(panel.ref) == [f[3] for f in kept] and list(panel.alt) == [f[4] for f in kept]
    want = np.array([[int(x) for call in f[9:] for x in call.split("|")] for f in kept], dtype=np.uint8)
    np.testing.assert_array_equal(panel.haplotypes, want.T.reshape(panel.haplotypes.shape))
    assert panel.haplotypes.shape == (2 * len(SAMPLES), len(kept))


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=int(os.environ.get("VCFBERT_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=valid_lines(),
    muts=st.lists(mutation, min_size=0, max_size=3),
    engine=st.sampled_from(["auto", "cyvcf2"]),
)
def test_mutated_vcf_is_read_or_rejected(tmp_path, lines, muts, engine):
    text = apply(lines, muts)
    path = tmp_path / "fuzz.vcf"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            panel = read_panel(path, progress=False, engine=engine)
        except InputError as exc:
            msg = str(exc)
            assert "\n" not in msg and str(path) in msg
            assert muts, f"the unmutated, valid VCF was rejected: {msg}"
            return
    check(panel, text)
