"""The imputed VCF: panel sites with the final calls, plus target records the panel lacks; the
inputs' ##contig lines; the allele QC file."""

from __future__ import annotations

import numpy as np

from .calls import FinalCalls, TargetCalls
from .qc import QcScan, qc_path, write_qc


def passthrough_records(
    target_path: str, qc: QcScan, bp_range: tuple[int, int] | None = None
) -> tuple[list[tuple[int, str]], list[str]]:
    """Target records at positions the panel lacks, as (POS, original text); header lines.

    A record at a panel site's position never passes through: it types that site or is
    excluded, and goes to ``qc`` either way (allele QC, ``imputation/qc.py``). ``bp_range``
    ``[start, end)``: only records there (a chunk's core, a ``--region``).
    """
    import cyvcf2

    vcf = cyvcf2.VCF(target_path)
    header = [
        line
        for line in vcf.raw_header.splitlines()
        if line.startswith(("##INFO", "##FORMAT", "##FILTER", "##ALT", "##contig"))
    ]
    panel_pos = qc.panel.positions
    out = []
    for v in vcf:
        pos = int(v.POS)
        if bp_range is not None and not bp_range[0] <= pos < bp_range[1]:
            continue
        j = int(np.searchsorted(panel_pos, pos))
        if j < len(panel_pos) and panel_pos[j] == pos:
            qc.add(v.CHROM, pos, v.ID or ".", v.REF.upper(), [a.upper() for a in v.ALT])
        else:
            out.append((pos, str(v).rstrip("\n")))
    vcf.close()
    return out, header


def contig_lines(panel_path: str, target_header: list[str], contig: str) -> list[str]:
    """The inputs' ``##contig`` lines (length, assembly...): the panel's, else the target's, as they are.

    The line for ``contig`` is the first of the panel's and the target's that gives a length.
    """
    import cyvcf2

    from ..vcf_writer import contig_id

    vcf = cyvcf2.VCF(panel_path)
    panel_lines = [line for line in vcf.raw_header.splitlines() if line.startswith("##contig=")]
    vcf.close()
    target_lines = [line for line in target_header if line.startswith("##contig=")]
    mine = [line for line in panel_lines + target_lines if contig_id(line) == contig]
    best = next((line for line in mine if "length=" in line), mine[0] if mine else None)
    base = panel_lines if any(contig_id(line) == contig for line in panel_lines) else target_lines
    return [best if contig_id(line) == contig else line for line in base]


def write_output(
    out_path: str,
    panel,
    target,
    alignment,
    target_path: str,
    tc: TargetCalls,
    fc: FinalCalls,
    command: str,
    bp_range: tuple[int, int] | None = None,
    **options,
) -> dict:
    """Write the sorted, indexed VCF and ``OUT.qc.tsv``; ``options`` go to ``write_imputed_vcf``
    (output, fields, min_r2, sites_path). Returns its summary with ``qc`` (action -> records) and ``qc_file``."""
    from ..vcf_writer import ImputedSites, write_imputed_vcf

    at = np.flatnonzero(alignment.action != "")
    actions = {
        (int(target.positions[t]), str(target.ref[t]), str(target.alt[t])): str(alignment.action[t]) for t in at
    }
    qc = QcScan(panel, actions)
    passthrough, extra = passthrough_records(target_path, qc, bp_range)
    sites = ImputedSites(
        contig=panel.contig,
        positions=panel.positions,
        ids=panel.ids,
        ref=panel.ref,
        alt=panel.alt,
        hds=fc.hds,
        imputed=~tc.typed,
        gt=fc.gt,
        phased=fc.phased,
        gp_het=fc.unphased_het,
        filled=fc.filled,
    )
    written = write_imputed_vcf(
        out_path,
        sites,
        target.samples,
        passthrough=passthrough,
        command=command,
        extra_header=contig_lines(panel.path, extra, panel.contig)
        + [h for h in extra if not h.startswith("##contig")],
        **options,
    )
    path = qc_path(out_path)
    return {**written, "qc": write_qc(path, qc.rows()), "qc_file": path}
