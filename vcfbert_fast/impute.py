"""``vcfbert-fast impute``: a trained checkpoint + a phased panel + a target VCF -> an imputed VCF.

The steps, each in ``vcfbert_fast/imputation/`` (docs/IMPUTATION.md has the conventions):

1. read the panel, the checkpoint (a checkpoint of another panel is refused) and the target;
2. phase the target (``--prephase beagle``) or refuse unphased hets, unless ``--allow-unphased``;
3. align the target's sites to the panel (allele QC: swaps and strand flips recoded, ambiguous
   and other mismatches excluded) and lay its calls over the panel's sites;
4. the model's tables: training-sample frequencies, overlapping windows, population AF;
5. for every window and batch of targets: query tokens (MASK at untyped sites, UNK at missing
   calls), each haplotype's donors (``pbwt``: per site, the panel haplotypes matching it longest
   over the typed sites, across the chromosome; ``hamming``: the K nearest in the window), their
   embeddings and match lengths, one forward pass; each site keeps the prediction of the window
   where it is most central, its ALT probabilities calibrated per MAF class as fitted at training
   (``calibration.py``). ``--model vote``: no model, the donors' weighted vote;
6. typed sites keep their input calls; GP from HDS;
7. write the sorted, indexed VCF (.vcf/.vcf.gz/.bcf by name or -O; -f fields; --min-r2; --sites
   table), with target records at positions the panel lacks passed through, the inputs' ##contig
   lines, and ``OUT.qc.tsv``: every target record recoded (REF/ALT swap, strand flip) or excluded
   (never written beside the imputed panel record of its position).
"""

from __future__ import annotations

import numbers
import shlex
import sys
import time

from .calibration import calibrate
from .cli import add_populations_argument
from .devices import resolve_device, set_threads
from .errors import InputError
from .imputation import (
    TargetCalls,
    final_calls,
    infer_dosages,
    load_model,
    model_tables,
    phase_target,
    prephase_with_beagle,
    qc_line,
    qc_path,
    unphased_hets,
    vote_dosages,
    vote_tables,
    write_output,
)

VOTE = "vote"  # --model vote: impute from the PBWT donors alone, no checkpoint


def check_options(
    ref_path,
    target_path,
    model_path,
    out_path,
    panel_file,
    batch_size,
    overlap,
    prephase=None,
    output=None,
    fields=None,
    min_r2=None,
    sites_path=None,
) -> None:
    """Refuse, before any work, options that would fail late or silently change the output.

    ``output``, ``fields``, ``min_r2``, ``sites_path``: ``write_imputed_vcf``'s output options.
    """
    from .io.vcf_output import output_type as resolve_output_type
    from .paths import check_output_file, same_file
    from .vcf_writer import format_fields as resolve_format_fields

    def whole(x) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    if not whole(batch_size) or batch_size < 1:
        raise InputError(
            None,
            f"--batch-size {batch_size} must be a whole number >= 1",
            "e.g. --batch-size 32 (the default)",
        )
    if overlap is not None and (not whole(overlap) or overlap < 0):
        raise InputError(None, f"--overlap {overlap} must be a whole number >= 0", "omit it for the default")
    if min_r2 is not None and not (isinstance(min_r2, numbers.Real) and 0.0 <= min_r2 <= 1.0):
        raise InputError(None, f"--min-r2 {min_r2} must be a number from 0 to 1", "e.g. --min-r2 0.3")
    resolve_format_fields(fields)
    model_file = None if model_path == VOTE else model_path
    inputs = {"--ref": ref_path, "--target": target_path, "--model": model_file, "--populations": panel_file}
    check_output_file(out_path, inputs)
    resolve_output_type(out_path, output)
    if sites_path is not None:
        if same_file(sites_path, out_path):
            raise InputError(sites_path, "--sites is the --out file", "give the sites table its own name")
        check_output_file(sites_path, {**inputs, "--out": out_path}, flag="--sites")
    check_output_file(qc_path(out_path), inputs, flag="--out (its .qc.tsv)")
    if prephase:  # the Beagle step's output (``prephase_with_beagle``) must not replace an input either
        check_output_file(f"{out_path}.prephased.vcf.gz", inputs, flag="--out (its .prephased.vcf.gz)")


def check_overlap(model_path: str, state: dict, overlap: int | None) -> None:
    """Refuse an ``--overlap`` the checkpoint's windows cannot hold (never clipped silently)."""
    if overlap is None:
        return
    most = int(state["window_layout"]["max_sites"]) - 1
    if overlap > most:
        raise InputError(
            model_path,
            f"--overlap {overlap} is above this model's maximum {most} (its windows hold {most + 1} sites)",
            f"use --overlap 0..{most}, or omit it for the default",
        )


def impute(
    ref_path: str,
    target_path: str,
    model_path: str,
    out_path: str,
    panel_file: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    prephase: str | None = None,
    allow_unphased: bool = False,
    overlap: int | None = None,
    progress: bool = True,
    command: str | None = None,
    java_mem: str = "4g",
    threads: int | None = None,
    output_type: str | None = None,
    format_fields: str | None = None,
    min_r2: float | None = None,
    sites_path: str | None = None,
) -> dict:
    """Impute ``target_path`` against ``ref_path`` with the checkpoint ``model_path``; write ``out_path``.

    ``model_path="vote"``: no checkpoint; each site takes the vote of its PBWT donors.
    ``threads``: torch's CPU pool and Beagle's ``nthreads`` (None: the CPUs this process may use).
    ``output_type`` (v/z/b, None: from the name), ``format_fields`` ("GT,DS"...), ``min_r2`` and
    ``sites_path``: the output options (``vcf_writer.write_imputed_vcf``).
    Returns a summary dict (sites, samples, timings, sites/s, output paths; ``qc``: allele QC action ->
    target records, each listed in ``qc_file``).
    """
    from .io import align_target, read_panel, read_target

    t0 = time.perf_counter()
    output_options = {"output": output_type, "fields": format_fields, "min_r2": min_r2, "sites_path": sites_path}
    check_options(
        ref_path, target_path, model_path, out_path, panel_file, batch_size, overlap, prephase, **output_options
    )
    dev = resolve_device(device)
    threads = set_threads(threads)
    if prephase not in (None, "beagle"):
        raise InputError(None, f"--prephase {prephase!r} is not supported", "use --prephase beagle")
    # 1. inputs
    panel = read_panel(ref_path, panel_file, progress=progress)
    vote = model_path == VOTE
    model, state = (None, None) if vote else load_model(model_path, panel, dev)
    if not vote:
        check_overlap(model_path, state, overlap)
    target = read_target(str(target_path), progress=progress)
    # 2. phase
    target, unph, prephased_path = phase_target(
        target, ref_path, target_path, out_path, prephase, allow_unphased, java_mem, progress, threads
    )
    # 3. align
    alignment = align_target(target, panel)
    print(f"alignment: {alignment.summary()}", file=sys.stderr)
    tc = TargetCalls.from_alignment(target, alignment, panel.n_sites, unph)
    # 4. model tables
    if vote:
        tables = vote_tables(panel)
        print(f"model: vote of K={tables.k} PBWT donors per site (no checkpoint)", file=sys.stderr)
    else:
        tables = model_tables(panel, state, target.samples, panel_file, overlap)
        mc = state["model_config"]
        print(
            f"model: {model_path} ({mc['dims']} dims, {mc['n_layers']} layers, {tables.engine} K={tables.k}); "
            f"{len(tables.layout)} windows of <= {tables.layout.max_sites} sites, overlap {tables.layout.overlap}; "
            f"{tc.n_samples} targets on {dev} ({threads} threads); af_p = {tables.af_p_note}",
            file=sys.stderr,
        )
    layout = tables.layout
    if tables.engine == "pbwt" and tables.k > 0 and not tc.typed.any():
        raise InputError(
            str(target_path), "no target site matches a panel site", "check the contig names, build and alleles"
        )
    # 5. inference
    t_inf = time.perf_counter()
    if vote:
        hds = vote_dosages(panel, tables, tc, batch_size, progress)
    else:  # the checkpoint's calibration (calibration.py; none in older checkpoints: unchanged)
        hds = infer_dosages(model, panel, tables, tc, dev, batch_size, progress)
        hds = calibrate(hds, tables.freqs.af, state.get("calibration"))
    t_inf = time.perf_counter() - t_inf
    # 6. final calls
    fc = final_calls(hds, tc)
    # 7. output
    if command is None:
        args = (("ref", ref_path), ("target", target_path), ("model", model_path))
        command = "vcfbert_fast.impute.impute(" + ", ".join(f"{a}={v!r}" for a, v in args) + ")"
    t_w = time.perf_counter()
    written = write_output(out_path, panel, target, alignment, str(target_path), tc, fc, command, **output_options)
    t_w = time.perf_counter() - t_w
    total = time.perf_counter() - t0
    summary = {
        **written,
        "alignment": alignment.summary(),
        "windows": len(layout),
        "overlap": layout.overlap,
        "k": tables.k,
        "device": str(dev),
        "threads": threads,
        "unphased_hets": int(tc.unphased.sum()),
        "prephased": prephased_path,
        "inference_s": round(t_inf, 3),
        "write_s": round(t_w, 3),
        "total_s": round(total, 3),
        "sites_per_s": round(panel.n_sites / max(t_inf, 1e-9), 1),
    }
    low = f" ({written['below_min_r2']} imputed with DR2 < {min_r2} left out)" if min_r2 else ""
    print(qc_line(written["qc"], written["qc_file"]), file=sys.stderr)
    print(
        f"wrote {written['path']}: {written['imputed_sites']} imputed + {written['typed_sites']} typed panel "
        f"sites{low}, "
        f"{written['passthrough_records']} target records passed through, {tc.n_samples} samples; inference "
        f"{t_inf:.1f} s ({summary['sites_per_s']} sites/s), total {total:.1f} s",
        file=sys.stderr,
    )
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("--ref", required=True, help="the phased reference panel the model was trained on")
    parser.add_argument("--target", required=True, help="target VCF/BCF (phased; see --prephase)")
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint from `vcfbert-fast train` (run/best.pt), or `vote`: the PBWT donors' vote, no model",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output file; its name sets the type: .vcf.gz (bgzipped, .tbi index), .bcf (BCF, .csi), .vcf (text)",
    )
    parser.add_argument(
        "-O",
        "--output-type",
        choices=["v", "z", "b"],
        default=None,
        help="v: plain VCF, z: bgzipped VCF, b: BCF, whatever the --out name (as bcftools)",
    )
    parser.add_argument(
        "-f",
        "--format-fields",
        default=None,
        metavar="FIELDS",
        help="FORMAT fields to write, comma-separated, from GT,DS,GP,HDS (default all four; GT comes first)",
    )
    parser.add_argument(
        "--min-r2",
        type=float,
        default=None,
        metavar="X",
        help="leave out imputed sites with DR2 < X (typed sites are always written); the summary counts them",
    )
    parser.add_argument(
        "--sites",
        default=None,
        metavar="PATH",
        help="also write a sites table: CHROM POS ID REF ALT AF DR2 STATUS FILTER, one line per panel site",
    )
    add_populations_argument(parser, "sample -> population table (as given to train)")
    parser.add_argument("--batch-size", type=int, default=32, help="target samples per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--prephase", choices=["beagle"], default=None, help="pre-phase the target with Beagle 5.4"
    )
    parser.add_argument(
        "--allow-unphased",
        action="store_true",
        help="impute an unphased target without pre-phasing: unphased hets enter the model as missing calls",
    )
    parser.add_argument(
        "--overlap", type=int, default=None, help="sites shared by neighbouring windows (default max_sites/4)"
    )
    parser.add_argument("--java-mem", default="4g", help="Java heap for --prephase beagle")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for inference and the Beagle pre-phase (default: the CPUs this process may use)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    command = "vcfbert-fast " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    impute(
        args.ref,
        args.target,
        args.model,
        args.out,
        panel_file=args.populations,
        batch_size=args.batch_size,
        device=args.device,
        prephase=args.prephase,
        allow_unphased=args.allow_unphased,
        overlap=args.overlap,
        progress=not args.no_progress,
        command=command,
        java_mem=args.java_mem,
        threads=args.threads,
        output_type=args.output_type,
        format_fields=args.format_fields,
        min_r2=args.min_r2,
        sites_path=args.sites,
    )
    return 0


__all__ = ["impute", "load_model", "prephase_with_beagle", "unphased_hets"]  # the last three: re-exported
