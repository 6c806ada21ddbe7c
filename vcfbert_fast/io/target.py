"""Target genotypes and their alignment to the panel: :func:`read_target`, :func:`align_target`.

A target may be unphased and have missing calls (that is what imputation fills), so it is
read through cyvcf2 with looser genotype rules than the panel, then matched to panel sites
by (contig, position) and alleles with the allele QC of imputation servers: REF/ALT swapped
against the panel is recoded, a strand flip is complemented, except A/T and C/G sites, whose
strand cannot be told (:func:`allele_actions`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, shown_names
from .cyvcf2_records import gt_problem, kept_genotypes, open_checked, open_vcf
from .panel_reader import Panel
from .sites import RowBuffer, SiteTable


@dataclass
class Target:
    """Target genotypes (phased or not, with missing calls) at the target's own sites.

    ``alleles[s, h, j]`` is haplotype ``h`` of sample ``s`` at target site ``j``:
    0/1, or -1 for a missing call. ``phased[s, j]`` is False where the input
    genotype was unphased (heterozygous phase then unknown).
    """

    path: str
    contig: str
    positions: np.ndarray  # int64 [T]
    ref: np.ndarray  # object [T]
    alt: np.ndarray  # object [T]
    samples: list[str]
    alleles: np.ndarray  # int8 [S, 2, T]
    phased: np.ndarray  # bool [S, T]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of records skipped

    @property
    def n_sites(self) -> int:
        return int(self.positions.shape[0])


# Allele QC actions of a target site at a panel site's position (the QC file's ``action`` column).
MATCH = "match"  # same REF/ALT: used as it is
RECODED_SWAP = "recoded_swap"  # target REF/ALT = panel ALT/REF: alleles 0<->1 swapped, used
RECODED_FLIP = "recoded_flip"  # the complement of the panel's REF/ALT (other strand): used as it is
RECODED_FLIP_SWAP = "recoded_flip_swap"  # the complement, swapped: alleles 0<->1 swapped, used
EXCLUDED_AMBIGUOUS = "excluded_ambiguous_strand"  # A/T or C/G swapped: a swap or a flip, which is unknown
EXCLUDED_MISMATCH = "excluded_allele_mismatch"  # other alleles (e.g. another ALT)
USED = (MATCH, RECODED_SWAP, RECODED_FLIP, RECODED_FLIP_SWAP)
SWAPPED = (RECODED_SWAP, RECODED_FLIP_SWAP)
_COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}


def allele_actions(t_ref, t_alt, p_ref, p_alt) -> np.ndarray:
    """The QC action (object [n]) of target SNPs (``t_ref > t_alt``) at panel SNPs (``p_ref > p_alt``).

    An exact match wins, so an A/T or C/G site coded as in the panel is used (no server can tell
    its strand either); its swapped form is both a swap and a strand flip, hence excluded.
    """
    t_ref, t_alt = np.asarray(t_ref, dtype=object), np.asarray(t_alt, dtype=object)
    p_ref, p_alt = np.asarray(p_ref, dtype=object), np.asarray(p_alt, dtype=object)
    comp = np.vectorize(lambda b: _COMPLEMENT.get(b, ""), otypes=[object])
    c_ref, c_alt = (comp(t_ref), comp(t_alt)) if t_ref.size else (t_ref, t_alt)
    ambiguous = comp(p_ref) == p_alt if p_ref.size else np.zeros(0, bool)
    conditions = [
        (t_ref == p_ref) & (t_alt == p_alt),
        (t_ref == p_alt) & (t_alt == p_ref) & ambiguous,
        (t_ref == p_alt) & (t_alt == p_ref),
        (c_ref == p_ref) & (c_alt == p_alt),
        (c_ref == p_alt) & (c_alt == p_ref),
    ]
    choices = [MATCH, EXCLUDED_AMBIGUOUS, RECODED_SWAP, RECODED_FLIP, RECODED_FLIP_SWAP]
    return np.select(conditions, choices, default=EXCLUDED_MISMATCH).astype(object)


@dataclass
class Alignment:
    """Target sites matched to panel sites by (contig, position) and alleles, after allele QC.

    ``panel_index``: the panel site each target site types (recoded ones included), -1 if none.
    ``action``: :func:`allele_actions` at a panel site's position, ``""`` where the panel has no
    site. ``swap``: the site's alleles are 0<->1 swapped into the panel's coding.
    """

    panel_index: np.ndarray  # int64 [T]
    n_matched: int  # same alleles
    n_absent: int  # position not in the panel
    n_allele_mismatch: int  # position present, excluded (alleles that do not fit, A/T or C/G swapped)
    action: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # object [T]
    swap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # bool [T]

    @property
    def n_recoded(self) -> int:
        return int((self.panel_index >= 0).sum()) - self.n_matched

    def summary(self) -> str:
        return (
            f"{self.n_matched} target sites matched the panel, {self.n_recoded} recoded (REF/ALT swap or strand "
            f"flip), {self.n_absent} absent from the panel, {self.n_allele_mismatch} excluded (alleles do not fit)"
        )


def read_target(path: str | os.PathLike, samples: list[str] | None = None, progress: bool = False) -> Target:
    """Read target genotypes (VCF/BCF, phased or not, missing calls allowed) of one contig.

    ``samples``: load only these (kept in file order). Site rules as in :func:`read_panel`:
    biallelic SNPs kept; multi-allelic (incl. split), non-SNP and ALT='.' records skipped
    and counted in ``Target.skipped``; unsorted/duplicate records, several contigs,
    haploid/polyploid calls raise InputError. Missing alleles are -1; ``phased`` is the
    per-call phase flag (False for '/' genotypes).
    """
    path = str(path)
    vcf = open_checked(path, "target")
    all_samples = list(vcf.samples)
    if samples is not None:
        absent = [s for s in samples if s not in set(all_samples)]
        if absent:
            raise InputError(
                path,
                f"samples not in the file: {shown_names(absent)}",
                "check the sample names (bcftools query -l)",
            )
        vcf.close()
        vcf = open_vcf(path, "target", samples=list(samples))
    names = list(vcf.samples)
    if not names:
        raise InputError(path, "no samples in the header", "the target VCF needs sample genotypes")
    sites = SiteTable(path, "target")
    buf = RowBuffer(3 * len(names), dtype=np.int8)  # allele 0, allele 1, phased flag per sample
    for v, g in kept_genotypes(vcf, sites, buf, "reading target", progress):
        if g.shape[1] != 3 or g[:, :2].min() < -1 or g[:, :2].max() > 1:
            problem = gt_problem(g, names, allow_missing=True, require_phased=False)
            if problem is not None:
                raise InputError(
                    path,
                    problem,
                    "use diploid genotypes with allele indices 0/1 (bcftools norm -m-any splits multi-allelic sites)",
                    record=f"{v.CHROM}:{v.POS}",
                )
            g[:, 1][g[:, 1] == -2] = -1  # a lone '.' is missing on both haplotypes
        buf.row()[:] = g.reshape(-1)
    vcf.close()
    sites.finish()
    raw = buf.site_major(sites.n).reshape(sites.n, len(names), 3)  # [T, S, 3]
    alleles = np.ascontiguousarray(raw[:, :, :2].transpose(1, 2, 0))  # [S, 2, T]
    # a missing call is never "phased" information: '.|.' carries no phase
    phased = np.ascontiguousarray((raw[:, :, 2] != 0).T)
    return Target(path=path, samples=names, alleles=alleles, phased=phased, **sites.columns())


def _strip_chr(contig: str) -> str:
    return contig[3:] if contig.lower().startswith("chr") else contig


def align_target(target: Target, panel: Panel) -> Alignment:
    """Match target sites to panel sites by (contig, position) and alleles (:func:`allele_actions`).

    A swapped or strand-flipped site types its panel site (``swap`` says when its alleles are
    recoded 0<->1); an ambiguous swapped A/T or C/G site and other alleles are excluded
    (``panel_index`` -1, counted in ``n_allele_mismatch``). Raises InputError when the contigs differ
    (suggesting ``bcftools annotate --rename-chrs`` when only a 'chr' prefix differs) or no
    target site matches (a genome build or chromosome mismatch).
    """
    if target.contig != panel.contig:
        if _strip_chr(target.contig) == _strip_chr(panel.contig):
            fix = (
                f"rename the target's contig with bcftools annotate --rename-chrs (a file with the line "
                f"'{target.contig} {panel.contig}')"
            )
        else:
            fix = "give a target and a panel of the same chromosome"
        raise InputError(
            target.path,
            f"target contig '{target.contig}' differs from the panel's '{panel.contig}' ({panel.path})",
            fix,
            record=f"{target.contig}:{int(target.positions[0]) if target.n_sites else 0}",
        )
    t_pos = target.positions
    j = np.searchsorted(panel.positions, t_pos)
    j_clip = np.minimum(j, max(panel.n_sites - 1, 0))
    present = (j < panel.n_sites) & (panel.positions[j_clip] == t_pos) if panel.n_sites else np.zeros(0, bool)
    action = np.full(target.n_sites, "", dtype=object)
    at = np.flatnonzero(present)
    action[at] = allele_actions(target.ref[at], target.alt[at], panel.ref[j_clip[at]], panel.alt[j_clip[at]])
    used = np.isin(action, USED)
    index = np.where(used, j_clip, -1).astype(np.int64)
    n_matched = int((action == MATCH).sum())
    n_absent = int((~present).sum())
    n_mismatch = int((present & ~used).sum())
    if not used.any():
        raise InputError(
            target.path,
            f"no target site matches the panel {panel.path} ({n_absent} of {target.n_sites} positions absent, "
            f"{n_mismatch} with other alleles)",
            "check that target and panel use the same genome build (GRCh37 vs GRCh38) and chromosome",
        )
    return Alignment(index, n_matched, n_absent, n_mismatch, action=action, swap=np.isin(action, SWAPPED))
