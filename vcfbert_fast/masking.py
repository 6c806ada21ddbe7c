"""AF-guided curriculum masking (DESIGN.md section 2, "Masking (training)").

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


@dataclass
class MaskSchedule:
    """The masking parameters of a training run plus a small LRU cache of recent masks.

    ``mask(epoch, window_idx, af)`` equals ``window_mask(...)`` with these parameters.
    Cached arrays are read-only (they are shared between items of a window).
    """

    seed: int = 0
    start: float = 0.3
    step: float = 0.1
    every: int = 2
    max_rate: float = 0.8
    rare_af: float = 0.05
    rare_p: float = 0.7
    cache_size: int = 256
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)

    def rate(self, epoch: int) -> float:
        return curriculum_rate(epoch, self.start, self.step, self.every, self.max_rate)

    def mask(self, epoch: int, window_idx: int, af) -> np.ndarray:
        a = np.ascontiguousarray(af, dtype=np.float64).reshape(-1)
        # The AF bytes are part of the key so one schedule shared by two panels cannot mix masks.
        key = (int(epoch), int(window_idx), a.shape[0], hash(a.tobytes()))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        m = window_mask(
            a, epoch, window_idx, self.seed, rare_af=self.rare_af, rare_p=self.rare_p, rate=self.rate(epoch)
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskSchedule:
        return cls(
            **{k: d[k] for k in ("seed", "start", "step", "every", "max_rate", "rare_af", "rare_p") if k in d}
        )
