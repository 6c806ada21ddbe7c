"""The imputed VCF: panel sites with the final calls, plus target records the panel lacks."""

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


def write_output(
    out_path: str, panel, target, target_path: str, tc: TargetCalls, fc: FinalCalls, command: str
) -> dict:
    """Write the sorted, bgzipped, indexed VCF; returns ``write_imputed_vcf``'s summary."""
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
        filled=fc.filled,
    )
    return write_imputed_vcf(
        out_path,
        sites,
        target.samples,
        passthrough=passthrough,
        command=command,
        extra_header=[h for h in extra if not h.startswith("##contig")],
    )
