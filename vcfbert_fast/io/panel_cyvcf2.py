"""The panel's reference engine: any VCF/BCF that htslib parses, read through cyvcf2.

Slower than the text engine (one ``genotype.array()`` per record) but it reads everything
(BCF, other FORMAT fields, any GT spelling), and it is the engine that names the record and
the fix for every genotype a panel must not hold.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .cyvcf2_records import gt_problem, kept_genotypes, open_checked
from .sites import RowBuffer, SiteTable, hap_major

_DIPLOID_FIX = "use diploid autosomal genotypes (haploid/polyploid calls are not supported)"
_FIXES = {  # keyed by the first letter of gt_problem's message
    "u": "the panel must be phased; phase it with Beagle/SHAPEIT first",
    "m": "the panel must have no missing genotypes; impute/phase it with Beagle first",
    "h": _DIPLOID_FIX,
    "p": _DIPLOID_FIX,
    "a": "check the file with bcftools view",
}


def read_panel_cyvcf2(path: str, progress: bool) -> tuple[SiteTable, list[str], np.ndarray]:
    """(sites, samples, haplotypes [2S, M]) of a phased, complete, diploid panel, or InputError."""
    vcf = open_checked(path, "reference panel")
    samples = list(vcf.samples)
    if not samples:
        raise InputError(
            path, "no samples in the header", "the reference panel needs phased sample genotypes"
        )
    sites = SiteTable(path, "reference panel")
    buf = RowBuffer(2 * len(samples))
    for v, g in kept_genotypes(vcf, sites, buf, "reading panel", progress):
        if g.shape[1] != 3 or g[:, :2].min() < 0 or g[:, :2].max() > 1 or not g[:, 2].all():
            problem = gt_problem(g, samples, allow_missing=False, require_phased=True)
            if problem is not None:
                raise InputError(path, problem, _FIXES[problem[0]], record=f"{v.CHROM}:{v.POS}")
        buf.row()[:] = g[:, :2].reshape(-1)
    vcf.close()
    return sites, samples, hap_major([buf.site_major(sites.n)], sites.n, 2 * len(samples))
