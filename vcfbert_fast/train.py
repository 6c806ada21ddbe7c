"""Training loop and the ``vcfbert-fast train`` subcommand.

One optimizer step: window-grouped batch -> top-K retrieval for ``hap_1`` and ``hap_2``
(leave-one-out: a training query never retrieves its own two haplotypes) -> reference
embeddings ``rag_emb_h1/h2`` -> ``forward_logits`` -> focal ``imputation_loss`` on masked
sites -> backward (gradient accumulation) -> clip -> AdamW -> warmup + cosine/linear LR.

Train/validation split is by *sample*; allele frequencies (the model's per-site features)
come from the training samples only, so held-out samples never leak into them. Validation
queries retrieve from training haplotypes. Checkpoints (``last.pt``, ``best.pt``) hold the
full state, so ``--resume`` continues mid-epoch: the sampler is a pure function of
(seed, epoch), so the batches already seen are skipped deterministically.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the step runs under DistributedDataParallel
with a sharded window-grouped sampler; rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    capture_rng_state,
    load_checkpoint,
    model_state_dict,
    panel_fingerprint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .devices import resolve_device
from .errors import CheckpointError, InputError
from .metrics import ImputationMetrics

__all__ = ["TrainConfig", "Trainer", "add_arguments", "lr_factor", "mask_schedules", "run"]


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults: a CPU-sized model that learns the simulator's
    1000-sample panel in ~15 min on 2 cores (docs/TRAINING.md says how they were chosen)."""

    # model
    dims: int = 64
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0  # >0 sends CPU attention to the slow math SDPA kernel (3.5x per step)
    # data
    max_sites: int = 256  # sites per window (DESIGN's 1028 is the GPU setting)
    overlap: int = 0
    batch_size: int = 32
    val_fraction: float = 0.1
    # masking (docs/TRAINING.md "Masking"): mask_rate None = DESIGN curriculum; set = a fixed rate
    # placed per mask_mode ("random": common sites at the rate, rare at max(0.7, rate); "array":
    # keep 1 - rate of the sites, favouring common ones, like a genotyping array)
    mask_rate: float | None = None
    mask_mode: str = "random"
    val_mask_rate: float | None = None  # None: mask_rate if set, else 0.5 (rare sites 0.7)
    val_mask_mode: str | None = None  # None: mask_mode if mask_rate is set, else "random"
    num_workers: int = 0
    # retrieval
    k: int = 4  # references per haplotype; 0 turns retrieval off (plain BERT)
    engine: str = "hamming"  # "hamming" (exact) or "faiss" (the seed's index)
    reference: str = "live"  # "live": encode retrieved rows each step (grads flow); "store": frozen bf16
    refresh_every: int = 1  # epochs between retriever refreshes (also at start)
    # optimisation
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" or "linear" decay after warmup
    min_lr_ratio: float = 0.05
    grad_accum: int = 1
    clip: float = 1.0
    # stopping
    epochs: int = 8
    max_steps: int | None = None
    time_budget_min: float | None = 15.0  # None or <= 0: no time limit
    early_stop_patience: int = 4  # validations without improvement; 0 = never stop early
    early_stop_metric: str = "accuracy"  # "accuracy" (higher better) or "loss" (lower better)
    # bookkeeping
    val_every_steps: int = 500  # also validate every N steps (long epochs); 0 = once per epoch only
    val_max_batches: int | None = 64  # a fixed random subset of validation batches; None: all
    checkpoint_every_steps: int = 200
    log_every: int = 20  # read the loss (one host sync) every N steps
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch intra-op CPU threads (None: torch default)
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or "bf16" / "fp32"
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            self.time_budget_min = None
        if self.val_max_batches is not None and self.val_max_batches <= 0:
            self.val_max_batches = None
        bad = []
        if self.engine not in ("hamming", "faiss"):
            bad.append(f"engine={self.engine!r} (use hamming or faiss)")
        if self.reference not in ("live", "store"):
            bad.append(f"reference={self.reference!r} (use live or store)")
        if self.schedule not in ("cosine", "linear"):
            bad.append(f"schedule={self.schedule!r} (use cosine or linear)")
        if self.amp not in ("auto", "bf16", "fp32"):
            bad.append(f"amp={self.amp!r} (use auto, bf16 or fp32)")
        if self.early_stop_metric not in ("accuracy", "loss"):
            bad.append(f"early_stop_metric={self.early_stop_metric!r} (use accuracy or loss)")
        for name in ("batch_size", "grad_accum", "log_every", "refresh_every", "max_sites", "epochs"):
            if getattr(self, name) < 1:
                bad.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if self.k < 0:
            bad.append(f"k={self.k} (must be >= 0)")
        for name in ("mask_rate", "val_mask_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v < 1.0:
                bad.append(f"{name}={v} (must be in (0, 1), e.g. 0.93 for an array typing 1 in 15 sites)")
        for name in ("mask_mode", "val_mask_mode"):
            v = getattr(self, name)
            if v is not None and v not in ("random", "array"):
                bad.append(f"{name}={v!r} (use random or array)")
        if not 0.0 <= self.val_fraction < 1.0:
            bad.append(f"val_fraction={self.val_fraction} (must be in [0, 1))")
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"max_steps={self.max_steps} (must be >= 1)")
        if bad:
            raise InputError(
                None, "bad training option: " + ", ".join(bad), "see `vcfbert-fast train --help`"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Options that shape the model, the data split or the windows: a resumed run must keep them.
_FROZEN_ON_RESUME = ("dims", "layers", "heads", "max_sites", "overlap", "val_fraction", "seed", "k")


def mask_schedules(cfg: TrainConfig):
    """(training, validation) ``MaskSchedule`` of ``cfg`` (docs/TRAINING.md "Masking").

    Training: the DESIGN curriculum, or ``cfg.mask_rate`` fixed, placed per ``cfg.mask_mode``.
    Validation (its own seed, a fixed rate so scores are comparable across epochs): ``val_mask_rate``
    / ``val_mask_mode`` when given, else the training rate and mode, else 0.5 random (the
    curriculum's midpoint; rare sites 0.7).
    """
    from .masking import MaskSchedule

    train = (
        MaskSchedule(seed=cfg.seed)
        if cfg.mask_rate is None
        else MaskSchedule.fixed(cfg.mask_rate, cfg.mask_mode, seed=cfg.seed)
    )
    fixed = cfg.mask_rate is not None
    v_rate = cfg.val_mask_rate if cfg.val_mask_rate is not None else (cfg.mask_rate if fixed else 0.5)
    v_mode = cfg.val_mask_mode or (cfg.mask_mode if fixed else "random")
    return train, MaskSchedule.fixed(v_rate, v_mode, seed=cfg.seed + 1_000_003)


def lr_factor(progress: float, step: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup_steps``, then cosine/linear decay to ``min_ratio``.

    ``progress`` in [0, 1] is the fraction of the run done (steps, or the time budget).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(max(progress, 0.0), 1.0)
    decay = 0.5 * (1.0 + math.cos(math.pi * p)) if schedule == "cosine" else 1.0 - p
    return min_ratio + (1.0 - min_ratio) * decay


# ----------------------------------------------------------------------------- distributed helpers


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> _Dist:
    """Join the torchrun process group when RANK/WORLD_SIZE say so (nccl on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(rank, world, local, True)


class _SkipBatches(torch.utils.data.Sampler):
    """A batch sampler without its first ``skip`` batches (resume mid-epoch)."""

    def __init__(self, sampler, skip: int, limit: int | None = None):
        self.sampler, self.skip, self.limit = sampler, int(skip), limit

    def __len__(self) -> int:
        n = len(self.sampler)
        if self.limit is not None:
            n = min(n, self.limit)
        return max(0, n - self.skip)

    def __iter__(self) -> Iterator[list]:
        for i, b in enumerate(self.sampler):
            if self.limit is not None and i >= self.limit:
                return
            if i >= self.skip:
                yield b


# ----------------------------------------------------------------------------- the step module


class _Step(nn.Module):
    """Reference embeddings + forward_logits in one module, so DDP sees every parameter use."""

    def __init__(self, model: nn.Module, references, compile_model: bool):
        super().__init__()
        self.model = model
        self.references = references
        self._fwd = torch.compile(model.forward_logits) if compile_model else model.forward_logits

    def forward(self, batch: dict, rows_h1: torch.Tensor | None = None, rows_h2: torch.Tensor | None = None):
        if rows_h1 is not None:
            w = int(batch["window_idx"][0])
            emb = self.model.bert.embedding
            batch = dict(batch)
            batch["rag_emb_h1"] = self.references(w, rows_h1, emb, batch["pos"], batch["af"])
            batch["rag_emb_h2"] = self.references(w, rows_h2, emb, batch["pos"], batch["af"])
        return self._fwd(batch)


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a V18 model on ``panel``; writes ``last.pt``, ``best.pt`` and ``metrics.jsonl`` to ``out_dir``.

    ``freqs``: site frequencies for the model's features; ``None`` (recommended) computes them
    from the training samples only. ``resume=True`` continues from ``out_dir/last.pt``.
    """

    def __init__(
        self, config: TrainConfig, panel, freqs=None, out_dir: str | os.PathLike = "run", resume: bool = False
    ):
        from .dataset import DistributedWindowGroupedBatchSampler, EmbeddingRAGDataset
        from .frequencies import compute_frequencies
        from .model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig
        from .windows import make_windows

        self.cfg = cfg = config
        self.panel = panel
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.out_dir = Path(out_dir)
        self.dist = _init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank if self.dist.enabled else None)
        self.is_cuda = self.device.type == "cuda"
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.is_cuda)
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

        # --- split by sample (seeded; the same on every rank)
        n = panel.n_samples
        n_val = round(cfg.val_fraction * n) if cfg.val_fraction > 0 else 0
        n_val = min(max(n_val, 1 if cfg.val_fraction > 0 else 0), n - 1)
        perm = np.random.default_rng([cfg.seed, 7_001]).permutation(n)
        self.val_samples = np.sort(perm[:n_val]).astype(np.int64)
        self.train_samples = np.sort(perm[n_val:]).astype(np.int64)
        if cfg.k > 0 and 2 * self.train_samples.size - 2 < cfg.k:
            raise InputError(
                panel.path,
                f"k={cfg.k} references but only {2 * self.train_samples.size - 2} "
                "training haplotypes besides the query's own",
                "lower --k or use a bigger panel",
            )
        self.freqs = compute_frequencies(panel, self.train_samples) if freqs is None else freqs
        self.layout = make_windows(panel.n_sites, cfg.max_sites, cfg.overlap)
        self.mask_schedule, self.val_schedule = mask_schedules(cfg)
        self.train_ds = EmbeddingRAGDataset(
            panel, self.freqs, self.layout, self.train_samples, mask_schedule=self.mask_schedule
        )
        self.val_ds = (
            EmbeddingRAGDataset(
                panel, self.freqs, self.layout, self.val_samples, mask_schedule=self.val_schedule
            )
            if n_val
            else None
        )
        self.sampler = DistributedWindowGroupedBatchSampler(
            self.train_ds,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            num_replicas=self.dist.world,
            rank=self.dist.rank,
            interleave=True,
        )
        self.val_sampler = (
            DistributedWindowGroupedBatchSampler(
                self.val_ds,
                cfg.batch_size,
                shuffle=True,
                seed=cfg.seed + 1,
                num_replicas=self.dist.world,
                rank=self.dist.rank,
                pad=False,
            )
            if self.val_ds is not None
            else None
        )

        # --- model, optimiser, schedule
        torch.manual_seed(cfg.seed)
        self.model_config = ModelConfig(
            dims=cfg.dims,
            n_layers=cfg.layers,
            attn_heads=cfg.heads,
            dropout=cfg.dropout,
            max_len=max(int(self.layout.lengths.max()), 2),
        )
        self.model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(self.model_config)).to(self.device)
        self.optimizer = self._make_optimizer()
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.grad_accum)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total

        # --- retrieval
        self.retriever = None
        if cfg.k > 0:
            from .retrieval import make_retriever

            kw = {"device": self.device} if cfg.engine == "hamming" else {}
            train_rows = np.sort(np.concatenate([2 * self.train_samples, 2 * self.train_samples + 1]))
            self.retriever = make_retriever(
                cfg.engine, panel, self.freqs, self.layout, train_rows, k=cfg.k, **kw
            )
        self.references = self._make_references()
        self.step_module: nn.Module = _Step(self.model, self.references, cfg.compile)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_module = DDP(
                self.step_module,
                device_ids=[self.device.index] if self.is_cuda else None,
                find_unused_parameters=cfg.k == 0,
            )

        # --- run state (all of it goes into the checkpoint)
        self.epoch = 0
        self.step = 0  # optimizer steps
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed
        self.samples_seen = 0
        self.progress = 0.0  # fraction of the LR schedule done
        self.best_metric: float | None = None
        self.bad_validations = 0
        self.refresh_state: dict | None = None  # embedding weights the retriever was last refreshed with
        self.refresh_epoch = -1
        self.last_val: dict | None = None
        self.stop_reason: str | None = None
        if resume:
            self._resume()
        elif self.dist.main:
            (self.out_dir / "metrics.jsonl").write_text("")

    # ------------------------------------------------------------------ construction helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "token" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        kw = {"fused": True} if self.is_cuda else {}
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.98), **kw)

    def _make_references(self) -> Callable:
        """``f(window, rows [B, K], layer, pos, af) -> [B, K, L, D]``: :class:`~vcfbert_fast.store.ReferenceEmbeddings`.

        ``live``: encoded with the training embedding (gradients flow into it). ``store``: the
        frozen snapshot taken at the last refresh, no grad, bf16 (the seed's pre-encoded store,
        ``host_store=False``). Both use the per-site select, so neither needs a host store of
        ``[N, L, D]`` embeddings (docs/TRAINING.md). The rows come from the retriever (panel rows
        by construction), so the step encodes them unchecked: no host synchronisation.
        """
        from .store import ReferenceEmbeddings

        self.reference_embeddings = ReferenceEmbeddings(
            self.panel, self.layout, mode=self.cfg.reference, device=self.device, host_store=False
        )
        return functools.partial(self.reference_embeddings.encode, check=False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resume or an imputation needs, as tensors and plain Python values."""
        from .vocab import VOCAB

        return {
            "model_state": model_state_dict(self.model),
            "model_config": self.model_config.to_dict(),
            "vocab": dict(VOCAB),
            "panel_fingerprint": panel_fingerprint(self.panel),
            "window_layout": self.layout.to_dict(),
            "mask_schedule": self.mask_schedule.to_dict(),
            "train_config": self.cfg.to_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": {"progress": self.progress, "total_steps": self.total_steps},
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "best_metric": self.best_metric,
            "bad_validations": self.bad_validations,
            "refresh_state": self.refresh_state,
            "refresh_epoch": self.refresh_epoch,
            "train_samples": self.train_samples.tolist(),
            "val_samples": self.val_samples.tolist(),
            "sample_names": [str(s) for s in self.panel.samples],
            "last_validation": self.last_val,
            "rng": capture_rng_state(),
            "world_size": self.dist.world,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        if not self.dist.main:
            return None
        return save_checkpoint(self.out_dir / name, self.state_dict())

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.exists():
            raise CheckpointError(str(path), "nothing to resume", "train without --resume first")
        state = load_checkpoint(path, model=self.model, panel=self.panel)
        saved_cfg = state.get("train_config", {})
        diff = [k for k in _FROZEN_ON_RESUME if k in saved_cfg and saved_cfg[k] != getattr(self.cfg, k)]
        if diff:
            shown = ", ".join(f"{k}={saved_cfg[k]!r} (now {getattr(self.cfg, k)!r})" for k in diff)
            raise CheckpointError(
                str(path),
                f"cannot resume with different {shown}",
                "resume with the original options, or start a new --out directory",
            )
        if state["train_samples"] != self.train_samples.tolist():
            raise CheckpointError(
                str(path),
                "training split differs from the checkpoint's",
                "resume with the same panel and --seed",
            )
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.samples_seen = int(state["samples_seen"])
        self.progress = float(state["scheduler_state"]["progress"])
        self.best_metric = state["best_metric"]
        self.bad_validations = int(state["bad_validations"])
        self.refresh_state = state["refresh_state"]
        self.refresh_epoch = int(state["refresh_epoch"])
        self.last_val = state.get("last_validation")
        restore_rng_state(state["rng"])
        if self.dist.rank > 0:  # ranks draw different dropout masks
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.step * 101 + self.dist.rank)
        if self.refresh_state is not None and self.retriever is not None:
            self._refresh(self.refresh_state)  # the retriever as it was, not as the weights are now
        self._log(
            {"kind": "resume", "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        )

    # ------------------------------------------------------------------ retrieval
    def _refresh(self, weights: dict | None = None) -> None:
        """Point the retriever (and store) at a frozen snapshot of the embedding layer."""
        if self.retriever is None:
            return
        emb = self.model.bert.embedding
        if weights is None:
            weights = {k: v.detach().cpu().clone() for k, v in emb.state_dict().items()}
        snap = copy.deepcopy(emb)
        snap.load_state_dict(weights)
        snap.eval().requires_grad_(False)
        if self.cfg.reference == "store":
            self.reference_embeddings.refresh(snap)
        self.refresh_state = weights
        self.retriever.refresh_embeddings(snap, device=self.device)

    @torch.no_grad()
    def _retrieve(self, batch: dict, training: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.retriever is None:
            return None, None
        w = int(batch["window_idx"][0])
        exclude = None
        if training:  # leave-one-out: a query never retrieves its own two haplotypes
            s = batch["sample_idx"].long()
            exclude = torch.stack([2 * s, 2 * s + 1], dim=1)
        _, i1 = self.retriever.search(w, batch["hap_1"], exclude=exclude)
        _, i2 = self.retriever.search(w, batch["hap_2"], exclude=exclude)
        return i1.to(self.device), i2.to(self.device)

    # ------------------------------------------------------------------ loaders
    def _loader(self, sampler, dataset, skip: int = 0, limit: int | None = None):
        from .dataset import embedding_rag_collate_fn

        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=_SkipBatches(sampler, skip, limit),
            collate_fn=embedding_rag_collate_fn,
            num_workers=self.cfg.num_workers,
            pin_memory=self.is_cuda,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # never touch the global RNG
        )

    def _to_device(self, batch: dict) -> dict:
        # window_idx stays on the host: the step reads it as an int (retrieval, references), which
        # on a device tensor would be a host synchronisation per read.
        return {
            k: (
                v.to(self.device, non_blocking=True)
                if isinstance(v, torch.Tensor) and k != "window_idx"
                else v
            )
            for k, v in batch.items()
        }

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        if not self.dist.main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict | None:
        """Masked-site metrics of held-out samples (retrieving from training haplotypes)."""
        if self.val_ds is None:
            return None
        from .loss import imputation_loss

        self.model.eval()
        metrics = ImputationMetrics()
        for batch in self._loader(self.val_sampler, self.val_ds, limit=self.cfg.val_max_batches):
            batch = self._to_device(batch)
            r1, r2 = self._retrieve(batch, training=False)
            with self._autocast():
                out = self.step_module(batch, r1, r2)
                loss, _ = imputation_loss(out, batch)
            metrics.update(out, batch, loss.detach())
        self.model.train()
        if self.dist.enabled:
            counts = (
                metrics.counts
                if metrics.counts is not None
                else torch.zeros(19, dtype=torch.float64, device=self.device)
            )
            torch.distributed.all_reduce(counts)
            metrics.counts = counts
        result = metrics.compute()
        self.last_val = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()
        }
        self._log({"kind": "val", "step": self.step, "epoch": self.epoch, **self.last_val})
        return result

    def _after_validation(self, result: dict | None) -> bool:
        """Track the best model; True when early stopping says stop."""
        if result is None:
            return False
        if self.cfg.early_stop_metric == "accuracy":
            value, better = result["accuracy"], lambda a, b: a > b
        else:
            value, better = result.get("loss", float("nan")), lambda a, b: a < b
        if value is None or math.isnan(value):
            return False
        if self.best_metric is None or better(value, self.best_metric):
            self.best_metric = float(value)
            self.bad_validations = 0
            self.save("best.pt")
            return False
        self.bad_validations += 1
        return 0 < self.cfg.early_stop_patience <= self.bad_validations

    # ------------------------------------------------------------------ stopping
    def _agree(self, flag: bool) -> bool:
        """Every rank stops together: the OR of the ranks' flags."""
        if not self.dist.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _update_progress(self, elapsed: float, p0: float) -> None:
        p = self.step / max(self.total_steps, 1)
        if self.cfg.time_budget_min:
            p = max(p, p0 + (1.0 - p0) * elapsed / (60.0 * self.cfg.time_budget_min))
        self.progress = min(max(p, self.progress), 1.0)

    # ------------------------------------------------------------------ the loop
    def train(self, on_step: Callable[[Trainer], None] | None = None) -> dict:
        """Train until --epochs, --max-steps, --time-budget or early stopping; returns a summary.

        ``on_step(trainer)`` is called after every optimizer step (tests use it to simulate a kill).
        """
        from .loss import imputation_loss

        cfg = self.cfg
        t_start = time.monotonic()
        p0 = self.progress
        self.model.train()
        stop = False
        validated_at = -1
        last_loss: float | None = None
        loss_sum = torch.zeros((), device=self.device)
        loss_n = 0
        t_log, samples_log = time.monotonic(), self.samples_seen
        rate = 0.0
        bar = None
        if cfg.progress and self.dist.main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                unit="step",
                desc="train",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        try:
            while self.epoch < cfg.epochs and not stop:
                self.train_ds.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch)
                if self.retriever is not None and (
                    self.refresh_state is None
                    or (
                        self.batch_in_epoch == 0
                        and self.refresh_epoch != self.epoch
                        and self.epoch % cfg.refresh_every == 0
                    )
                ):
                    self._refresh()
                    self.refresh_epoch = self.epoch
                n_batches = len(self.sampler)
                micro = 0
                self.optimizer.zero_grad(set_to_none=True)
                for batch in self._loader(self.sampler, self.train_ds, skip=self.batch_in_epoch):
                    batch = self._to_device(batch)
                    micro += 1
                    self.batch_in_epoch += 1
                    last_of_epoch = self.batch_in_epoch >= n_batches
                    boundary = micro % cfg.grad_accum == 0 or last_of_epoch
                    r1, r2 = self._retrieve(batch, training=True)
                    sync_ctx = (
                        self.step_module.no_sync() if self.dist.enabled and not boundary else _nullcontext()
                    )
                    with sync_ctx:
                        with self._autocast():
                            out = self.step_module(batch, r1, r2)
                            loss, _ = imputation_loss(out, batch)
                        (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach()
                    loss_n += 1
                    self.samples_seen += int(batch["hap_1"].shape[0]) * self.dist.world
                    if not boundary:
                        continue
                    if cfg.clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                    self._update_progress(time.monotonic() - t_start, p0)
                    lr = cfg.lr * lr_factor(
                        self.progress, self.step, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio
                    )
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    micro = 0
                    if bar is not None:
                        bar.update(1)

                    if self.step % cfg.log_every == 0:
                        last_loss = float(loss_sum.item()) / max(loss_n, 1)  # the one host sync
                        if not math.isfinite(last_loss):
                            raise FloatingPointError(
                                f"training loss became {last_loss} at step {self.step}; lower --lr or "
                                "raise --warmup-steps (last good checkpoint: last.pt)"
                            )
                        now = time.monotonic()
                        rate = (self.samples_seen - samples_log) / max(now - t_log, 1e-9)
                        t_log, samples_log = now, self.samples_seen
                        loss_sum.zero_()
                        loss_n = 0
                        self._log(
                            {
                                "kind": "train",
                                "step": self.step,
                                "epoch": self.epoch,
                                "loss": last_loss,
                                "lr": lr,
                                "samples_per_s": round(rate, 2),
                                "samples_seen": self.samples_seen,
                                "elapsed_s": round(now - t_start, 2),
                            }
                        )
                        if bar is not None:
                            bar.set_postfix(
                                epoch=self.epoch, loss=f"{last_loss:.4f}", samples_s=f"{rate:.0f}"
                            )
                    if on_step is not None:
                        on_step(self)

                    # stopping conditions; the time budget is agreed between ranks at log steps
                    reason = None
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        reason = "max_steps"
                    elif cfg.time_budget_min is not None:
                        over = time.monotonic() - t_start >= 60.0 * cfg.time_budget_min
                        if self.dist.enabled:
                            over = self._agree(over) if self.step % cfg.log_every == 0 else False
                        if over:
                            reason = "time_budget"
                    if reason is not None:
                        self.stop_reason, stop = reason, True
                        if last_of_epoch:
                            self.epoch += 1
                            self.batch_in_epoch = 0
                        break
                    if cfg.val_every_steps and self.step % cfg.val_every_steps == 0 and not last_of_epoch:
                        validated_at = self.step
                        if self._after_validation(self.validate()):
                            self.stop_reason, stop = "early_stop", True
                            self.save()
                            break
                    if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                        self.save()
                else:  # the epoch ran to its end
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if self.epoch >= cfg.epochs:
                        self.stop_reason = "epochs"
                        break
                    validated_at = self.step
                    if self._after_validation(self.validate()):
                        self.stop_reason, stop = "early_stop", True
                    self.save()
            if self.stop_reason is None:
                self.stop_reason = "epochs"
            if validated_at != self.step:  # finish with a validation of the final weights
                self._after_validation(self.validate())
            self.save()
        finally:
            if bar is not None:
                bar.close()
        summary = {
            "stop_reason": self.stop_reason,
            "step": self.step,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "train_seconds": round(time.monotonic() - t_start, 2),
            "last_loss": last_loss,
            "samples_per_s": round(rate, 2),
            "best_metric": self.best_metric,
            "validation": self.last_val,
        }
        self._log({"kind": "done", **summary})
        return summary

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        if self.dist.owns_group:
            torch.distributed.destroy_process_group()
            self.dist.owns_group = False


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- CLI


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
    ("--k", "k", int, "references retrieved per haplotype (0: no retrieval)"),
    ("--engine", "engine", str, "retrieval engine: hamming (exact, fast) or faiss (the seed's index)"),
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
    (
        "--mask-rate",
        "mask_rate",
        float,
        "fixed training mask rate, no curriculum (e.g. 0.93 = 1 - array density 1/15; unset: DESIGN curriculum)",
    ),
    ("--mask-mode", "mask_mode", str, "with --mask-rate: random (rare sites max(0.7, rate)) or array"),
    ("--val-mask-rate", "val_mask_rate", float, "validation mask rate (unset: --mask-rate, else 0.5)"),
    ("--val-mask-mode", "val_mask_mode", str, "validation mask mode (unset: --mask-mode, else random)"),
    ("--val-fraction", "val_fraction", float, "fraction of samples held out for validation"),
    ("--val-every", "val_every_steps", int, "also validate every N steps (0: once per epoch)"),
    ("--val-max-batches", "val_max_batches", int, "cap validation batches (a fixed random subset; 0: all)"),
    ("--early-stop-patience", "early_stop_patience", int, "validations without improvement before stopping"),
    ("--early-stop-metric", "early_stop_metric", str, "accuracy or loss"),
    ("--checkpoint-every", "checkpoint_every_steps", int, "write last.pt every N steps"),
    ("--log-every", "log_every", int, "read and log the loss every N steps"),
    ("--seed", "seed", int, "seed of split, masks, sampler and initialisation"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes"),
    ("--device", "device", str, "auto, cpu, cuda or cuda:N"),
    ("--threads", "threads", int, "CPU threads for torch (1 is fastest on a busy machine)"),
    ("--amp", "amp", str, "auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32"),
    ("--compile", "compile", None, "torch.compile the model"),
    ("--no-progress", "progress", None, "no progress bar"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--ref", required=True, help="phased reference panel (VCF/BCF, bgzipped or plain)")
    parser.add_argument(
        "--panel", default=None, help="sample -> population table (without: population AF = global AF)"
    )
    parser.add_argument("--out", required=True, help="run directory: last.pt, best.pt, metrics.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (mid-epoch)")
    for flag, name, typ, help_text in _ARGS:
        if typ is None:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=name, type=typ, default=None, help=f"{help_text} (default {getattr(d, name)})"
            )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from ``base`` (defaults, or a resumed run's) overridden by the flags given."""
    d = (base or TrainConfig()).to_dict()
    for _, name, typ, _ in _ARGS:
        v = getattr(args, name, None)
        if v is None:
            continue
        d[name] = (name != "progress") if typ is None else v
    return TrainConfig.from_dict(d)


def run(args: argparse.Namespace) -> int:
    from .io import read_panel

    base = None
    if args.resume:
        last = Path(args.out) / "last.pt"
        if not last.exists():
            raise CheckpointError(str(last), "nothing to resume", "train without --resume first")
        base = TrainConfig.from_dict(read_checkpoint(last).get("train_config", {}))
    cfg = config_from_args(args, base)
    panel = read_panel(args.ref, args.panel, progress=cfg.progress)
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
