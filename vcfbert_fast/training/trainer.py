"""The trainer: builds data, model, retriever and optimizer from a :class:`TrainConfig`, runs the
loop, validates, checkpoints and resumes.

One optimizer step: window-grouped batch -> top-K retrieval for ``hap_1`` and ``hap_2``
(leave-one-out: a training query never retrieves its own two haplotypes) -> reference
embeddings ``rag_emb_h1/h2`` -> ``forward_logits`` -> focal ``imputation_loss`` on masked
sites -> backward (gradient accumulation) -> clip -> AdamW -> warmup + cosine/linear LR.

Train/validation split is by *sample*; allele frequencies (the model's per-site features)
come from the training samples only, so held-out samples never leak into them. Validation
queries retrieve from training haplotypes. Checkpoints (``last.pt``, ``best.pt``) hold the
full state, so ``resume=True`` continues mid-epoch: the sampler is a pure function of
(seed, epoch), so the batches already seen are skipped deterministically.

The loop (:meth:`Trainer.train`) is a sequence of named steps, each a method:
``_start_epoch`` (set the epoch, ``_refresh_if_due``) -> per micro-batch ``_train_step``
(retrieve, forward, loss, backward) -> at each accumulation boundary ``_optimizer_step``,
``_log_step``, ``_stop_if_due`` (``_should_stop``), ``_validate_if_due``, ``_checkpoint_if_due``
-> ``_end_of_epoch`` -> ``_finish``. Their order, and so every RNG draw, is the one a fixed-seed
run with ``--time-budget 0`` reproduces bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..calibration import LogitHistogram
from ..checkpoint import (
    capture_rng_state,
    load_checkpoint,
    model_state_dict,
    panel_fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from ..devices import resolve_device
from ..errors import CheckpointError, InputError
from ..loss import imputation_loss
from ..metrics import ImputationMetrics
from ..progress import Progress, progress_bar
from .batches import batch_to_device, make_loader
from .config import FROZEN_ON_RESUME, SAVED_BEFORE_OPTION, TrainConfig, lr_factor, mask_schedules
from .distributed import any_rank, join_process_group, leave_process_group, sum_across_ranks
from .step import StepModule

__all__ = ["Trainer"]

# tqdm's line for a bar that counts seconds of the time budget (its default would print "1.00s/s")
_TIME_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"


@dataclass
class _Loop:
    """What one :meth:`Trainer.train` call carries from step to step. Not checkpointed: a
    resumed run starts a new one (its time budget and throughput are per call)."""

    t_start: float
    p0: float  # the LR-schedule progress at the start (a resumed schedule continues from it)
    bar: Progress
    loss_sum: torch.Tensor  # device-side sum of micro-batch losses since the last log step
    t_log: float
    samples_log: int
    loss_n: int = 0
    last_loss: float | None = None
    rate: float = 0.0  # samples per second over the last log interval
    validated_at: int = -1  # the step of the last validation in this call
    stop: bool = False
    n_batches: int = 0  # micro-batches in the current epoch
    micro: int = 0  # micro-batches accumulated since the last optimizer step
    last_of_epoch: bool = False


class Trainer:
    """Trains a V18 model on ``panel``; writes ``last.pt``, ``best.pt`` and ``metrics.jsonl`` to ``out_dir``.

    ``freqs``: site frequencies for the model's features; ``None`` (recommended) computes them
    from the training samples only. ``resume=True`` continues from ``out_dir/last.pt``.
    """

    def __init__(
        self,
        config: TrainConfig,
        panel,
        freqs=None,
        out_dir: str | os.PathLike = "run",
        resume: bool = False,
    ):
        self.cfg = cfg = config
        self.panel = panel
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.out_dir = Path(out_dir)
        self.dist = join_process_group(cfg.device)
        self._finished = False  # train() ran to its end: close() then waits for the other ranks
        self.device = resolve_device(cfg.device, self.dist.local_rank if self.dist.enabled else None)
        self.is_cuda = self.device.type == "cuda"
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.is_cuda)
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

        self._split_samples()
        self._make_data(freqs)
        self._make_model()
        self._make_retrieval()
        self._reset_run_state()
        if resume:
            self._resume()
        elif self.dist.main:
            (self.out_dir / "metrics.jsonl").write_text("")

    # ------------------------------------------------------------------ construction
    def _split_samples(self) -> None:
        """Training / validation samples: a seeded permutation, the same on every rank."""
        cfg, panel = self.cfg, self.panel
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

    def _make_data(self, freqs) -> None:
        """Frequencies (training samples only), windows, masks, datasets and samplers."""
        from ..dataset import DistributedWindowGroupedBatchSampler, EmbeddingRAGDataset
        from ..frequencies import compute_frequencies
        from ..windows import make_windows

        cfg, panel = self.cfg, self.panel
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
            if self.val_samples.size
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

    def _make_model(self) -> None:
        """The seeded model, its optimizer and the step count of the schedule."""
        from ..model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model_config = ModelConfig(
            dims=cfg.dims,
            n_layers=cfg.layers,
            attn_heads=cfg.heads,
            dropout=cfg.dropout,
            max_len=max(int(self.layout.lengths.max()), 2),
            # donor attention and the copy head read the pbwt engine's match lengths and alleles
            k_pool="attention" if cfg.engine == "pbwt" else "mean",
            copy_head=cfg.engine == "pbwt" and cfg.k > 0,
            prior_hidden=cfg.prior_hidden,
            shared_prior=cfg.prior == "shared",
            encode=cfg.encode,
        )
        self.model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(self.model_config)).to(self.device)
        self.optimizer = self._make_optimizer()
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.grad_accum)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norms and the token table."""
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

    def _make_retrieval(self) -> None:
        """The retriever over training haplotypes (K > 0), the reference embeddings and the step
        module (under DDP when distributed)."""
        cfg = self.cfg
        self.retriever = self.val_retriever = None
        if cfg.k > 0 and cfg.engine == "pbwt":
            self._make_pbwt()
        elif cfg.k > 0:
            from ..retrieval import make_retriever

            kw = {"device": self.device} if cfg.engine == "hamming" else {}
            train_rows = np.sort(np.concatenate([2 * self.train_samples, 2 * self.train_samples + 1]))
            self.retriever = make_retriever(
                cfg.engine, self.panel, self.freqs, self.layout, train_rows, k=cfg.k, **kw
            )
        self.references = self._make_references()
        self.step_module: nn.Module = StepModule(self.model, self.references, cfg.compile)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_module = DDP(
                self.step_module,
                device_ids=[self.device.index] if self.is_cuda else None,
                find_unused_parameters=cfg.k == 0,
            )

    def _make_pbwt(self) -> None:
        """Donor retrievers over the training haplotypes: one indexed at each epoch's typed markers
        (rebuilt by ``_refresh``), one at the validation masks' fixed markers (built once)."""
        from ..matching import PbwtRetriever

        cfg = self.cfg
        train_rows = np.sort(np.concatenate([2 * self.train_samples, 2 * self.train_samples + 1]))
        kw = {"k": cfg.k, "group": cfg.pbwt_group, "seed": cfg.seed}
        self.retriever = PbwtRetriever(self.panel, self.freqs, self.layout, train_rows, **kw)
        if self.val_ds is not None:
            self.val_retriever = PbwtRetriever(self.panel, self.freqs, self.layout, train_rows, **kw)
            typed = self.val_ds.typed_sites(0)
            self.val_retriever.set_markers(typed)
            self.val_retriever.set_queries(self.panel.haplotypes[:, typed])  # query id = panel row

    def _set_pbwt_markers(self) -> None:
        """The pbwt "refresh": index the training rows at this epoch's typed markers; every panel
        haplotype is a query (its id is its panel row)."""
        typed = self.train_ds.typed_sites(self.epoch)
        self.retriever.set_markers(typed)
        self.retriever.set_queries(self.panel.haplotypes[:, typed])

    def _make_references(self) -> Callable:
        """``f(window, rows [B, K], layer, pos, af) -> [B, K, L, D]``: :class:`~vcfbert_fast.store.ReferenceEmbeddings`.

        ``live``: encoded with the training embedding (gradients flow into it). ``store``: the
        frozen snapshot taken at the last refresh, no grad, bf16 (the seed's pre-encoded store,
        ``host_store=False``). Both use the per-site select, so neither needs a host store of
        ``[N, L, D]`` embeddings (docs/TRAINING.md). The rows come from the retriever (panel rows
        by construction), so the step encodes them unchecked: no host synchronisation.
        """
        from ..store import ReferenceEmbeddings

        if self.cfg.engine == "pbwt":  # donors are embedded by matching.donor_inputs in the step
            self.reference_embeddings = None
            return None
        self.reference_embeddings = ReferenceEmbeddings(
            self.panel, self.layout, mode=self.cfg.reference, device=self.device, host_store=False
        )
        return functools.partial(self.reference_embeddings.encode, check=False)

    def _reset_run_state(self) -> None:
        """The run's position; all of it goes into the checkpoint."""
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
        self.calibration: dict | None = None  # fitted on the last validation pass (calibration.py)
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resume or an imputation needs, as tensors and plain Python values."""
        from ..vocab import VOCAB

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
            "calibration": self.calibration,
            "rng": capture_rng_state(),
            "world_size": self.dist.world,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write the full state to ``out_dir/name`` (rank 0 only; other ranks return None)."""
        if not self.dist.main:
            return None
        return save_checkpoint(self.out_dir / name, self.state_dict())

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.exists():
            raise CheckpointError(str(path), "nothing to resume", "train without --resume first")
        state = load_checkpoint(path, model=self.model, panel=self.panel)
        saved_cfg = {**SAVED_BEFORE_OPTION, **state.get("train_config", {})}
        diff = [k for k in FROZEN_ON_RESUME if k in saved_cfg and saved_cfg[k] != getattr(self.cfg, k)]
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
        self.calibration = state.get("calibration")
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
        """Point the retriever (and the store) at a frozen snapshot of the embedding layer
        (pbwt: rebuild the index at the epoch's typed markers)."""
        emb = self.model.bert.embedding
        if self.cfg.engine == "pbwt":
            self._set_pbwt_markers()
            self.refresh_state = weights if weights is not None else {}
            return
        if weights is None:
            weights = {k: v.detach().cpu().clone() for k, v in emb.state_dict().items()}
        snap = copy.deepcopy(emb)
        snap.load_state_dict(weights)
        snap.eval().requires_grad_(False)
        if self.cfg.reference == "store":
            self.reference_embeddings.refresh(snap)
        self.refresh_state = weights
        self.retriever.refresh_embeddings(snap, device=self.device)

    def _refresh_if_due(self) -> None:
        """Refresh at the first epoch this run sees, then every ``refresh_every`` epochs (once each)."""
        if self.retriever is None:
            return
        due = self.refresh_state is None or (
            self.batch_in_epoch == 0
            and self.refresh_epoch != self.epoch
            and self.epoch % self.cfg.refresh_every == 0
        )
        if due:
            self._refresh()
            self.refresh_epoch = self.epoch

    @torch.no_grad()
    def _retrieve(self, batch: dict, training: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Top-K reference rows ``[B, K]`` for ``hap_1`` and ``hap_2`` (None, None without retrieval)."""
        if self.retriever is None:
            return None, None
        w = int(batch["window_idx"][0])
        exclude = None
        if training:  # leave-one-out: a query never retrieves its own two haplotypes
            s = batch["sample_idx"].long()
            exclude = torch.stack([2 * s, 2 * s + 1], dim=1)
        if self.cfg.engine == "pbwt":  # per-site donors of both haplotypes (SiteDonors pairs)
            from ..matching import split_haplotypes

            s = batch["sample_idx"].long().cpu()
            rows = torch.stack([2 * s, 2 * s + 1], dim=1).reshape(-1)  # interleaved: h1, h2 of each sample
            ex = None if exclude is None else exclude.cpu().repeat_interleave(2, dim=0)
            retriever = self.retriever if training else self.val_retriever
            return split_haplotypes(retriever.site_donors(w, rows, exclude=ex))
        _, i1 = self.retriever.search(w, batch["hap_1"], exclude=exclude)
        _, i2 = self.retriever.search(w, batch["hap_2"], exclude=exclude)
        return i1.to(self.device), i2.to(self.device)

    # ------------------------------------------------------------------ batches
    def _loader(self, sampler, dataset, skip: int = 0, limit: int | None = None) -> Iterable[dict]:
        return make_loader(
            sampler,
            dataset,
            num_workers=self.cfg.num_workers,
            pin_memory=self.is_cuda,
            seed=self.cfg.seed,
            skip=skip,
            limit=limit,
        )

    def _autocast(self) -> torch.autocast:
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward_loss(self, batch: dict, r1: torch.Tensor | None, r2: torch.Tensor | None):
        """Logits and the focal loss of a device batch, under the run's autocast."""
        with self._autocast():
            out = self.step_module(batch, r1, r2)
            loss, _ = imputation_loss(out, batch, gamma=self.cfg.focal_gamma)
        return out, loss

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0)."""
        if not self.dist.main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _make_bar(self) -> Progress:
        """The bar measures what ends the run: seconds of ``time_budget_min`` when there is a
        budget (the run stops at the latest then), else steps up to ``total_steps`` (``max_steps``,
        or epochs x steps per epoch). Plain lines when stderr is not a terminal."""
        cfg = self.cfg
        enabled = cfg.progress and self.dist.main
        if cfg.time_budget_min is not None:
            return progress_bar(
                60.0 * cfg.time_budget_min,
                desc="train",
                unit="s",
                enabled=enabled,
                bar_format=_TIME_BAR_FORMAT,
                dynamic_ncols=True,
            )
        return progress_bar(
            self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            enabled=enabled,
            dynamic_ncols=True,
        )

    def _advance_bar(self, loop: _Loop) -> None:
        bar = loop.bar
        if self.cfg.time_budget_min is None:
            bar.update(1)
        else:
            bar.update(min(time.monotonic() - loop.t_start, bar.total) - bar.n)

    def _show_on_bar(self, loop: _Loop) -> None:
        """Epoch, last logged loss and throughput beside the bar; the step too when it counts seconds."""
        shown = {}
        if self.cfg.time_budget_min is not None:
            shown["step"] = self.step if self.cfg.max_steps is None else f"{self.step}/{self.cfg.max_steps}"
        if loop.last_loss is not None:
            shown.update(loss=f"{loop.last_loss:.4f}", samples_s=f"{loop.rate:.0f}")
        loop.bar.set_postfix(epoch=self.epoch, **shown)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict | None:
        """Masked-site metrics of held-out samples (retrieving from training haplotypes); the same
        pass fits the calibration of these weights (``self.calibration``, saved with them)."""
        if self.val_ds is None:
            return None
        self.model.eval()
        metrics, logits = ImputationMetrics(), LogitHistogram()
        for batch in self._loader(self.val_sampler, self.val_ds, limit=self.cfg.val_max_batches):
            batch = batch_to_device(batch, self.device)
            r1, r2 = self._retrieve(batch, training=False)
            out, loss = self._forward_loss(batch, r1, r2)
            metrics.update(out, batch, loss.detach())
            logits.update(out, batch)
        self.model.train()
        sum_across_ranks(metrics.totals(self.device), self.dist)
        sum_across_ranks(logits.totals(self.device), self.dist)
        self.calibration = logits.fit()
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
        if self.cfg.early_stop_metric in ("accuracy", "r2"):
            value, better = result[self.cfg.early_stop_metric], lambda a, b: a > b
        else:
            value, better = result.get("loss", float("nan")), lambda a, b: a < b
        if math.isnan(value):
            return False
        if self.best_metric is None or better(value, self.best_metric):
            self.best_metric = float(value)
            self.bad_validations = 0
            self.save("best.pt")
            return False
        self.bad_validations += 1
        return 0 < self.cfg.early_stop_patience <= self.bad_validations

    def _update_progress(self, elapsed: float, p0: float) -> None:
        """Advance the LR-schedule fraction: steps done, or the budget's elapsed share if ahead."""
        p = self.step / max(self.total_steps, 1)
        if self.cfg.time_budget_min:
            p = max(p, p0 + (1.0 - p0) * elapsed / (60.0 * self.cfg.time_budget_min))
        self.progress = min(max(p, self.progress), 1.0)

    # ------------------------------------------------------------------ the loop
    def train(self, on_step: Callable[[Trainer], None] | None = None) -> dict:
        """Train until --epochs, --max-steps, --time-budget or early stopping; returns a summary.

        ``on_step(trainer)`` is called after every optimizer step (tests use it to simulate a kill).
        """
        loop = self._begin()
        try:
            while self.epoch < self.cfg.epochs and not loop.stop:
                self._start_epoch(loop)
                for batch in self._loader(self.sampler, self.train_ds, skip=self.batch_in_epoch):
                    if not self._train_step(batch, loop):
                        continue  # gradients accumulate until the step boundary
                    lr = self._optimizer_step(loop)
                    self._log_step(loop, lr)
                    if on_step is not None:
                        on_step(self)
                    if self._stop_if_due(loop) or self._validate_if_due(loop):
                        break
                    self._checkpoint_if_due()
                else:  # the epoch ran to its end
                    self._end_of_epoch(loop)
            self._finish(loop)
        finally:
            loop.bar.close()
        self._finished = True
        return self._summary(loop)

    def _begin(self) -> _Loop:
        t_start = time.monotonic()
        p0 = self.progress
        self.model.train()
        return _Loop(
            t_start=t_start,
            p0=p0,
            bar=self._make_bar(),
            loss_sum=torch.zeros((), device=self.device),
            t_log=time.monotonic(),
            samples_log=self.samples_seen,
        )

    def _start_epoch(self, loop: _Loop) -> None:
        """Move masks and sampler to this epoch, refresh the retriever if due, clear gradients."""
        self.train_ds.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self._refresh_if_due()
        loop.n_batches = len(self.sampler)
        loop.micro = 0
        self.optimizer.zero_grad(set_to_none=True)

    def _train_step(self, batch: dict, loop: _Loop) -> bool:
        """One micro-batch: retrieve, forward, loss, backward (gradients accumulate over
        ``grad_accum`` micro-batches). True when an optimizer step is due."""
        cfg = self.cfg
        batch = batch_to_device(batch, self.device)
        loop.micro += 1
        self.batch_in_epoch += 1
        loop.last_of_epoch = self.batch_in_epoch >= loop.n_batches
        boundary = loop.micro % cfg.grad_accum == 0 or loop.last_of_epoch
        r1, r2 = self._retrieve(batch, training=True)
        # DDP all-reduces gradients on backward; between boundaries there is nothing to reduce yet
        no_sync = self.dist.enabled and not boundary
        with self.step_module.no_sync() if no_sync else contextlib.nullcontext():
            _, loss = self._forward_loss(batch, r1, r2)
            (loss / cfg.grad_accum).backward()
        loop.loss_sum += loss.detach()
        loop.loss_n += 1
        self.samples_seen += int(batch["hap_1"].shape[0]) * self.dist.world
        return boundary

    def _optimizer_step(self, loop: _Loop) -> float:
        """Clip, set the scheduled LR, step AdamW, clear gradients; returns the LR used."""
        cfg = self.cfg
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self._update_progress(time.monotonic() - loop.t_start, loop.p0)
        lr = cfg.lr * lr_factor(self.progress, self.step, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loop.micro = 0
        return lr

    def _log_step(self, loop: _Loop, lr: float) -> None:
        """Advance the bar; every ``log_every`` steps read the loss (the one host sync), refuse a
        non-finite one, and write a ``train`` record."""
        self._advance_bar(loop)
        if self.step % self.cfg.log_every != 0:
            return
        loop.last_loss = float(loop.loss_sum.item()) / max(loop.loss_n, 1)
        if not math.isfinite(loop.last_loss):
            raise FloatingPointError(
                f"training loss became {loop.last_loss} at step {self.step}; lower --lr or "
                "raise --warmup-steps (last good checkpoint: last.pt)"
            )
        now = time.monotonic()
        loop.rate = (self.samples_seen - loop.samples_log) / max(now - loop.t_log, 1e-9)
        loop.t_log, loop.samples_log = now, self.samples_seen
        loop.loss_sum.zero_()
        loop.loss_n = 0
        self._log(
            {
                "kind": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": loop.last_loss,
                "lr": lr,
                "samples_per_s": round(loop.rate, 2),
                "samples_seen": self.samples_seen,
                "elapsed_s": round(now - loop.t_start, 2),
            }
        )
        self._show_on_bar(loop)

    def _should_stop(self, loop: _Loop) -> str | None:
        """``max_steps`` or ``time_budget`` when reached; under DDP the budget is agreed between
        ranks (at log steps only: one collective per ``log_every`` steps)."""
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.time_budget_min is not None:
            over = time.monotonic() - loop.t_start >= 60.0 * cfg.time_budget_min
            if self.dist.enabled:
                over = any_rank(over, self.dist, self.device) if self.step % cfg.log_every == 0 else False
            if over:
                return "time_budget"
        return None

    def _stop_if_due(self, loop: _Loop) -> bool:
        """Stop the run after this step if a limit is reached; True to leave the epoch."""
        reason = self._should_stop(loop)
        if reason is None:
            return False
        self.stop_reason, loop.stop = reason, True
        if loop.last_of_epoch:  # the epoch is complete: a resume starts the next one
            self.epoch += 1
            self.batch_in_epoch = 0
        return True

    def _validate_if_due(self, loop: _Loop) -> bool:
        """Validate every ``val_every_steps`` (the epoch end validates anyway); True when early
        stopping ends the run."""
        cfg = self.cfg
        if not cfg.val_every_steps or self.step % cfg.val_every_steps != 0 or loop.last_of_epoch:
            return False
        loop.validated_at = self.step
        if not self._after_validation(self.validate()):
            return False
        self.stop_reason, loop.stop = "early_stop", True
        self.save()
        return True

    def _checkpoint_if_due(self) -> None:
        if self.cfg.checkpoint_every_steps and self.step % self.cfg.checkpoint_every_steps == 0:
            self.save()

    def _end_of_epoch(self, loop: _Loop) -> None:
        """Count the epoch; unless it was the last, validate (early stopping) and save."""
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.epoch >= self.cfg.epochs:
            self.stop_reason = "epochs"
            return
        loop.validated_at = self.step
        if self._after_validation(self.validate()):
            self.stop_reason, loop.stop = "early_stop", True
        self.save()

    def _finish(self, loop: _Loop) -> None:
        """Validate the final weights (unless just done) and save them."""
        if self.stop_reason is None:
            self.stop_reason = "epochs"
        if loop.validated_at != self.step:
            self._after_validation(self.validate())
        self.save()
        self._show_on_bar(loop)  # where the run ended, not the last log step

    def _summary(self, loop: _Loop) -> dict:
        summary = {
            "stop_reason": self.stop_reason,
            "step": self.step,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "train_seconds": round(time.monotonic() - loop.t_start, 2),
            "last_loss": loop.last_loss,
            "samples_per_s": round(loop.rate, 2),
            "best_metric": self.best_metric,
            "validation": self.last_val,
        }
        self._log({"kind": "done", **summary})
        return summary

    def close(self) -> None:
        """Leave the process group if this trainer created it (in step with the other ranks
        when training finished; at once after an error or Ctrl-C)."""
        leave_process_group(self.dist, synchronise=self._finished)
