"""The ``vcfbert-fast train`` subcommand: flags -> :class:`~vcfbert_fast.training.TrainConfig`
-> :class:`~vcfbert_fast.training.Trainer` (docs/TRAINING.md).

Every flag maps to one ``TrainConfig`` field and defaults to ``None`` ("not given"), so
``--resume`` keeps the saved run's options and only the flags given override them. The
trainer itself lives in :mod:`vcfbert_fast.training`; ``Trainer``, ``TrainConfig``,
``lr_factor`` and ``mask_schedules`` are re-exported here for ``from vcfbert_fast.train import``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from .checkpoint import read_checkpoint
from .cli import add_populations_argument
from .devices import resolve_device
from .errors import CheckpointError, InputError
from .training import TrainConfig, Trainer, lr_factor, mask_schedules

__all__ = [
    "TrainConfig",
    "Trainer",
    "add_arguments",
    "check_run_dir",
    "config_from_args",
    "lr_factor",
    "mask_schedules",
    "run",
]

_ARGS: list[tuple[str, str, type | None, str]] = [
    # flag, TrainConfig field, type (None = store_true), help
    ("--epochs", "epochs", int, "stop after this many epochs"),
    ("--max-steps", "max_steps", int, "stop after this many optimizer steps"),
    (
        "--time-budget",
        "time_budget_min",
        float,
        "stop cleanly after MINUTES of training (validate, save); 0: no limit",
    ),
    ("--batch-size", "batch_size", int, "samples per batch (per process)"),
    ("--dims", "dims", int, "model width D"),
    ("--layers", "layers", int, "transformer layers"),
    ("--heads", "heads", int, "attention heads"),
    ("--dropout", "dropout", float, "dropout"),
    ("--prior-hidden", "prior_hidden", int, "hidden width of the donor prior MLP (scores every donor x site)"),
    ("--prior", "prior", str, "shared (one donor prior MLP for donor attention and the copy head) or separate"),
    (
        "--encode",
        "encode",
        str,
        "tokens the encoder attends over: informative (typed sites and where the donors disagree) or all",
    ),
    ("--k", "k", int, "references (donors) per haplotype; 0: no retrieval (unset: 32 for pbwt, 4 otherwise)"),
    (
        "--engine",
        "engine",
        str,
        ("retrieval: pbwt (per-site donors matching longest over the chromosome's typed markers), "
        "hamming (exact, per window) or faiss (the seed's index)"),
    ),
    ("--pbwt-group", "pbwt_group", int, "pbwt: typed markers per donor selection point"),
    ("--reference", "reference", str, "reference embeddings: live (grads flow) or store (frozen bf16)"),
    ("--refresh-every", "refresh_every", int, "epochs between retriever refreshes"),
    ("--max-sites", "max_sites", int, "sites per window"),
    ("--overlap", "overlap", int, "sites shared by neighbouring windows"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "warmup_steps", int, "linear warmup steps"),
    ("--schedule", "schedule", str, "LR decay after warmup: cosine or linear"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step"),
    ("--clip", "clip", float, "gradient-norm clip (0: off)"),
    ("--focal-gamma", "focal_gamma", float, "focal loss gamma (0: cross-entropy)"),
    (
        "--mask-rate",
        "mask_rate",
        float,
        ("fixed training mask rate, no curriculum (e.g. 0.93 = 1 - array density 1/15; unset: 1 - 1/15 for "
        "pbwt, else the DESIGN curriculum)"),
    ),
    (
        "--mask-mode",
        "mask_mode",
        str,
        ("with --mask-rate: random (rare sites max(0.7, rate)), array (per window) or chromosome (array-like "
        "over the whole chromosome, per epoch; pbwt's mode)"),
    ),
    ("--val-mask-rate", "val_mask_rate", float, "validation mask rate (unset: --mask-rate, else 0.5)"),
    ("--val-mask-mode", "val_mask_mode", str, "validation mask mode (unset: --mask-mode, else random)"),
    ("--val-fraction", "val_fraction", float, "fraction of samples held out for validation"),
    ("--val-every", "val_every_steps", int, "also validate every N steps (0: once per epoch)"),
    ("--val-max-batches", "val_max_batches", int, "cap validation batches (a fixed random subset; 0: all)"),
    ("--early-stop-patience", "early_stop_patience", int, "validations without improvement before stopping"),
    ("--early-stop-metric", "early_stop_metric", str, "accuracy, r2 (mean masked-site dosage r^2 over MAF bins) or loss"),
    ("--checkpoint-every", "checkpoint_every_steps", int, "write last.pt every N steps"),
    ("--log-every", "log_every", int, "read and log the loss every N steps"),
    ("--seed", "seed", int, "seed of split, masks, sampler and initialisation"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes"),
    ("--device", "device", str, "auto, cpu, cuda or cuda:N"),
    ("--threads", "threads", int, "CPU threads for torch (1 is fastest on a busy machine)"),
    ("--amp", "amp", str, "auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32"),
    ("--compile", "compile", None, "torch.compile the model"),
    ("--no-progress", "progress", None, "no progress bar (off a terminal it prints plain lines every 30 s)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` flags; each defaults to None so that :func:`config_from_args` knows what was given."""
    d = TrainConfig()
    parser.add_argument("--ref", required=True, help="phased reference panel (VCF/BCF, bgzipped or plain)")
    add_populations_argument(parser, "sample -> population table (without: population AF = global AF)")
    parser.add_argument("--out", required=True, help="run directory: last.pt, best.pt, metrics.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (mid-epoch)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the run already in OUT (its best.pt, last.pt, metrics.jsonl)",
    )
    for flag, name, typ, help_text in _ARGS:
        if typ is None:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=name, type=typ, default=None, help=f"{help_text} (default {getattr(d, name)})"
            )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from ``base`` (defaults, or a resumed run's) overridden by the flags given."""
    # Unresolved defaults (k, mask rate and mode follow the engine), so `--engine hamming` gets hamming's.
    d = base.to_dict() if base is not None else {f.name: f.default for f in fields(TrainConfig)}
    for _, name, typ, _ in _ARGS:
        v = getattr(args, name, None)
        if v is None:
            continue
        d[name] = (name != "progress") if typ is None else v
    return TrainConfig.from_dict(d)


RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")


def check_run_dir(out: str, resume: bool, force: bool) -> list[Path]:
    """Refuse to train into ``out`` when that would replace a run nobody asked to replace.

    A directory holding ``best.pt``/``last.pt``/``metrics.jsonl`` needs ``--resume`` (continue it)
    or ``--force`` (replace it). Returns the old run's files that ``--force`` replaces: the caller
    removes them just before training, so no old ``best.pt`` survives beside the new run. Only the
    main process (``RANK`` 0) looks, so torchrun ranks do not race.
    """
    if os.environ.get("RANK", "0") != "0":
        return []
    fix = "pass --resume to continue it, --force to replace it, or choose a new --out directory"
    if resume and force:
        raise InputError(out, "--resume and --force contradict each other", "pass one of them")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(out, "--out is a file; train writes a run directory", "choose a new --out directory")
    found = [path / name for name in RUN_FILES if (path / name).exists()]
    if not found or resume:
        return []
    if not force:
        raise InputError(out, f"--out already holds a training run ({', '.join(p.name for p in found)})", fix)
    return found


def run(args: argparse.Namespace) -> int:
    """Read the panel, train (or resume) into ``args.out``, print a one-line summary on stderr."""
    from .io import read_panel

    replaced = check_run_dir(args.out, args.resume, getattr(args, "force", False))
    base = None
    if args.resume:
        last = Path(args.out) / "last.pt"
        if not last.exists():
            raise CheckpointError(str(last), "nothing to resume", "train without --resume first")
        base = TrainConfig.from_dict(read_checkpoint(last).get("train_config", {}))
    cfg = config_from_args(args, base)
    # a bad --device is refused before the panel is read (LOCAL_RANK: no CUDA context on GPU 0 per rank)
    local_rank = os.environ.get("LOCAL_RANK")
    resolve_device(cfg.device, int(local_rank) if local_rank is not None else None)
    panel = read_panel(args.ref, args.populations, progress=cfg.progress)
    for old in replaced:  # --force: the old run goes only once the new one is ready to start
        old.unlink(missing_ok=True)
    if replaced:
        print(
            f"vcfbert-fast train: --force: removed the old {', '.join(p.name for p in replaced)}",
            file=sys.stderr,
        )
    trainer = Trainer(cfg, panel, None, args.out, resume=args.resume)
    try:
        if trainer.dist.main:
            print(
                f"vcfbert-fast train: {panel.n_samples} samples ({trainer.train_samples.size} train, "
                f"{trainer.val_samples.size} validation), {panel.n_sites} sites in {len(trainer.layout)} "
                f"windows; {trainer.steps_per_epoch} steps/epoch on {trainer.device}"
                f"{f' x {trainer.dist.world} ranks' if trainer.dist.enabled else ''}",
                file=sys.stderr,
            )
        summary = trainer.train()
    finally:
        trainer.close()
    if trainer.dist.main:
        v = summary["validation"] or {}
        msg = f"stopped ({summary['stop_reason']}) at step {summary['step']}, epoch {summary['epoch']}"
        if v:
            msg += (
                f"; validation masked-site accuracy {v.get('accuracy')}, AF-only baseline "
                f"{v.get('af_baseline_accuracy')}"
            )
        print(f"vcfbert-fast train: {msg}; checkpoints in {args.out}", file=sys.stderr)
    return 0
