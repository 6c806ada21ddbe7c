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
   where it is most central. ``--model vote``: no model, the donors' weighted vote;
6. typed sites keep their input calls; GP from HDS;
7. write the sorted, bgzipped, indexed VCF, with target records at positions the panel lacks
   passed through, and ``OUT.qc.tsv``: every target record recoded (REF/ALT swap, strand flip) or
   excluded (never written beside the imputed panel record of its position).
"""

from __future__ import annotations

import numbers
import shlex
import sys
import time

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
    ref_path, target_path, model_path, out_path, panel_file, batch_size, overlap, prephase=None
) -> None:
    """Refuse, before any work, options that would fail late or silently change the output."""
    from .paths import check_output_file

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
    model_file = None if model_path == VOTE else model_path
    inputs = {"--ref": ref_path, "--target": target_path, "--model": model_file, "--panel": panel_file}
    check_output_file(out_path, inputs)
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
) -> dict:
    """Impute ``target_path`` against ``ref_path`` with the checkpoint ``model_path``; write ``out_path``.

    ``model_path="vote"``: no checkpoint; each site takes the vote of its PBWT donors.
    ``threads``: torch's CPU pool and Beagle's ``nthreads`` (None: the CPUs this process may use).
    Returns a summary dict (sites, samples, timings, sites/s, output paths; ``qc``: allele QC action ->
    target records, each listed in ``qc_file``).
    """
    from .io import align_target, read_panel, read_target

    t0 = time.perf_counter()
    check_options(ref_path, target_path, model_path, out_path, panel_file, batch_size, overlap, prephase)
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
    else:
        hds = infer_dosages(model, panel, tables, tc, dev, batch_size, progress)
    t_inf = time.perf_counter() - t_inf
    # 6. final calls
    fc = final_calls(hds, tc)
    # 7. output
    if command is None:
        args = (("ref", ref_path), ("target", target_path), ("model", model_path))
        command = "vcfbert_fast.impute.impute(" + ", ".join(f"{a}={v!r}" for a, v in args) + ")"
    t_w = time.perf_counter()
    written = write_output(out_path, panel, target, alignment, str(target_path), tc, fc, command)
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
    print(qc_line(written["qc"], written["qc_file"]), file=sys.stderr)
    print(
        f"wrote {written['path']}: {written['imputed_sites']} imputed + {written['typed_sites']} typed panel sites, "
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
        "--out", required=True, help="output VCF (bgzipped and tabix-indexed), e.g. imputed.vcf.gz"
    )
    parser.add_argument("--panel", default=None, help="sample -> population table (as given to train)")
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
        panel_file=args.panel,
        batch_size=args.batch_size,
        device=args.device,
        prephase=args.prephase,
        allow_unphased=args.allow_unphased,
        overlap=args.overlap,
        progress=not args.no_progress,
        command=command,
        java_mem=args.java_mem,
        threads=args.threads,
    )
    return 0


__all__ = ["impute", "load_model", "prephase_with_beagle", "unphased_hets"]  # the last three: re-exported
