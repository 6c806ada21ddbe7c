"""Where `impute`'s inference time goes: seconds per stage over the first windows of a real run.

    python benchmarks/profile_impute.py --ref REF --target PHASED_TARGET --model best.pt
        [--populations panel.txt] [--windows 12] [--batch-size 64] [--precision fp32|bf16]
        [--threads 1] [--torch-profile] [--settle C]

Stages, timed around the calls `imputation.infer_dosages` makes: the query tokens of a window x
batch (`_window_batch`), the donors (`site_donors` + `donor_inputs`), the forward, and softmax +
copy into the dosage array; the PBWT index and donor search are timed once. The whole chromosome
is extrapolated from the windows run. `--torch-profile` adds the torch profiler's op table of
one forward. ``--settle C`` times whole windows of ``impute --settle-by-vote C`` instead (the
vote's shortcut mixes the stages: donors of every haplotype, the forward of the unsettled ones).
Not a test: a measurement (BENCHMARKS.md "Imputation speed (CPU)").
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True)
    p.add_argument("--target", required=True, help="a phased target (e.g. impute's OUT.prephased.vcf.gz)")
    p.add_argument("--model", required=True)
    p.add_argument("--populations", default=None)
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64, help="target samples per forward (impute's default)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torch-profile", action="store_true")
    p.add_argument("--settle", type=float, default=None, help="time impute --settle-by-vote C's windows")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from vcfbert_fast.imputation import TargetCalls, load_model, model_tables, unphased_hets
    from vcfbert_fast.imputation import inference as inf
    from vcfbert_fast.io import align_target, read_panel, read_target

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    panel = read_panel(args.ref, progress=False)
    model, state = load_model(args.model, panel, cpu)
    target = read_target(args.target, progress=False)
    tc = TargetCalls.from_alignment(
        target, align_target(target, panel), panel.n_sites, unphased_hets(target.alleles, target.phased)
    )
    tables = model_tables(panel, state, target.samples, args.populations, None)
    n_win = min(args.windows, len(tables.layout))
    t = time.perf_counter()
    donors = inf._Donors(panel, tables, tc)
    pbwt_s = time.perf_counter() - t
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    stages = dict.fromkeys(("query tokens", "donors", "forward", "softmax + copy"), 0.0)
    hds = np.zeros((panel.n_sites, tc.n_samples, 2), np.float32)
    sites = 0
    if args.settle is not None:
        t, n_model = time.perf_counter(), 0
        with torch.no_grad(), amp:
            for w in range(n_win):
                sl = tables.layout.sites(w)
                keep = np.flatnonzero(tables.central[sl] == w)
                sites += keep.size
                n_model += inf._settled_window(
                    model, panel, tables, tc, donors, w, keep, hds, cpu, args.batch_size, None, args.settle
                )
        total = time.perf_counter() - t
        print(
            f"{args.precision}, batch {args.batch_size}, {args.threads} thread(s), settle {args.settle:g}, {n_win} of "
            f"{len(tables.layout)} windows ({sites} sites): {total:.2f} s, the model on {n_model} of "
            f"{2 * tc.n_samples * n_win} haplotype-windows; PBWT (once) {pbwt_s:.2f} s; {sites / total:.0f} sites/s; "
            f"whole chromosome ~{total * len(tables.layout) / n_win:.0f} s"
        )
        return 0
    full = None  # the torch profile's batch: the last one of full size
    with torch.no_grad():
        for w in range(n_win):
            sl = tables.layout.sites(w)
            keep = np.flatnonzero(tables.central[sl] == w)
            sites += keep.size
            for b0 in range(0, tc.n_samples, args.batch_size):
                b1 = min(tc.n_samples, b0 + args.batch_size)
                t = time.perf_counter()
                batch = inf._window_batch(panel, tables, tc, w, b0, b1, cpu)
                t1 = time.perf_counter()
                donors.add_to(batch, w, b0, b1, model.bert.embedding)
                full = full if b1 - b0 < args.batch_size and full is not None else batch  # a whole batch
                t2 = time.perf_counter()
                with amp:
                    out = model.forward_logits(batch, hidden=False)
                t3 = time.perf_counter()
                for j, key in enumerate(("hap1_logits", "hap2_logits")):
                    prob = torch.softmax(out[key].float(), -1)[:, 1:-1, 1].numpy()
                    hds[sl.start + keep, b0:b1, j] = prob[:, keep].T
                t4 = time.perf_counter()
                for name, dt in zip(stages, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
                    stages[name] += dt
    total = sum(stages.values())
    print(
        f"{args.precision}, batch {args.batch_size}, {args.threads} thread(s), {n_win} of {len(tables.layout)} windows "
        f"({sites} sites): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
        + f"; PBWT (once) {pbwt_s:.2f} s; {sites / total:.0f} sites/s; whole chromosome ~{total * len(tables.layout) / n_win:.0f} s"
    )
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), amp, profile(activities=[ProfilerActivity.CPU]) as prof:
            model.forward_logits(full, hidden=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
