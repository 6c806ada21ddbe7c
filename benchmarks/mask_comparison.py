"""Which training mask best serves imputation? Same data, same steps, different ``--mask-rate/--mask-mode``.

    python benchmarks/mask_comparison.py [--out /tmp/maskcmp] [--n-ref 1000] [--n-target 50]
        [--length 1000000] [--seed 2] [--steps 120] [--threads 2] [--configs curriculum random:0.93 array:0.93]

Simulates once (msprime OOA, 1 in 15 sites on the array), then per config trains for exactly
``--steps`` optimizer steps (no time budget: every config gets the same work), imputes the
*phased* targets (isolates the model from pre-phasing) and scores aggregate r^2 per panel-MAF bin
against the truth. Validation of every config uses the same array-like 0.93 mask (the regime
imputation faces), so the validation accuracies are comparable too. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/maskcmp")
    p.add_argument("--n-ref", type=int, default=1000)
    p.add_argument("--n-target", type=int, default=50)
    p.add_argument("--length", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["curriculum", "random:0.93", "array:0.93"])
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from vcfbert_fast.evaluate import evaluate
    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel
    from vcfbert_fast.simulate import simulate
    from vcfbert_fast.train import TrainConfig, Trainer

    out = Path(args.out)
    sim = simulate(out / "sim", args.n_ref, args.n_target, args.length, seed=args.seed, progress=False)
    density = sim.n_array_sites / sim.n_sites
    print(f"{sim.n_sites} sites, {sim.n_array_sites} on the array (density {density:.4f})", file=sys.stderr)
    panel = read_panel(sim.ref_vcf, sim.panel_txt, progress=False)
    rows = []
    for spec in args.configs:
        mode, _, rate = spec.partition(":")
        kw = {} if mode == "curriculum" else {"mask_rate": float(rate), "mask_mode": mode}
        cfg = TrainConfig(
            engine="hamming",  # the per-window masks this script compares (pbwt trains on chromosome masks)
            max_steps=args.steps,
            time_budget_min=None,
            epochs=10_000,
            threads=args.threads,
            val_mask_rate=0.93,
            val_mask_mode="array",
            val_every_steps=0,
            val_max_batches=16,
            early_stop_patience=0,
            checkpoint_every_steps=10_000,
            progress=False,
            **kw,
        )
        run_dir = out / spec.replace(":", "_")
        t = time.perf_counter()
        tr = Trainer(cfg, panel, None, run_dir)
        try:
            summary = tr.train()
        finally:
            tr.close()
        train_s = time.perf_counter() - t
        imputed = run_dir / "imputed.vcf.gz"
        t = time.perf_counter()
        impute(
            str(sim.ref_vcf),
            str(sim.target_vcf),
            str(run_dir / "last.pt"),
            str(imputed),
            panel_file=str(sim.panel_txt),
            device="cpu",
            progress=False,
        )
        impute_s = time.perf_counter() - t
        res = evaluate(
            str(sim.truth_vcf),
            [str(imputed)],
            ref_path=str(sim.ref_vcf),
            out_prefix=str(run_dir / "eval"),
            target_path=str(sim.target_vcf),
            labels=[spec],
        )
        e = res["files"][spec]
        v = summary.get("validation") or {}
        rows.append(
            (
                spec,
                {b: e["bins"][b]["aggregate_r2"] for b in res["maf_bins"]},
                e["all_binned"]["concordance"],
                v.get("accuracy"),
                train_s,
                impute_s,
            )
        )
        print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
    bins = list(rows[0][1])
    print(
        f"\n{args.steps} steps each; {sim.n_sites} sites, {args.n_ref} panel + {args.n_target} targets, "
        f"{args.length / 1e6:g} Mb, seed {args.seed}\n"
    )
    print(
        "| training mask | "
        + " | ".join(bins)
        + " | concordance | val acc (array 0.93) | train s | impute s |"
    )
    print("|---|" + "---|" * (len(bins) + 4))
    for spec, r2, conc, acc, ts, its in rows:
        cells = " | ".join("-" if r2[b] is None else f"{r2[b]:.3f}" for b in bins)
        print(
            f"| {spec} | {cells} | {conc:.4f} | {acc if acc is None else f'{acc:.4f}'} | {ts:.0f} | {its:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
