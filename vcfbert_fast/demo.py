"""``vcfbert-fast demo``: simulate a panel, train with a CPU-sized budget, impute, evaluate, print the table.

Everything lands in ``--out`` (default ``vcfbert_demo/``): ``sim/`` (ref/truth/target VCFs, the
unphased target and the population table), ``run/`` (checkpoints, metrics.jsonl),
``imputed.vcf.gz`` (+ .tbi), ``beagle.vcf.gz`` (when Beagle is installed), ``eval.{json,md,png}``
and ``report.md``. The default sizes (400 panel samples, 50 targets, 1 Mb, 3 minutes of
training) take a few minutes on 2 CPU cores.

So that its accuracy does not flatter, the target is unphased, as array data arrives
(``sim/target.unphased.vcf.gz``), and ``impute --prephase beagle`` phases it when Java and
Beagle 5.4 are present (``/usr/share/beagle/beagle.jar`` or ``$BEAGLE_JAR``); Beagle 5.4 then
also imputes the same unphased target (``gp=true``) and is scored beside it. Without them the
demo imputes the simulation's phased copy (true phase, no phasing error) and says so on stdout
and in ``report.md``. ``report.md`` carries the table, the plot, the sites of each tool's output
(imputed, typed, imputed with DR2 >= 0.3 / 0.8) and evaluate's DR2 calibration plot if it drew one.

Training is matched to what imputation faces: the simulated array types 1 in 15 sites, so the
model trains (and validates) with a fixed mask of ``1 - density`` (~0.93) of the sites, drawn
array-like over the whole chromosome each epoch (kept sites favour common variants;
``masking.MaskSchedule.chromosome_mask``), not DESIGN's 30%-80% curriculum, which a few CPU
minutes would spend entirely at 30%. The model is ``train``'s CPU default (256-site windows,
PBWT donors K 32, donor attention and copy head; dims 32 / 2 layers since the scale issue, dims
64 / 4 layers in the table below, which was measured before it).

Measured on the shared 2-core box (load average ~3, `--threads 1`, 2026-11-27), default sizes,
3 minutes, with the target given phased (true phase: the demo before it pre-phased an unphased
target; not yet remeasured with Beagle's phasing): ~3.5 min end to end (default model: train 187 s, impute 20 s, evaluate 2 s). Aggregate r^2 by panel MAF bin (AF-only floor in brackets):

| model | steps | 0.1-0.5% | 0.5-1% | 1-5% | 5-20% | 20-50% | concordance |
|---|---|---|---|---|---|---|---|
| dims 64, 4 layers, 256 sites (then the default) | 157 | 0.013 | 0.099 | 0.355 | 0.784 (0.028) | 0.850 (0.061) | 0.9817 |
| dims 64, 2 layers, 128 sites | 354 | 0.004 | 0.025 | 0.168 | 0.527 (0.028) | 0.718 (0.061) | 0.9702 |

Longer windows hold more typed markers (1 in 15 sites), which matters more than extra steps.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

# Model overrides on top of train's CPU default (none: the default measured best, see above).
DEMO_MODEL: dict = {}
DEMO_MASK_MODE = "chromosome"  # the pbwt engine: typed markers drawn over the whole chromosome
BEAGLE_LABEL = "Beagle 5.4"


def write_unphased(src: str | Path, dst: str | Path) -> str:
    """Copy a VCF with every genotype unphased ('|' -> '/' in the sample columns), as BGZF."""
    from .io.bgzf import BgzfWriter

    with gzip.open(src, "rt") as fin, BgzfWriter(str(dst)) as out:
        for line in fin:
            if not line.startswith("#"):
                cols = line.rstrip("\n").split("\t")
                line = "\t".join(cols[:9] + [g.replace("|", "/") for g in cols[9:]]) + "\n"
            out.write(line.encode())
    return str(dst)


def site_counts(path: str | Path) -> dict[str, int]:
    """Records of an imputed VCF: imputed (INFO IMP) and typed, and imputed ones with DR2 >= 0.3 / 0.8."""
    import cyvcf2

    counts = {"records": 0, "imputed": 0, "typed": 0, "imputed_dr2_ge_0.3": 0, "imputed_dr2_ge_0.8": 0}
    vcf = cyvcf2.VCF(str(path), samples=[])
    for v in vcf:
        counts["records"] += 1
        if v.INFO.get("IMP") is None:
            counts["typed"] += 1
            continue
        counts["imputed"] += 1
        dr2 = v.INFO.get("DR2")
        dr2 = float(dr2[0] if isinstance(dr2, tuple) else dr2) if dr2 is not None else 0.0
        counts["imputed_dr2_ge_0.3"] += dr2 >= 0.3
        counts["imputed_dr2_ge_0.8"] += dr2 >= 0.8
    vcf.close()
    return counts


def write_report(path: Path, note: str, result: dict, counts: dict[str, dict], files: dict[str, str]) -> str:
    """``report.md``: how the target was phased, the r^2 table and plot, sites per tool, DR2 calibration."""
    from .evaluate import markdown_table

    def link(p: str) -> str:
        return os.path.relpath(p, path.parent)

    lines = ["# vcfbert-fast demo", "", f"Target: {note}", "", "## Dosage r^2 by panel MAF bin (masked sites)", ""]
    png = result.get("reports", {}).get("png")
    lines += ([f"![r2 by MAF]({link(png)})", ""] if png else []) + [markdown_table(result)]
    lines += [
        "## Sites per tool",
        "",
        "| tool | records | imputed | typed | imputed DR2 >= 0.3 | imputed DR2 >= 0.8 | masked sites missing |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, c in counts.items():
        missing = result["files"][label]["missing_masked_sites"]
        lines.append(
            f"| {label} | {c['records']} | {c['imputed']} | {c['typed']} | {c['imputed_dr2_ge_0.3']} | "
            f"{c['imputed_dr2_ge_0.8']} | {missing} |"
        )
    lines += ["", f"{result['masked_sites']} masked sites: the truth sites the target does not type.", ""]
    if result.get("calibration_png"):
        calib = link(result["calibration_png"])
        lines += ["## DR2 calibration (estimated against true r^2 by DR2 bin)", "", f"![DR2 calibration]({calib})", ""]
    lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in files.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def demo(
    out: str | Path = "vcfbert_demo",
    minutes: float = 3.0,
    n_ref: int = 400,
    n_target: int = 50,
    length_bp: int = 1_000_000,
    seed: int = 1,
    max_steps: int | None = None,
    device: str = "auto",
    progress: bool = True,
    train_overrides: dict | None = None,
    threads: int | None = None,
) -> dict:
    """Run the whole pipeline; returns paths, timings and the evaluation result.

    ``train_overrides`` update the ``TrainConfig`` (after ``DEMO_MODEL`` and the imputation-matched
    mask ``mask_rate = 1 - array density``, ``mask_mode = DEMO_MASK_MODE``).
    """
    from .evaluate import evaluate, markdown_table
    from .impute import impute
    from .io import read_panel
    from .simulate import simulate
    from .training import TrainConfig, Trainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    def say(msg: str) -> None:
        print(f"[demo] {msg}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    say(
        f"1/4 simulating {n_ref} panel + {n_target} target samples over {length_bp / 1e6:g} Mb (msprime, OOA)"
    )
    sim = simulate(
        out / "sim",
        n_ref_samples=n_ref,
        n_target_samples=n_target,
        length_bp=length_bp,
        seed=seed,
        progress=progress,
    )
    times["simulate_s"] = time.perf_counter() - t
    say(f"    {sim.n_sites} sites, {sim.n_array_sites} on the array ({times['simulate_s']:.1f} s)")

    t = time.perf_counter()
    budget = f"{max_steps} steps" if max_steps else f"{minutes:g} min"
    mask_rate = round(1.0 - sim.n_array_sites / max(sim.n_sites, 1), 4)
    say(
        f"2/4 training a CPU-sized V18 model ({budget}; masks: {DEMO_MASK_MODE}, {mask_rate:g} of sites, "
        "as imputation of the array will see)"
    )
    panel = read_panel(sim.ref_vcf, sim.panel_txt, progress=progress)
    cfg_kw = {
        **DEMO_MODEL,
        "mask_rate": mask_rate,
        "mask_mode": DEMO_MASK_MODE,
        "time_budget_min": None if max_steps else minutes,
        "max_steps": max_steps,
        "epochs": 10_000,
        "device": device,
        "progress": progress,
        "threads": threads,
        "val_every_steps": 100,
        "val_max_batches": 16,
    }
    cfg_kw.update(train_overrides or {})
    cfg = TrainConfig(**cfg_kw)
    run_dir = out / "run"
    trainer = Trainer(cfg, panel, None, run_dir)
    try:
        train_summary = trainer.train()
    finally:
        trainer.close()
    times["train_s"] = time.perf_counter() - t
    model_path = run_dir / "best.pt"
    if not model_path.exists():
        model_path = run_dir / "last.pt"
    say(
        f"    stopped ({train_summary['stop_reason']}) after {train_summary['step']} steps; model {model_path}"
    )

    from .imputation.prephase import find_beagle, run_beagle

    t = time.perf_counter()
    unphased = write_unphased(sim.target_vcf, out / "sim" / "target.unphased.vcf.gz")
    _java, jar, missing = find_beagle()
    if missing is None:
        note = (
            f"unphased ({unphased}, as array data arrives), pre-phased with Beagle 5.4 ({jar}) by "
            "`impute --prephase beagle`"
        )
        target, prephase = unphased, "beagle"
    else:
        note = (
            f"the PHASED copy ({sim.target_vcf}: the simulation's true phase), because {missing} was not "
            "found: no Beagle pre-phase and no Beagle run, so this accuracy hides phasing error "
            "(install Java and Beagle 5.4, or set BEAGLE_JAR)"
        )
        target, prephase = str(sim.target_vcf), None
    say(f"3/4 imputing the targets; target: {note}")
    imputed = out / "imputed.vcf.gz"
    imp = impute(
        str(sim.ref_vcf),
        target,
        str(model_path),
        str(imputed),
        panel_file=str(sim.panel_txt),
        device=device,
        prephase=prephase,
        progress=progress,
        threads=threads,
        command=f"vcfbert-fast demo --out {out}",
    )
    times["impute_s"] = time.perf_counter() - t
    outputs = {"vcfbert-fast": str(imputed)}
    if missing is None:
        t = time.perf_counter()
        say("    Beagle 5.4 phases and imputes the same unphased target")
        outputs[BEAGLE_LABEL] = run_beagle(str(sim.ref_vcf), unphased, str(out / "beagle"), ["gp=true"], nthreads=threads)
        times["beagle_s"] = time.perf_counter() - t

    t = time.perf_counter()
    say("4/4 evaluating against the truth (r^2 by panel MAF bin)")
    result = evaluate(
        str(sim.truth_vcf),
        list(outputs.values()),
        ref_path=str(sim.ref_vcf),
        out_prefix=str(out / "eval"),
        target_path=unphased,
        labels=list(outputs),
    )
    times["evaluate_s"] = time.perf_counter() - t
    counts = {label: site_counts(p) for label, p in outputs.items()}
    files = {"truth": str(sim.truth_vcf), "target given to impute": target, **outputs, "model": str(model_path)}
    files.update({f"eval {k}": v for k, v in result.get("reports", {}).items()})
    report = write_report(out / "report.md", note, result, counts, files)
    print(f"target: {note}\n")
    print(markdown_table(result), end="")
    print(
        "\n" + "\n".join(f"{k}: {v}" for k, v in files.items()) + f"\nreport: {report}\n"
        "timings: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in times.items())
    )
    return {
        "out": str(out),
        "model": str(model_path),
        "imputed": str(imputed),
        "beagle": outputs.get(BEAGLE_LABEL),
        "target": target,
        "target_note": note,
        "prephased": prephase is not None,
        "site_counts": counts,
        "report": report,
        "train": train_summary,
        "impute": imp,
        "evaluation": result,
        "times": {k: round(v, 2) for k, v in times.items()},
    }


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="vcfbert_demo", help="output directory (default vcfbert_demo)")
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="training time budget in minutes (default 3)"
    )
    parser.add_argument("--n-ref", type=int, default=400, help="panel samples to simulate (default 400)")
    parser.add_argument("--n-target", type=int, default=50, help="target samples to simulate (default 50)")
    parser.add_argument("--length", type=int, default=1_000_000, help="simulated bp (default 1 Mb)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="train this many steps instead of --minutes"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for training, impute and Beagle (default: the CPUs this process may use; 1 is faster "
        "on a busy machine)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    demo(
        args.out,
        minutes=args.minutes,
        n_ref=args.n_ref,
        n_target=args.n_target,
        length_bp=args.length,
        seed=args.seed,
        max_steps=args.max_steps,
        device=args.device,
        progress=not args.no_progress,
        threads=args.threads,
    )
    return 0
