"""VCF/BCF input: the reference panel, the target and its alignment, the population table.

Only biallelic SNPs become sites; other records are skipped and counted in ``.skipped``.

Modules, one job each:

- ``bgzf``: BGZF files: recognise, check, open (fast), write
- ``vcf_output``: the output type (name or -O: VCF, BGZF, BCF), its index, the atomic install
- ``checks``: file checks before htslib reads a file (missing, truncated, malformed text)
- ``sites``: which records become sites (skip rules, order, duplicates); the per-site rows
- ``cyvcf2_records``: records and genotype arrays through cyvcf2, htslib failures as InputError
- ``panel_text``: the panel's fast engine, numpy decoding of GT-only 'a|b' VCF text
- ``panel_cyvcf2``: the panel's reference engine, any VCF/BCF htslib parses
- ``panel_reader``: ``Panel`` and ``read_panel`` (engine choice, checks common to both)
- ``populations``: the sample -> population table (``read_panel_file``)
- ``target``: ``Target``, ``read_target``, ``Alignment``, ``align_target``
"""

from __future__ import annotations

from .panel_reader import Panel, read_panel
from .populations import read_panel_file
from .sites import SKIP_MULTIALLELIC, SKIP_NO_ALT, SKIP_NOT_SNP
from .target import Alignment, Target, align_target, read_target

__all__ = [
    "SKIP_MULTIALLELIC",
    "SKIP_NOT_SNP",
    "SKIP_NO_ALT",
    "Alignment",
    "Panel",
    "Target",
    "align_target",
    "read_panel",
    "read_panel_file",
    "read_target",
]
