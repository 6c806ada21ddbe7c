"""What a training run is set to: :class:`TrainConfig`, and the mask and LR schedules it defines.

Validated once, here, so the trainer and the CLI can trust every field; the schedules are pure
functions of the config (and of the step/progress), so every rank and every resume agrees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import InputError
from ..masking import MaskSchedule

__all__ = ["FROZEN_ON_RESUME", "TrainConfig", "lr_factor", "mask_schedules"]


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults: a CPU-sized model that learns the simulator's
    1000-sample panel in ~15 min on 2 cores and imputes ~4x faster than the earlier dims 64 /
    4 layers at the same accuracy (docs/TRAINING.md says how they were chosen)."""

    # model
    dims: int = 32
    layers: int = 2
    heads: int = 2  # head dim 16
    dropout: float = 0.0  # >0 sends CPU attention to the slow math SDPA kernel (3.5x per step)
    prior_hidden: int = 8  # width of the donor prior MLP (runs on every donor x site)
    prior: str = "shared"  # "shared": one prior MLP for donor attention and copy head; or "separate"
    # "informative": the encoder attends over typed sites and sites where the donors disagree only
    # (ModelConfig.encode; docs/MODEL.md "An encoder over the informative sites"); or "all"
    encode: str = "informative"
    # data
    max_sites: int = 256  # sites per window (DESIGN's 1028 is the GPU setting)
    overlap: int = 0
    batch_size: int = 32
    val_fraction: float = 0.1
    # masking (docs/TRAINING.md "Masking"): mask_rate None = DESIGN curriculum; set = a fixed rate
    # placed per mask_mode ("random": common sites at the rate, rare at max(0.7, rate); "array":
    # keep 1 - rate of the sites, favouring common ones, like a genotyping array)
    # keep 1 - rate of the sites, favouring common ones, like a genotyping array; "chromosome": the
    # same, drawn once per epoch over the whole chromosome: the pbwt engine's mode, and its default)
    mask_rate: float | None = None  # pbwt: None = 1 - 1/15 (an array typing 1 in 15 sites)
    mask_mode: str | None = None  # None: "chromosome" for pbwt, else "random"
    val_mask_rate: float | None = None  # None: mask_rate if set, else 0.5 (rare sites 0.7)
    val_mask_mode: str | None = None  # None: mask_mode if mask_rate is set, else "random"
    num_workers: int = 0
    # retrieval
    k: int | None = None  # references per haplotype (None: 32 for pbwt, 4 otherwise); 0: plain BERT
    engine: str = (
        "pbwt"  # "pbwt" (per-site donors by haplotype matching), "hamming" (exact, per window), "faiss"
    )
    pbwt_group: int = 4  # pbwt: typed markers per donor selection point
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
    # focal gamma of the masked-site loss. 0 (cross-entropy) by default: the seed's gamma 2 stops
    # pushing confident calls, so non-carriers at rare sites keep ALT mass that pooled dosage r^2
    # punishes (docs/MODEL.md "Loss"; measured 0.775 vs 0.841 r^2 at MAF < 0.5 %)
    focal_gamma: float = 0.0
    # stopping
    epochs: int = 8
    max_steps: int | None = None
    time_budget_min: float | None = 15.0  # None or <= 0: no time limit
    early_stop_patience: int = 4  # validations without improvement; 0 = never stop early
    # "r2" (mean over MAF bins of masked-site dosage r^2: what users judge imputation by) or
    # "accuracy" (higher better; ~0.999 for any decent model, so it cannot rank runs), or "loss"
    early_stop_metric: str = "r2"
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
        if self.engine not in ("pbwt", "hamming", "faiss"):
            bad.append(f"engine={self.engine!r} (use pbwt, hamming or faiss)")
        pbwt = self.engine == "pbwt"
        if self.k is None:
            self.k = 32 if pbwt else 4
        if pbwt and self.mask_rate is None:
            self.mask_rate = 1.0 - 1.0 / 15.0
        if self.mask_mode is None:
            self.mask_mode = "chromosome" if pbwt else "random"
        if pbwt and self.k > 0 and self.mask_mode != "chromosome":
            bad.append(
                f"mask_mode={self.mask_mode!r} with engine pbwt (pbwt matches over chromosome-wide typed"
                " markers: use --mask-mode chromosome)"
            )
        if self.prior not in ("shared", "separate"):
            bad.append(f"prior={self.prior!r} (use shared or separate)")
        if self.encode not in ("all", "informative"):
            bad.append(f"encode={self.encode!r} (use informative or all)")
        if not 1 <= self.prior_hidden <= 1024:
            bad.append(f"prior_hidden={self.prior_hidden} (must be in [1, 1024])")
        if self.pbwt_group < 1:
            bad.append(f"pbwt_group={self.pbwt_group} (must be >= 1)")
        if self.reference not in ("live", "store"):
            bad.append(f"reference={self.reference!r} (use live or store)")
        if self.schedule not in ("cosine", "linear"):
            bad.append(f"schedule={self.schedule!r} (use cosine or linear)")
        if self.amp not in ("auto", "bf16", "fp32"):
            bad.append(f"amp={self.amp!r} (use auto, bf16 or fp32)")
        if self.early_stop_metric not in ("accuracy", "r2", "loss"):
            bad.append(f"early_stop_metric={self.early_stop_metric!r} (use accuracy, r2 or loss)")
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
            if v is not None and v not in ("random", "array", "chromosome"):
                bad.append(f"{name}={v!r} (use random, array or chromosome)")
        if not 0.0 <= self.val_fraction < 1.0:
            bad.append(f"val_fraction={self.val_fraction} (must be in [0, 1))")
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"max_steps={self.max_steps} (must be >= 1)")
        if not 0.0 <= self.focal_gamma <= 10.0:
            bad.append(f"focal_gamma={self.focal_gamma} (must be in [0, 10]; 0 is cross-entropy)")
        if self.threads is not None and self.threads < 1:
            bad.append(f"threads={self.threads} (must be >= 1; omit it for torch's default)")
        bad += _model_shape_problems(self.dims, self.layers, self.heads, self.max_sites)
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


def _model_shape_problems(dims: int, layers: int, heads: int, max_sites: int) -> list[str]:
    """The model options a checkpoint could not hold (``checkpoint.check_model_config``'s bounds)."""
    from ..checkpoint import MAX_MODEL_BYTES, MODEL_CONFIG_BOUNDS, estimated_model_bytes

    bad = []
    for name, key, v in (
        ("dims", "dims", dims),
        ("layers", "n_layers", layers),
        ("heads", "attn_heads", heads),
    ):
        lo, hi = MODEL_CONFIG_BOUNDS[key]
        if not lo <= v <= hi:
            bad.append(f"{name}={v} (must be in [{lo}, {hi}])")
    if not bad and (dims % heads or dims % 2):
        bad.append(f"dims={dims} (must be even and divisible by heads={heads})")
    if bad:
        return bad
    size = estimated_model_bytes(
        {"dims": dims, "n_layers": layers, "attn_heads": heads, "max_len": max_sites + 2}
    )
    if size is not None and size > MAX_MODEL_BYTES:
        bad.append(
            f"dims={dims}, layers={layers} ({size / 2**30:.1f} GiB of weights, above the "
            f"{MAX_MODEL_BYTES / 2**30:.0f} GiB limit)"
        )
    return bad


# What a run saved before an option existed trained with (its train_config lacks the key).
SAVED_BEFORE_OPTION = {"encode": "all"}

# Options that shape the model, the data split or the windows: a resumed run must keep them.
FROZEN_ON_RESUME = (
    "dims", "layers", "heads", "prior_hidden", "prior", "encode", "max_sites", "overlap", "val_fraction", "seed", "k", "engine"
)


def mask_schedules(cfg: TrainConfig) -> tuple[MaskSchedule, MaskSchedule]:
    """(training, validation) ``MaskSchedule`` of ``cfg`` (docs/TRAINING.md "Masking").

    Training: the DESIGN curriculum, or ``cfg.mask_rate`` fixed, placed per ``cfg.mask_mode``.
    Validation (its own seed, a fixed rate so scores are comparable across epochs): ``val_mask_rate``
    / ``val_mask_mode`` when given, else the training rate and mode, else 0.5 random (the
    curriculum's midpoint; rare sites 0.7).
    """
    train = (
        MaskSchedule(seed=cfg.seed)
        if cfg.mask_rate is None
        else MaskSchedule.fixed(cfg.mask_rate, cfg.mask_mode, seed=cfg.seed)
    )
    fixed = cfg.mask_rate is not None
    v_rate = cfg.val_mask_rate if cfg.val_mask_rate is not None else (cfg.mask_rate if fixed else 0.5)
    v_mode = cfg.val_mask_mode or (cfg.mask_mode if fixed else "random")
    if cfg.engine == "pbwt" and cfg.k > 0:  # validation queries match over chromosome-wide markers too
        v_mode = "chromosome"
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
