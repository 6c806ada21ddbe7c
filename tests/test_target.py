"""read_target and align_target against independent computations on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import Panel, Target, align_target, read_target

BASES = "ACGT"
CALLS = ["0|0", "0|1", "1|0", "1|1", "0/0", "0/1", "1/1", "1/0", ".|.", "./.", ".", "0|.", ".|1", "./1"]


def parse_call(call):
    """Independent GT parse: (allele0, allele1, phased)."""
    if call == ".":
        return -1, -1, False
    sep = "|" if "|" in call else "/"
    a, b = call.split(sep)
    return (-1 if a == "." else int(a)), (-1 if b == "." else int(b)), sep == "|"


def random_target(rng, tmp_path, n_samples, n_sites, contig="20"):
    samples = [f"t{i}" for i in range(n_samples)]
    positions = np.sort(rng.choice(np.arange(1, 20 * n_sites + 10), size=n_sites, replace=False))
    ref = [BASES[i] for i in rng.integers(0, 4, n_sites)]
    alt = [BASES[(BASES.index(r) + int(rng.integers(1, 4))) % 4] for r in ref]
    calls = rng.choice(CALLS, size=(n_sites, n_samples))
    lines = [
        "##fileformat=VCFv4.2",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples),
    ]
    for j in range(n_sites):
        lines.append(f"{contig}\t{positions[j]}\t.\t{ref[j]}\t{alt[j]}\t.\t.\t.\tGT\t" + "\t".join(calls[j]))
    p = tmp_path / "target.vcf"
    p.write_text("\n".join(lines) + "\n")
    return p, samples, positions, ref, alt, calls


def test_target_missing_and_unphased(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    n_s, n_m = int(rng.integers(1, 7)), int(rng.integers(1, 60))
    p, samples, positions, ref, alt, calls = random_target(rng, tmp_path, n_s, n_m)
    t = read_target(p)
    assert t.samples == samples and t.contig == "20" and t.skipped == {}
    np.testing.assert_array_equal(t.positions, positions)
    assert list(t.ref) == ref and list(t.alt) == alt
    assert t.alleles.shape == (n_s, 2, n_m) and t.alleles.dtype == np.int8
    for j in range(n_m):
        for s in range(n_s):
            a, b, ph = parse_call(calls[j, s])
            assert t.alleles[s, 0, j] == a and t.alleles[s, 1, j] == b, (calls[j, s], t.alleles[s, :, j])
            if "." not in calls[j, s]:  # phase of a (partly) missing call is meaningless
                assert t.phased[s, j] == ph, calls[j, s]


def test_target_sample_subset(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    p, samples, *_ = random_target(rng, tmp_path, 6, 30)
    pick = [samples[4], samples[1]]
    t = read_target(p, samples=pick)
    assert t.samples == [samples[1], samples[4]]  # file order
    full = read_target(p)
    np.testing.assert_array_equal(t.alleles, full.alleles[[1, 4]])


def _panel(positions, ref, alt, contig="20"):
    m = len(positions)
    return Panel(
        path="panel.vcf",
        contig=contig,
        positions=np.asarray(positions, dtype=np.int64),
        ref=np.array(ref, dtype=object),
        alt=np.array(alt, dtype=object),
        ids=np.array(["."] * m, dtype=object),
        samples=["x"],
        haplotypes=np.zeros((2, m), dtype=np.uint8),
    )


COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def test_alignment_counts_on_constructed_cases(tmp_path):
    """Each panel site matched, swapped, given another ALT, strand-flipped, flipped and swapped, or left
    out: swaps and flips type the site (a swap recoded 0<->1), except the swapped form of an A/T or C/G
    site (a swap and a flip at once), which is excluded like another ALT."""
    rng = np.random.default_rng(np.random.randint(2**31))
    m = int(rng.integers(20, 200))
    pos = np.sort(rng.choice(np.arange(1, 10 * m), size=m, replace=False))
    ref = [BASES[i] for i in rng.integers(0, 4, m)]
    alt = [BASES[(BASES.index(r) + int(rng.integers(1, 4))) % 4] for r in ref]
    panel = _panel(pos, ref, alt)
    kind = rng.integers(0, 6, m)
    t_pos, t_ref, t_alt, want, want_action, want_swap = [], [], [], [], [], []
    for j in range(m):
        r, a, ambiguous = ref[j], alt[j], COMPLEMENT[ref[j]] == alt[j]
        if kind[j] == 5:
            continue
        if kind[j] == 0:
            tr, ta, act = r, a, "match"
        elif kind[j] == 1:
            tr, ta, act = a, r, "excluded_ambiguous_strand" if ambiguous else "recoded_swap"
        elif kind[j] == 2:
            tr, ta, act = r, next(b for b in BASES if b not in (r, a)), "excluded_allele_mismatch"
        elif kind[j] == 3:  # an A/T site's complement is its swap
            tr, ta, act = COMPLEMENT[r], COMPLEMENT[a], "excluded_ambiguous_strand" if ambiguous else "recoded_flip"
        else:  # an A/T site's swapped complement is itself
            tr, ta, act = COMPLEMENT[a], COMPLEMENT[r], "match" if ambiguous else "recoded_flip_swap"
        used = not act.startswith("excluded")
        t_pos.append(pos[j]), t_ref.append(tr), t_alt.append(ta), want_action.append(act)
        want.append(j if used else -1), want_swap.append(act in ("recoded_swap", "recoded_flip_swap"))
    n_absent = int(rng.integers(0, 10))
    free = np.setdiff1d(np.arange(1, 10 * m + 50), pos)
    for e in rng.choice(free, size=n_absent, replace=False):
        t_pos.append(int(e)), t_ref.append("A"), t_alt.append("C"), want.append(-1)
        want_action.append(""), want_swap.append(False)
    order = np.argsort(t_pos)
    t_pos = np.asarray(t_pos, dtype=np.int64)[order]
    want, want_action, want_swap = (np.asarray(w)[order] for w in (want, want_action, want_swap))
    if (want >= 0).sum() == 0:
        pytest.skip("random case without a match")  # the zero-overlap error has its own test
    tgt = Target(
        path="t.vcf",
        contig="20",
        positions=t_pos,
        ref=np.array(t_ref, dtype=object)[order],
        alt=np.array(t_alt, dtype=object)[order],
        samples=["s"],
        alleles=np.zeros((1, 2, len(t_pos)), dtype=np.int8),
        phased=np.ones((1, len(t_pos)), dtype=bool),
    )
    al = align_target(tgt, panel)
    np.testing.assert_array_equal(al.panel_index, want)
    assert al.action.tolist() == want_action.tolist()
    np.testing.assert_array_equal(al.swap, want_swap)
    assert al.n_matched == int((want_action == "match").sum())
    assert al.n_recoded == int(np.char.startswith(want_action.astype(str), "recoded").sum())
    assert al.n_allele_mismatch == int(np.char.startswith(want_action.astype(str), "excluded").sum())
    assert al.n_absent == n_absent
    assert al.n_matched + al.n_recoded + al.n_absent + al.n_allele_mismatch == len(t_pos)
    assert f"{al.n_matched} target sites matched" in al.summary() and f"{al.n_recoded} recoded" in al.summary()


def test_alignment_contig_error_without_chr_prefix_hint(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    p, *_ = random_target(rng, tmp_path, 2, 5, contig="21")
    t = read_target(p)
    panel = _panel(t.positions, t.ref, t.alt, contig="20")
    with pytest.raises(InputError) as exc:
        align_target(t, panel)
    assert "same chromosome" in str(exc.value) and "rename-chrs" not in str(exc.value)


def test_target_record_with_every_call_a_lone_dot(tmp_path):
    """htslib sizes a record whose calls are all '.' as haploid; it is a diploid missing call."""
    p = tmp_path / "allmissing.vcf"
    p.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=20>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tt0\tt1\n"
        "20\t100\t.\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n"
        "20\t150\t.\tC\tT\t.\t.\t.\tGT\t.\t.\n"
    )
    t = read_target(p)
    np.testing.assert_array_equal(t.alleles[:, :, 0], [[0, 1], [1, 1]])
    np.testing.assert_array_equal(t.alleles[:, :, 1], [[-1, -1], [-1, -1]])
