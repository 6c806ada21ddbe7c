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
from dataclasses import dataclass, field
from typing import Any

from .calibration import calibrate
from .cli import add_populations_argument
from .devices import PRECISIONS, inference_dtype, resolve_device, set_threads
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
DEFAULT_BUFFER_MB = 2.0  # context each side of a chunk: Beagle's 2 cM overlap at ~1 cM/Mb
# --settle-by-vote: a haplotype's vote this sure at every site it needs skips the model (measured
# on three simulations: BENCHMARKS.md "Settled by the vote")
DEFAULT_SETTLE: float | None = None


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
            "e.g. --batch-size 64 (the default)",
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


def check_settle(settle) -> None:
    """``settle`` is None (the model everywhere) or a vote confidence from 0.5 to 1."""
    if settle is None:
        return
    if isinstance(settle, bool) or not isinstance(settle, numbers.Real) or not 0.5 <= settle <= 1.0:
        raise InputError(
            None,
            f"--settle-by-vote {settle} must be a vote confidence from 0.5 to 1, or off",
            f"omit it for the default ({'off' if DEFAULT_SETTLE is None else DEFAULT_SETTLE})",
        )


def _number_or(word: str, value, what: str):
    """An argparse type: ``word`` (any case) -> ``value``, else a float (range-checked later)."""

    def parse(text: str):
        import argparse

        if text.strip().lower() == word:
            return value
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} or {word!r}") from None

    return parse


settle_argument = _number_or("off", None, "a number")  # --settle-by-vote (check_settle: the range)
chunk_argument = _number_or("auto", "auto", "a number of megabases")  # --chunk-mb (impute: the range)


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
    batch_size: int = 64,
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
    region: str | None = None,
    chunk_mb: float | str | None = "auto",
    buffer_mb: float = DEFAULT_BUFFER_MB,
    resume: bool = False,
    precision: str = "auto",
    settle: float | None = DEFAULT_SETTLE,
) -> dict:
    """Impute ``target_path`` against ``ref_path`` with the checkpoint ``model_path``; write ``out_path``.

    ``model_path="vote"``: no checkpoint; each site takes the vote of its PBWT donors.
    ``threads``: torch's CPU pool and Beagle's ``nthreads`` (None: the CPUs this process may use).
    ``output_type`` (v/z/b, None: from the name), ``format_fields`` ("GT,DS"...), ``min_r2`` and
    ``sites_path``: the output options (``vcf_writer.write_imputed_vcf``).
    ``region`` ("CHR:START-END"), ``chunk_mb`` / ``buffer_mb``: impute chunk by chunk
    (``imputation/chunks.py``; ``"auto"``: cores sized so that a chunk's sites x targets stay
    within ``chunks.CHUNK_GENOTYPES``, None: one chunk); ``resume``: keep the chunks an interrupted
    run finished. Under
    torchrun the chunks are shared among the ranks and rank 0 joins them. ``precision``: auto, fp32
    or bf16 (``devices.inference_dtype``). ``settle``: a target haplotype whose PBWT donors' vote is
    at least this sure at every site a window imputes for it takes the vote there, and the model runs
    on the others (``inference.infer_dosages``); None: the model everywhere.
    Returns a summary dict (sites, samples, timings, sites/s, output paths; ``qc``: allele QC action ->
    target records, each listed in ``qc_file``).
    """
    from .imputation.chunks import AUTO, auto_chunk_mb, parse_region, plan_chunks
    from .io import align_target, read_panel
    from .io.vcf_output import output_type as resolve_output_type
    from .training.distributed import join_process_group, leave_process_group

    t0 = time.perf_counter()
    output_options = {
        "output": output_type,
        "fields": format_fields,
        "min_r2": min_r2,
        "sites_path": sites_path,
    }
    check_options(
        ref_path,
        target_path,
        model_path,
        out_path,
        panel_file,
        batch_size,
        overlap,
        prephase,
        **output_options,
    )
    region_t = parse_region(region)
    if chunk_mb not in (None, AUTO) and not (
        isinstance(chunk_mb, numbers.Real) and not isinstance(chunk_mb, bool) and 0 < chunk_mb < float("inf")
    ):
        raise InputError(None, f"--chunk-mb {chunk_mb} must be a number of megabases > 0, or auto", "e.g. --chunk-mb 10")
    if not (isinstance(buffer_mb, numbers.Real) and 0 <= buffer_mb < float("inf")):
        raise InputError(None, f"--buffer-mb {buffer_mb} must be a number of megabases >= 0", "e.g. --buffer-mb 2")
    check_settle(settle)
    dev = resolve_device(device)
    threads = set_threads(threads)
    amp_dtype = inference_dtype(dev, precision)
    if prephase not in (None, "beagle"):
        raise InputError(None, f"--prephase {prephase!r} is not supported", "use --prephase beagle")
    ctx = join_process_group(device)
    ok = False
    try:
        # 1. inputs
        panel = read_panel(ref_path, panel_file, progress=progress and ctx.main)
        plan_chunks(panel.positions, panel.contig, region_t, None, buffer_mb)  # a bad --region fails now
        vote = model_path == VOTE
        model, state = (None, None) if vote else load_model(model_path, panel, dev)
        if not vote:
            check_overlap(model_path, state, overlap)
            amp_dtype = inference_dtype(dev, precision, model.config.encode)  # auto picks by the model
        # 2. phase (rank 0 runs Beagle; the other ranks read its output)
        target, unph, prephased_path = _read_and_phase(
            target_path, ref_path, out_path, prephase, allow_unphased, java_mem, progress, threads, ctx, panel
        )
        # read now: later children (bcftools, tabix) would report this process's size as theirs
        prephase_rss = peak_rss_gib()[1] if prephased_path and ctx.main else None
        if chunk_mb == AUTO:  # sized by the targets: the chunk, not the chromosome, sets the memory
            chunk_mb = auto_chunk_mb(panel.positions, len(target.samples), region_t, buffer_mb)
        chunks = plan_chunks(panel.positions, panel.contig, region_t, chunk_mb, buffer_mb)
        # 3. align
        alignment = align_target(target, panel)
        say(ctx, f"alignment: {alignment.summary()}")
        train_cfg = {} if vote else dict(state.get("train_config") or {})
        needs_typed = vote or (train_cfg.get("engine") == "pbwt" and int(train_cfg.get("k", 0)) > 0)
        if needs_typed and not (alignment.panel_index >= 0).any():
            raise InputError(
                str(target_path),
                "no target site matches a panel site",
                "check the contig names, build and alleles",
            )
        if command is None:
            args = (("ref", ref_path), ("target", target_path), ("model", model_path))
            command = "vcfbert_fast.impute.impute(" + ", ".join(f"{a}={v!r}" for a, v in args) + ")"
        run = _Run(
            panel, target, str(target_path), alignment, unph, model, state, model_path, panel_file, overlap,
            dev, batch_size, amp_dtype, command, settle,
        )  # fmt: skip
        say(ctx, run.describe(threads, chunks, region_t))
        # 4-7 per chunk
        kind = resolve_output_type(out_path, output_type)
        t_inf = time.perf_counter()
        if ctx.world == 1 and len(chunks) == 1 and not resume:
            chunk = chunks[0]
            bar = _bar([chunk], progress)
            written = run.chunk(
                chunk, out_path, bar, bp_range=None if region_t is None else chunk.bp, **output_options
            )
            bar.close()
            n_done, n_resumed = 1, 0
        else:
            manifest = _manifest(
                ref_path,
                target_path,
                model_path,
                panel_file,
                batch_size=batch_size,
                prephase=prephase,
                allow_unphased=allow_unphased,
                overlap=overlap,
                format_fields=format_fields,
                min_r2=min_r2,
                sites=sites_path is not None,
                region=region,
                chunk_mb=chunk_mb,
                buffer_mb=buffer_mb,
                precision=run.precision,
                settle=settle,
            )
            written, n_done, n_resumed = _run_chunks(
                run, chunks, out_path, kind, output_options, resume, progress, ctx, manifest
            )
        t_inf = time.perf_counter() - t_inf
        ok = True
    finally:
        leave_process_group(ctx, synchronise=ok)
    total = time.perf_counter() - t0
    rss_self, _ = peak_rss_gib()
    summary = {
        **written,
        "alignment": alignment.summary(),
        "chunks": len(chunks),
        "chunks_run": n_done,
        "chunks_resumed": n_resumed,
        "rank": ctx.rank,
        "world": ctx.world,
        "k": run.k,
        "device": str(dev),
        "threads": threads,
        "precision": run.precision,
        "unphased_hets": int(unph[:, alignment.panel_index >= 0].sum()),  # at the sites imputation uses
        "prephased": prephased_path,
        "windows": run.windows,
        "overlap": run.window_overlap,
        "inference_s": round(run.infer_s, 3),
        "write_s": round(run.write_s, 3),
        "chunks_s": round(t_inf, 3),
        "total_s": round(total, 3),
        "sites_per_s": round(run.sites / max(run.infer_s, 1e-9), 1),
        "settle": settle,
        "haplotype_windows": run.stats.get("haplotype_windows", 0),
        "model_haplotype_windows": run.stats.get("model_haplotype_windows", 0),
        "peak_rss_gib": rss_self,  # this process (None where the platform does not tell)
        "prephase_peak_rss_gib": prephase_rss,  # Beagle's Java (at least this process's size when it started)
    }
    if ctx.main:
        print(qc_line(written["qc"], written["qc_file"]), file=sys.stderr)
        low = f" ({written['below_min_r2']} imputed with DR2 < {min_r2} left out)" if min_r2 else ""
        print(
            f"wrote {written['path']}: {written['imputed_sites']} imputed + {written['typed_sites']} typed panel "
            f"sites{low}, {written['passthrough_records']} target records passed through, {len(target.samples)} samples, "
            f"{len(chunks)} chunk(s) ({n_resumed} resumed); inference {run.infer_s:.1f} s "
            f"({summary['sites_per_s']} sites/s){_model_share(summary)}, total {total:.1f} s{_rss_note(summary)}",
            file=sys.stderr,
        )
    return summary


def peak_rss_gib() -> tuple[float | None, float | None]:
    """Peak resident memory so far, GiB: ``(this process, its largest finished child)``.

    Told apart because ``/usr/bin/time`` reports the larger of the two: the Beagle pre-phase is a
    child. Linux carries a process's peak across exec, so a child's figure is at least this
    process's size when it was started. (None, None) where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None, None
    scale = 2**30 if sys.platform == "darwin" else 2**20  # ru_maxrss: bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale
    return round(own, 3), round(child, 3)


def _rss_note(summary: dict) -> str:
    if summary["peak_rss_gib"] is None:
        return ""
    pp = summary["prephase_peak_rss_gib"]
    return f"; peak RSS {summary['peak_rss_gib']:.2f} GiB" + (f" (Beagle pre-phase {pp:.2f} GiB)" if pp else "")


def _model_share(summary: dict) -> str:
    n, m = summary["haplotype_windows"], summary["model_haplotype_windows"]
    if not n or summary["settle"] is None:
        return ""
    return f", model on {m} of {n} haplotype-windows ({100 * m / n:.1f} %; the vote settled the rest)"


def say(ctx, text: str) -> None:
    """One log line, from rank 0 only (every rank would repeat it)."""
    if ctx.main:
        print(text, file=sys.stderr)


def _read_and_phase(
    target_path, ref_path, out_path, prephase, allow_unphased, java_mem, progress, threads, ctx, panel
):
    """``phase_target`` on rank 0; with several ranks the others wait, then read rank 0's phased file."""
    from .io import read_target
    from .training.distributed import barrier

    target = read_target(str(target_path), progress=progress and ctx.main)
    if not ctx.enabled or ctx.main:
        result = phase_target(
            target, ref_path, target_path, out_path, prephase, allow_unphased, java_mem, progress, threads, panel
        )
        barrier(ctx)  # rank 0 is done: the phased file exists
        return result
    barrier(ctx)
    unph = unphased_hets(target.alleles, target.phased)
    if unph.any() and prephase == "beagle":
        path = f"{out_path}.prephased.vcf.gz"
        target = read_target(path, progress=False)
        return target, unphased_hets(target.alleles, target.phased), path
    return target, unph, None


def _bar(chunks, progress: bool):
    """One bar over every site the chunks read (buffers too: that is the work), with rate and ETA."""
    from .progress import progress_bar

    total = sum(c.span[1] - c.span[0] for c in chunks)
    return progress_bar(total, desc="imputing", unit=" sites", enabled=progress)


@dataclass
class _Run:
    """What every chunk of one run shares: inputs, model, options; ``chunk()`` imputes and writes one."""

    panel: Any
    target: Any
    target_path: str
    alignment: Any
    unphased: Any  # [S, T] bool: the target's unphased hets (TargetCalls are built per chunk from these)
    model: Any  # None: --model vote
    state: dict | None
    model_path: str
    panel_file: str | None
    overlap: int | None
    dev: Any
    batch_size: int
    amp_dtype: Any
    command: str
    settle: float | None = None
    # accumulated over the chunks this process ran
    windows: int = 0
    sites: int = 0
    window_overlap: int = 0
    infer_s: float = 0.0
    write_s: float = 0.0
    stats: dict = field(default_factory=dict)  # infer_dosages' counts, summed over the chunks

    @property
    def vote(self) -> bool:
        return self.model is None

    @property
    def precision(self) -> str:
        return "fp32" if self.amp_dtype is None else "bf16"

    @property
    def k(self) -> int:
        return 32 if self.vote else int((self.state.get("train_config") or {}).get("k", 0))

    def describe(self, threads: int, chunks, region) -> str:
        size = "" if len(chunks) < 2 else f" of {(chunks[0].bp[1] - chunks[0].bp[0]) / 1e6:g} Mb"
        where = f"{len(chunks)} chunk(s){size}" + (f" in {region[0]}:{region[1]}-{region[2]}" if region else "")
        if self.vote:
            return f"model: vote of K=32 PBWT donors per site (no checkpoint); {where}; {len(self.target.samples)} targets"
        mc, tc = self.state["model_config"], dict(self.state.get("train_config") or {})
        if self.settle is None or tc.get("engine") != "pbwt" or not self.k:
            shortcut = "the model at every haplotype"
        else:
            shortcut = f"haplotypes whose donor vote is >= {self.settle:g} sure take it, the model runs on the rest"
        return (
            f"model: {self.model_path} ({mc['dims']} dims, {mc['n_layers']} layers, {tc.get('engine', 'hamming')} "
            f"K={self.k}); {where}; {len(self.target.samples)} targets on {self.dev} ({threads} threads, {self.precision}); {shortcut}"
        )

    def chunk(self, chunk, path: str, bar, bp_range=None, **output_options) -> dict:
        """Impute the chunk's span, write its core to ``path``; ``write_output``'s summary."""
        from .imputation.chunks import slice_calls, slice_final, slice_panel

        t0 = time.perf_counter()
        lo, hi = chunk.span
        sub = slice_panel(self.panel, lo, hi)
        tc = TargetCalls.from_alignment(self.target, self.alignment, self.panel.n_sites, self.unphased, (lo, hi))
        if self.vote:
            tables = vote_tables(sub)
            hds = vote_dosages(sub, tables, tc, self.batch_size, False, bar=bar)
        else:
            tables = model_tables(sub, self.state, self.target.samples, self.panel_file, self.overlap)
            hds = infer_dosages(
                self.model,
                sub,
                tables,
                tc,
                self.dev,
                self.batch_size,
                False,
                autocast_dtype=self.amp_dtype,
                bar=bar,
                settle=self.settle,
                stats=self.stats,
            )
            # the checkpoint's calibration (calibration.py; none in older checkpoints: unchanged)
            hds = calibrate(hds, tables.freqs.af, self.state.get("calibration"), out=hds)
        fc = final_calls(hds, tc)
        self.windows += len(tables.layout)
        self.sites += chunk.core[1] - chunk.core[0]
        self.window_overlap = tables.layout.overlap
        self.infer_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        c0, c1 = chunk.core
        if (c0, c1) != (lo, hi):  # write the core only: the buffers are the neighbours' cores
            sub, fc = slice_panel(self.panel, c0, c1), slice_final(fc, c0 - lo, c1 - lo)
            tc = slice_calls(tc, c0 - lo, c1 - lo)
        written = write_output(
            path,
            sub,
            self.target,
            self.alignment,
            self.target_path,
            tc,
            fc,
            self.command,
            bp_range=bp_range,
            **output_options,
        )
        self.write_s += time.perf_counter() - t0
        return written


def _manifest(ref, target, model, populations, **options) -> dict:
    """What a chunk's output depends on: the inputs (path, size, mtime) and every option that changes it."""
    from .imputation.parts import file_fingerprint

    return {
        "ref": file_fingerprint(ref),
        "target": file_fingerprint(target),
        "model": model if model == VOTE else file_fingerprint(model),
        "populations": file_fingerprint(populations),
        "options": options,
    }


def _run_chunks(run, chunks, out_path, kind, output_options, resume, progress, ctx, manifest):
    """This rank's chunks (every ``world``-th) into the hidden chunk directory; rank 0 joins them."""
    from .imputation.parts import ChunkParts
    from .training.distributed import barrier

    parts = ChunkParts(out_path, manifest, resume, main=ctx.main)
    barrier(ctx)  # the directory is ready before any rank writes into it
    mine = chunks[ctx.rank :: ctx.world]
    todo = [c for c in mine if not parts.done(c, output_options["sites_path"] is not None)]
    n_resumed = len(mine) - len(todo)
    bar = _bar(todo, progress and ctx.main)
    totals: dict = {}
    for c in todo:
        opts = {**output_options, "output": "z"}
        if output_options["sites_path"] is not None:
            opts["sites_path"] = parts.sites_path(c)
        w = run.chunk(c, parts.path(c), bar, bp_range=c.bp, **opts)
        for key, v in w.items():
            if isinstance(v, int) and not isinstance(v, bool):
                totals[key] = totals.get(key, 0) + v
    bar.close()
    barrier(ctx)  # every rank's chunks are written
    if ctx.main:
        totals.update(parts.join(chunks, kind, output_options["sites_path"]))
    totals["path"], totals["output_type"] = out_path, kind
    for key in ("imputed_sites", "typed_sites", "passthrough_records", "below_min_r2"):
        totals.setdefault(key, 0)
    totals.setdefault("qc", {})
    totals.setdefault("qc_file", None)
    return totals, len(todo), n_resumed


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
    parser.add_argument("--batch-size", type=int, default=64, help="target samples per forward pass (64: fewer, larger passes; measured in BENCHMARKS.md)")
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
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=(
            "inference arithmetic: auto (bf16 on CUDA, and on CPUs with AMX for encode=all models; else fp32), "
            "fp32 or bf16"
        ),
    )
    parser.add_argument(
        "--region", default=None, metavar="CHR:START-END", help="impute only this range (1-based)"
    )
    parser.add_argument(
        "--chunk-mb",
        type=chunk_argument,
        default="auto",
        metavar="MB",
        help="impute in chunks of this many Mb: the dosages and calls in flight are one chunk's (default "
        "auto: one chunk while the sites x targets fit ~150M genotypes, ~2 GB; else equal chunks that do)",
    )
    parser.add_argument(
        "--buffer-mb",
        type=float,
        default=DEFAULT_BUFFER_MB,
        help=f"context read on each side of a chunk (default {DEFAULT_BUFFER_MB:g} Mb)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the chunks an interrupted run with the same inputs finished",
    )
    parser.add_argument(
        "--settle-by-vote",
        type=settle_argument,
        default=DEFAULT_SETTLE,
        metavar="C",
        help="a target haplotype whose PBWT donors vote at least C sure (0.5-1) at every site a window "
        "imputes for it takes the vote there; the model runs on the rest. off: the model everywhere "
        f"(default {'off' if DEFAULT_SETTLE is None else DEFAULT_SETTLE})",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    # --resume is how the run was carried out, not what it computed: a resumed output records the
    # same command as an uninterrupted one
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    command = "vcfbert-fast " + " ".join(shlex.quote(a) for a in argv) if sys.argv else None
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
        region=args.region,
        chunk_mb=args.chunk_mb,
        buffer_mb=args.buffer_mb,
        resume=args.resume,
        precision=args.precision,
        settle=args.settle_by_vote,
    )
    return 0


__all__ = ["impute", "load_model", "prephase_with_beagle", "unphased_hets"]  # the last three: re-exported
