"""The imputed VCF: panel sites with the final calls, plus target records the panel lacks; the inputs' ##contig lines."""

from __future__ import annotations

from .calls import FinalCalls, TargetCalls


def passthrough_records(target_path: str, matched: set) -> tuple[list[tuple[int, str]], list[str]]:
    """Every target record not represented by a matched panel site, as (POS, original text); header lines."""
    import cyvcf2

    vcf = cyvcf2.VCF(target_path)
    header = [
        line
        for line in vcf.raw_header.splitlines()
        if line.startswith(("##INFO", "##FORMAT", "##FILTER", "##ALT", "##contig"))
    ]
    out = []
    for v in vcf:
        key = (int(v.POS), v.REF, ",".join(v.ALT))
        if key not in matched:
            out.append((int(v.POS), str(v).rstrip("\n")))
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
    target_path: str,
    tc: TargetCalls,
    fc: FinalCalls,
    command: str,
    **options,
) -> dict:
    """Write the sorted, indexed VCF; ``options`` go to ``write_imputed_vcf`` (output, fields, min_r2, sites_path)."""
    from ..vcf_writer import ImputedSites, write_imputed_vcf

    j = tc.matched_target
    matched = {(int(p), str(r), str(a)) for p, r, a in zip(target.positions[j], target.ref[j], target.alt[j])}
    passthrough, extra = passthrough_records(target_path, matched)
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
        gp=fc.gp,
    )
    return write_imputed_vcf(
        out_path,
        sites,
        target.samples,
        passthrough=passthrough,
        command=command,
        extra_header=contig_lines(panel.path, extra, panel.contig)
        + [h for h in extra if not h.startswith("##contig")],
        **options,
    )
