"""Allele QC of the target against the panel: every recoded or excluded target record, the QC file.

As imputation servers do it: a target record at a panel site's position either types that site
(as it is, REF/ALT swapped, or strand-flipped: ``io.target.allele_actions``) or is excluded, and
an excluded record is not passed through, so the output never holds the imputed panel record
beside a conflicting user record at one position. Records at positions the panel lacks pass
through untouched. Each recoded or excluded record is one row of ``OUT.qc.tsv``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..io.sites import SKIP_MULTIALLELIC, SKIP_NO_ALT, SKIP_NOT_SNP, classify
from ..io.target import MATCH, USED, allele_actions
from ..paths import partial_file

QC_SUFFIX = ".qc.tsv"
EXCLUDED_MULTIALLELIC = "excluded_multiallelic"  # >1 ALT, or split over records at one position
EXCLUDED_NOT_SNP = "excluded_not_snp"  # indel, MNP, symbolic allele at a panel SNP's position
EXCLUDED_NO_ALT = "excluded_no_alt"  # ALT '.' (a monomorphic record)
EXCLUDED_PREPHASE = "excluded_dropped_by_prephase"  # a usable SNP the Beagle pre-phase left out
_SKIP_ACTION = {
    SKIP_MULTIALLELIC: EXCLUDED_MULTIALLELIC,
    SKIP_NOT_SNP: EXCLUDED_NOT_SNP,
    SKIP_NO_ALT: EXCLUDED_NO_ALT,
}
COLUMNS = ("#CHROM", "POS", "ID", "TARGET_REF", "TARGET_ALT", "PANEL_REF", "PANEL_ALT", "ACTION")


@dataclass(frozen=True)
class QcRow:
    """One recoded or excluded target record, with the panel site at its position."""

    chrom: str
    pos: int
    id: str
    t_ref: str
    t_alt: str
    p_ref: str
    p_alt: str
    action: str


def qc_path(out_path: str | os.PathLike) -> str:
    """``OUT.qc.tsv`` beside the output VCF (``impute`` checks it never names an input)."""
    return f"{os.fspath(out_path)}{QC_SUFFIX}"


class QcScan:
    """Collects the target records at panel sites' positions and gives the QC row of each one
    that is recoded or excluded (a record typing its site as it is gives none).

    ``actions``: (POS, REF, ALT) -> ``Alignment.action`` of the aligned target's SNPs. A SNP the
    aligned target lacks was retracted as part of a split multi-allelic site (another SNP or
    multi-allelic record at its position), recoded into the panel's coding before the Beagle
    pre-phase (``prephase.write_panel_coded``: the aligned target then holds the panel's alleles
    at its position, as a ``match``), or else left out by the pre-phase.
    """

    def __init__(self, panel, actions: dict):
        self.panel, self.actions = panel, actions
        self.records: list[tuple[str, int, str, str, list[str]]] = []
        self.split = Counter()  # position -> SNP or multi-allelic records there

    def add(self, chrom: str, pos: int, vid: str, ref: str, alts: list[str]) -> None:
        self.records.append((chrom, pos, vid, ref, alts))
        if classify(ref, alts) in (None, SKIP_MULTIALLELIC):
            self.split[pos] += 1

    def _action(self, pos: int, ref: str, alts: list[str], p_ref: str, p_alt: str) -> str:
        skip = classify(ref, alts)
        if skip is not None:
            return _SKIP_ACTION[skip]
        known = self.actions.get((pos, ref, alts[0]))
        if known is not None:
            return known
        if self.split[pos] > 1:
            return EXCLUDED_MULTIALLELIC
        action = str(allele_actions([ref], alts, [p_ref], [p_alt])[0])
        if action not in USED or self.actions.get((pos, p_ref, p_alt)) == MATCH:
            return action  # excluded, or recoded before the pre-phase
        return EXCLUDED_PREPHASE

    def rows(self) -> list[QcRow]:
        out = []
        for chrom, pos, vid, ref, alts in self.records:
            j = int(np.searchsorted(self.panel.positions, pos))
            p_ref, p_alt = str(self.panel.ref[j]), str(self.panel.alt[j])
            action = self._action(pos, ref, alts, p_ref, p_alt)
            if action != MATCH:
                out.append(QcRow(chrom, pos, vid, ref, ",".join(alts) or ".", p_ref, p_alt, action))
        return out


def write_qc(path: str, rows: list[QcRow]) -> dict[str, int]:
    """Write the QC file (header only when nothing was recoded or excluded); returns counts per action."""
    rows = sorted(rows, key=lambda r: r.pos)
    with partial_file(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\t".join(COLUMNS) + "\n")
            for r in rows:
                fields = (r.chrom, r.pos, r.id, r.t_ref, r.t_alt, r.p_ref, r.p_alt, r.action)
                fh.write("\t".join(map(str, fields)) + "\n")
        os.replace(tmp, path)
    return dict(sorted(Counter(r.action for r in rows).items()))


def qc_line(counts: dict[str, int], path: str) -> str:
    """The one log line of the allele QC."""
    if not counts:
        return f"allele QC: no target record recoded or excluded ({path})"
    shown = ", ".join(f"{n} {a}" for a, n in counts.items())
    return f"allele QC: {shown} (each listed in {path})"
