"""Reading records through cyvcf2 (htslib), for the panel's reference engine and the target reader.

htslib's failures surface as bare exceptions, and a few of its readings need correcting
(a record of lone '.' calls is sized haploid); here they become InputErrors naming the file
and the record, and genotype arrays with one meaning.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from .checks import check_file, scan_text_structure
from .sites import RowBuffer, SiteTable, progress_bar


def open_vcf(path: str, role: str, samples: list[str] | None = None):
    """A ``cyvcf2.VCF`` reader of ``path`` (only ``samples`` if given), or InputError if htslib refuses it."""
    import cyvcf2  # lazy: heavy, and absent on the GPU machine

    try:
        vcf = cyvcf2.VCF(str(path), samples=samples, gts012=False, strict_gt=False, threads=2)
    except Exception as exc:  # noqa: BLE001  (htslib failures surface as bare Exception/OSError)
        raise InputError(path, f"cannot open as VCF/BCF ({exc})", f"give a valid {role} VCF/BCF") from None
    return vcf


def open_checked(path: str, role: str):
    """:func:`open_vcf` after the checks htslib needs (:mod:`.checks`): how a reader opens a user's file."""
    kind, compressed = check_file(path, role, verify_gzip=True)
    if kind == "vcf":
        scan_text_structure(path, compressed)
    return open_vcf(path, role)


def genotypes(v, path: str) -> np.ndarray:
    """``genotype.array()`` ([S, ploidy+1] int16: alleles, then the phased flag), or InputError without GT."""
    try:
        g = v.genotype.array()
        if g.shape[1] == 2 and (g[:, 0] == -1).all():
            # Every call is a lone '.': htslib sizes the record as haploid, but it is a diploid
            # missing call (the first haplotype's '.', then '.' for the absent second allele).
            g = np.column_stack([g[:, 0], np.full_like(g[:, 0], -2), np.zeros_like(g[:, 1])])
        return g
    except Exception:  # noqa: BLE001  (cyvcf2: "couldn't get genotypes for variant")
        raise InputError(
            path,
            "no GT genotypes in the record",
            "every record needs a GT FORMAT field",
            record=f"{v.CHROM}:{v.POS}",
        ) from None


def gt_problem(g: np.ndarray, samples: list[str], allow_missing: bool, require_phased: bool) -> str | None:
    """Describe the first bad genotype of one record's ``genotype.array()`` ([S, ploidy+1] int16)."""
    if g.shape[1] == 2:
        return f"haploid genotype for sample {samples[0]}"
    if g.shape[1] > 3:
        bad = np.flatnonzero(g[:, 2] != -2)
        s = samples[int(bad[0])] if bad.size else samples[0]
        return f"polyploid genotype ({g.shape[1] - 1} alleles) for sample {s}"
    a = g[:, :2]
    if not allow_missing:
        miss = np.flatnonzero((a == -1).any(axis=1))
        if miss.size:
            return f"missing genotype for sample {samples[int(miss[0])]}"
    hap = np.flatnonzero((a[:, 1] == -2) & (a[:, 0] != -1))  # '.' alone is a missing call, not haploid
    if hap.size:
        return f"haploid genotype for sample {samples[int(hap[0])]}"
    big = np.flatnonzero((a > 1).any(axis=1) | (a[:, 0] < -1))
    if big.size:
        return f"allele index {int(a[big[0]].max())} out of range for sample {samples[int(big[0])]}"
    if require_phased:
        unph = np.flatnonzero(g[:, 2] == 0)
        if unph.size:
            return f"unphased genotype for sample {samples[int(unph[0])]}"
    return None


def iter_records(vcf, sites: SiteTable) -> Iterator:
    """Iterate cyvcf2 records, turning htslib parse failures into InputError naming the last good record."""
    it = iter(vcf)
    while True:
        try:
            v = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001  (cyvcf2 raises a bare Exception on a malformed line)
            raise InputError(
                sites.path,
                f"malformed record ({exc})",
                "check the file with bcftools view",
                record=sites.after(),
            ) from None
        yield v


def kept_genotypes(vcf, sites: SiteTable, buf: RowBuffer, desc: str, progress: bool) -> Iterator[tuple]:
    """Yield (record, genotype array) for each record kept as a site; the caller fills ``buf.row()``.

    Skipped records are counted in ``sites``; a retracted site (split multi-allelic) gives
    back its row of ``buf``. The progress bar advances in steps of 4096 records.
    """
    bar = progress_bar(progress, desc)
    try:
        for v in iter_records(vcf, sites):
            prev_n = sites.n
            if not sites.add(v.CHROM, int(v.POS), v.ID or ".", v.REF, list(v.ALT)):
                if sites.n < prev_n:  # retracted split multi-allelic record
                    buf.pop()
                continue
            yield v, genotypes(v, sites.path)
            if bar is not None and sites.n_records % 4096 == 0:
                bar.update(4096)
        if bar is not None:
            bar.update(sites.n_records % 4096)
    finally:
        if bar is not None:
            bar.close()
