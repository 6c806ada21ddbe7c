"""AF-guided curriculum masking (DESIGN.md section 2, "Masking (training)"), plus two
imputation-matched alternatives.

* ``curriculum`` (DESIGN default): rare sites p=0.7, common sites 0.3 rising 0.1 every 2 epochs to 0.8.
* ``random`` at a fixed ``rate``: common sites ``rate``, rare sites ``max(rare_p, rate)``, no curriculum.
* ``array`` at a fixed ``rate``: exactly ``round((1 - rate) * n)`` sites stay unmasked, drawn without
  replacement with weight ``sqrt(MAF)`` (x0.02 below MAF 1%), the way genotyping arrays (and
  ``simulate.choose_array_sites``) favour common variants. Imputing array data with 1 in 15 sites
  typed masks ~93% of sites, mostly rare ones: a model trained at 30% masking never sees that.

One mask per (epoch, window), shared by every sample, both haplotypes and the
panel's search view. The mask is a pure function of ``(seed, epoch, window_idx, af)``
drawn from ``np.random.default_rng([seed, epoch, window_idx])``, so every DataLoader
worker, process and rank computes the same mask with no communication. This module
imports only numpy (cheap in workers and subprocesses).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError


def curriculum_rate(
    epoch: int, start: float = 0.3, step: float = 0.1, every: int = 2, max_rate: float = 0.8
) -> float:
    """Mask rate of common sites at ``epoch``: ``start``, rising by ``step`` every ``every`` epochs, capped."""
    if epoch < 0:
        raise InputError(None, f"epoch={epoch} must be >= 0", "count epochs from 0")
    if every < 1:
        raise InputError(None, f"every={every} must be >= 1", "pass a positive curriculum period")
    # round() keeps 0.3 + 0.1 * 2 at 0.5 instead of 0.5000000000000001.
    return float(min(max_rate, round(start + step * (epoch // every), 10)))


def window_mask(
    af,
    epoch: int,
    window_idx: int,
    seed: int,
    rare_af: float = 0.05,
    rare_p: float = 0.7,
    rate: float | None = None,
) -> np.ndarray:
    """Training mask over one window's sites, bool ``[n]`` (True = masked).

    Sites with ``af < rare_af`` are masked with probability ``rare_p``; the others with
    ``rate`` (default ``curriculum_rate(epoch)``). Draws come from
    ``np.random.default_rng([seed, epoch, window_idx])``: deterministic everywhere.

    Degenerate masks are repaired deterministically: if no site is masked, the site
    nearest to being masked (smallest ``u - p``) is masked, so the loss has a target;
    if every site is masked and ``n > 1``, the site nearest to staying unmasked (largest
    ``u - p``) is unmasked, so retrieval has at least one site to compare.
    """
    a = np.asarray(af, dtype=np.float64).reshape(-1)
    if seed < 0 or epoch < 0 or window_idx < 0:
        raise InputError(
            None,
            f"seed={seed}, epoch={epoch}, window_idx={window_idx} must be >= 0",
            "pass non-negative ints",
        )
    if rate is None:
        rate = curriculum_rate(epoch)
    n = a.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    rng = np.random.default_rng([int(seed), int(epoch), int(window_idx)])
    u = rng.random(n)
    p = np.where(a < rare_af, rare_p, rate)
    mask = u < p
    if not mask.any():
        mask[np.argmin(u - p)] = True
    elif n > 1 and mask.all():
        mask[np.argmax(u - p)] = False
    return mask


MASK_MODES = ("curriculum", "random", "array", "chromosome")


def array_keep_weights(af) -> np.ndarray:
    """Weight of a site to stay unmasked in ``array`` mode: ``sqrt(MAF)``, x0.02 below MAF 1%."""
    a = np.asarray(af, dtype=np.float64).reshape(-1)
    maf = np.clip(np.minimum(a, 1.0 - a), 0.0, 0.5)
    return np.sqrt(maf) * np.where(maf < 0.01, 0.02, 1.0)


def array_mask(af, rate: float, epoch: int, window_idx: int, seed: int) -> np.ndarray:
    """Array-like mask over one window's sites, bool ``[n]`` (True = masked).

    ``keep = round((1 - rate) * n)`` sites stay unmasked (at least 1 and at most ``n - 1`` when
    ``n > 1``, so both the loss and retrieval have sites), drawn without replacement with
    ``array_keep_weights(af)`` (uniform over the window if every weight is 0; monomorphic sites
    are drawn only when the polymorphic ones run out). Drawn from
    ``np.random.default_rng([seed, epoch, window_idx])``: deterministic everywhere.
    """
    a = np.asarray(af, dtype=np.float64).reshape(-1)
    if seed < 0 or epoch < 0 or window_idx < 0:
        raise InputError(
            None,
            f"seed={seed}, epoch={epoch}, window_idx={window_idx} must be >= 0",
            "pass non-negative ints",
        )
    if not 0.0 < rate < 1.0:
        raise InputError(None, f"array mask rate {rate} outside (0, 1)", "use e.g. 1 - 1/15")
    n = a.shape[0]
    mask = np.ones(n, dtype=bool)
    if n <= 1:
        return mask
    keep = int(min(max(round((1.0 - rate) * n), 1), n - 1))
    rng = np.random.default_rng([int(seed), int(epoch), int(window_idx)])
    w = array_keep_weights(a)
    nz = np.flatnonzero(w > 0)
    if nz.size >= keep:
        chosen = rng.choice(nz, size=keep, replace=False, p=w[nz] / w[nz].sum())
    else:  # too few polymorphic sites: keep them all, fill uniformly from the rest
        rest = np.flatnonzero(w <= 0)
        chosen = np.concatenate([nz, rng.choice(rest, size=keep - nz.size, replace=False)])
    mask[chosen] = False
    return mask


@dataclass
class MaskSchedule:
    """The masking parameters of a training run plus a small LRU cache of recent masks.

    ``mask(epoch, window_idx, af)`` equals ``window_mask(...)`` with these parameters
    (``mode="curriculum"``, the DESIGN default), ``window_mask(..., rare_p=max(rare_p, rate),
    rate=rate)`` (``mode="random"``) or ``array_mask(af, rate, ...)`` (``mode="array"``).
    Cached arrays are read-only (they are shared between items of a window).
    """

    seed: int = 0
    start: float = 0.3
    step: float = 0.1
    every: int = 2
    max_rate: float = 0.8
    rare_af: float = 0.05
    rare_p: float = 0.7
    mode: str = "curriculum"  # "curriculum" | "random" | "array" | "chromosome" (module docstring)
    rate: float | None = None  # the fixed mask rate of "random" / "array"
    cache_size: int = 256
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise InputError(None, f"mask mode {self.mode!r}", f"use one of {', '.join(MASK_MODES)}")
        if self.mode != "curriculum" and (self.rate is None or not 0.0 < self.rate < 1.0):
            raise InputError(
                None,
                f"mask mode {self.mode!r} needs a rate in (0, 1), got {self.rate}",
                "pass e.g. rate=0.93 (1 - array density)",
            )

    @classmethod
    def fixed(cls, rate: float, mode: str = "random", seed: int = 0, **kw) -> MaskSchedule:
        """A schedule with a fixed ``rate`` and no curriculum (``mode`` "random" or "array")."""
        return cls(seed=seed, mode=mode, rate=float(rate), **kw)

    def common_rate(self, epoch: int) -> float:
        """Mask probability of a common site at ``epoch`` (for "array": the overall masked fraction)."""
        if self.mode == "curriculum":
            return curriculum_rate(epoch, self.start, self.step, self.every, self.max_rate)
        return float(self.rate)

    def describe(self) -> str:
        if self.mode == "curriculum":
            return (
                f"curriculum: common {self.start:g} +{self.step:g} every {self.every} epochs to "
                f"{self.max_rate:g}, rare (AF < {self.rare_af:g}) {self.rare_p:g}"
            )
        if self.mode == "random":
            return (
                f"random: common {self.rate:g}, rare (AF < {self.rare_af:g}) {max(self.rare_p, self.rate):g}"
            )
        where = "over the whole chromosome" if self.mode == "chromosome" else "per window"
        return (
            f"{self.mode}: {self.rate:g} of sites masked {where}, kept sites drawn with weight sqrt(MAF)"
            " (x0.02 < MAF 1%)"
        )

    def chromosome_mask(self, epoch: int, af) -> np.ndarray:
        """``chromosome`` mode: one array-like mask over every site of the chromosome, bool ``[M]``.

        The typed markers (False) are drawn once per epoch for the whole chromosome, so a window
        sees typed markers beyond its ends, as imputation does, and the matching index is rebuilt
        over them each epoch. ``array_mask(af_all, rate, epoch, 0, seed)``; read-only, cached.
        """
        if self.mode != "chromosome":
            raise InputError(None, f"chromosome_mask in mask mode {self.mode!r}", "use mode='chromosome'")
        a = np.ascontiguousarray(af, dtype=np.float64).reshape(-1)
        key = ("chromosome", int(epoch), a.shape[0], hash(a.tobytes()))
        hit = self._cache.get(key)
        if hit is None:
            hit = array_mask(a, float(self.rate), epoch, 0, self.seed)
            hit.flags.writeable = False
            self._cache[key] = hit
            while len(self._cache) > max(self.cache_size, 1):
                self._cache.popitem(last=False)
        return hit

    def mask(self, epoch: int, window_idx: int, af) -> np.ndarray:
        if self.mode == "chromosome":
            raise InputError(
                None,
                "mask mode 'chromosome' draws one mask per chromosome, not per window",
                "call chromosome_mask(epoch, af of every site) and slice the window's sites",
            )
        a = np.ascontiguousarray(af, dtype=np.float64).reshape(-1)
        # The AF bytes are part of the key so one schedule shared by two panels cannot mix masks.
        key = (int(epoch), int(window_idx), a.shape[0], hash(a.tobytes()))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if self.mode == "array":
            m = array_mask(a, float(self.rate), epoch, window_idx, self.seed)
        else:
            rare_p = self.rare_p if self.mode == "curriculum" else max(self.rare_p, float(self.rate))
            m = window_mask(
                a,
                epoch,
                window_idx,
                self.seed,
                rare_af=self.rare_af,
                rare_p=rare_p,
                rate=self.common_rate(epoch),
            )
        m.flags.writeable = False
        self._cache[key] = m
        while len(self._cache) > max(self.cache_size, 0):
            self._cache.popitem(last=False)
        return m

    def to_dict(self) -> dict[str, Any]:
        """Plain ints/floats for a ``weights_only`` checkpoint."""
        return {
            "seed": int(self.seed),
            "start": float(self.start),
            "step": float(self.step),
            "every": int(self.every),
            "max_rate": float(self.max_rate),
            "rare_af": float(self.rare_af),
            "rare_p": float(self.rare_p),
            "mode": str(self.mode),
            "rate": None if self.rate is None else float(self.rate),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskSchedule:
        _KEYS = ("seed", "start", "step", "every", "max_rate", "rare_af", "rare_p", "mode", "rate")
        return cls(**{k: d[k] for k in _KEYS if k in d})
