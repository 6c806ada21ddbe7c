"""Windows of consecutive sites and their token framing ``[SOS, a_1..a_n, EOS]``.

A window is a half-open range ``[start, end)`` of panel sites. Windows are balanced
(sizes differ by at most one) rather than ``max_sites`` windows plus a short tail, so
no window is a tiny, poorly conditioned sequence. Items are framed to ``n + 2`` tokens
and never padded to 1030: a batch drawn from one window has a single length and needs
no key padding mask (see docs/ARCHITECTURE.md).

``frame_tokens``/``frame_features`` accept numpy arrays (returning numpy) or torch
tensors (returning torch tensors on the same device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .vocab import ALLELE_0, ALLELE_1, EOS, MASK, MAX_SITES, SOS, UNK


@dataclass
class WindowLayout:
    """Half-open site ranges ``[starts[w], ends[w])`` covering ``n_sites`` panel sites in order."""

    starts: np.ndarray  # int64 [W]
    ends: np.ndarray  # int64 [W]
    max_sites: int
    overlap: int
    n_sites: int

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.int64).reshape(-1)
        self.ends = np.asarray(self.ends, dtype=np.int64).reshape(-1)
        self.max_sites = int(self.max_sites)
        self.overlap = int(self.overlap)
        self.n_sites = int(self.n_sites)
        self.validate()

    def validate(self) -> None:
        """Windows must be non-empty, at most ``max_sites`` long, ordered and cover every site."""

        def bad(problem: str) -> InputError:
            return InputError(None, f"invalid window layout: {problem}", "rebuild it with make_windows()")

        s, e = self.starts, self.ends
        if s.shape != e.shape or s.size == 0:
            raise bad(f"{s.size} starts and {e.size} ends (need the same number, at least one)")
        if np.any(e <= s):
            raise bad("an empty or reversed window")
        if np.any(e - s > self.max_sites):
            raise bad(f"a window longer than max_sites={self.max_sites}")
        if s[0] != 0 or e[-1] != self.n_sites:
            raise bad(f"windows span [{s[0]}, {e[-1]}) but the panel has {self.n_sites} sites")
        if np.any(np.diff(s) <= 0) or np.any(np.diff(e) <= 0):
            raise bad("windows out of order")
        if np.any(s[1:] > e[:-1]):
            raise bad("a gap between consecutive windows (sites not covered)")

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_windows(self) -> int:
        return len(self)

    def sites(self, w: int) -> slice:
        """Panel site range of window ``w`` as a slice (use with ``panel.haplotypes[:, sl]``)."""
        return slice(int(self.starts[w]), int(self.ends[w]))

    @property
    def sizes(self) -> np.ndarray:
        """Sites per window, int64 [W]."""
        return self.ends - self.starts

    @property
    def lengths(self) -> np.ndarray:
        """Framed token length per window (``n + 2``: SOS and EOS), int64 [W]."""
        return self.sizes + 2

    def central_window_of_site(self) -> np.ndarray:
        """For every site, the window in which it lies most centrally, int64 [n_sites].

        Score of site ``i`` in window ``[s, e)`` is ``min(i - s, e - 1 - i)`` (sites from the
        nearer edge); the window with the highest score wins, ties to the lower window index.
        Imputation stitches overlapping windows with this so each site is predicted with the
        most context on both sides.
        """
        best = np.full(self.n_sites, -1, dtype=np.int64)
        best_score = np.full(self.n_sites, -1, dtype=np.int64)
        for w in range(len(self)):
            s, e = int(self.starts[w]), int(self.ends[w])
            i = np.arange(s, e, dtype=np.int64)
            score = np.minimum(i - s, e - 1 - i)
            better = score > best_score[s:e]  # strict: the lower index keeps ties
            best[s:e][better] = w
            best_score[s:e][better] = score[better]
        return best

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and ints only, so a ``weights_only=True`` checkpoint can hold it."""
        return {
            "starts": [int(x) for x in self.starts],
            "ends": [int(x) for x in self.ends],
            "max_sites": self.max_sites,
            "overlap": self.overlap,
            "n_sites": self.n_sites,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowLayout:
        try:
            return cls(
                starts=np.asarray(d["starts"], dtype=np.int64),
                ends=np.asarray(d["ends"], dtype=np.int64),
                max_sites=int(d["max_sites"]),
                overlap=int(d["overlap"]),
                n_sites=int(d["n_sites"]),
            )
        except KeyError as exc:
            raise InputError(None, f"window layout record lacks {exc}", "save it with WindowLayout.to_dict()")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowLayout):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def make_windows(n_sites: int, max_sites: int = MAX_SITES, overlap: int = 0) -> WindowLayout:
    """Cut ``n_sites`` consecutive sites into the fewest windows of at most ``max_sites``.

    Neighbouring windows share exactly ``overlap`` sites. Sizes are balanced: with
    ``W`` windows, ``sum(sizes) = n_sites + (W - 1) * overlap`` is split evenly (sizes
    differ by at most one, larger ones first). A panel of at most ``max_sites`` sites is
    one window (no overlap needed).
    """
    n_sites, max_sites, overlap = int(n_sites), int(max_sites), int(overlap)
    if n_sites <= 0:
        raise InputError(
            None, f"no sites to cut into windows (n_sites={n_sites})", "check the panel is not empty"
        )
    if max_sites < 1:
        raise InputError(None, f"max_sites={max_sites} must be at least 1", "pass a positive max_sites")
    if not 0 <= overlap < max_sites:
        raise InputError(
            None, f"overlap={overlap} must satisfy 0 <= overlap < max_sites={max_sites}", "reduce the overlap"
        )
    if n_sites <= max_sites:
        n_win = 1
    else:
        # Smallest W with max_sites + (W - 1) * (max_sites - overlap) >= n_sites.
        n_win = 1 + -(-(n_sites - max_sites) // (max_sites - overlap))
    total = n_sites + (n_win - 1) * overlap
    base, extra = divmod(total, n_win)
    sizes = np.full(n_win, base, dtype=np.int64)
    sizes[:extra] += 1
    # start_{k+1} = end_k - overlap; since base > overlap every window advances (see tests).
    starts = np.zeros(n_win, dtype=np.int64)
    starts[1:] = np.cumsum(sizes[:-1] - overlap)
    ends = starts + sizes
    return WindowLayout(starts=starts, ends=ends, max_sites=max_sites, overlap=overlap, n_sites=n_sites)


# Lookup: allele value + 1 -> token (-1 missing -> UNK, 0 -> ALLELE_0, 1 -> ALLELE_1).
_ALLELE_LUT = np.array([UNK, ALLELE_0, ALLELE_1], dtype=np.int64)


def _check_alleles(lo: int, hi: int) -> None:
    if lo < -1 or hi > 1:
        raise InputError(
            None,
            f"allele values must be 0, 1 or -1 (missing); found range [{lo}, {hi}]",
            "pass biallelic 0/1 alleles with -1 for missing calls",
        )


def frame_tokens(alleles, mask=None):
    """Alleles ``[..., n]`` (0/1, -1 missing) -> framed tokens int64 ``[..., n + 2]``.

    ``[SOS, tok(a_1)..tok(a_n), EOS]`` with 0 -> ALLELE_0, 1 -> ALLELE_1, -1 -> UNK, and
    MASK wherever ``mask`` (bool ``[n]`` or ``[..., n]``, broadcast) is True. uint8 input
    cannot hold -1 and must be 0/1.
    """
    if isinstance(alleles, torch.Tensor):
        a = alleles.to(torch.int64)
        if a.numel():
            _check_alleles(int(a.min()), int(a.max()))
        lut = torch.as_tensor(_ALLELE_LUT, device=a.device)
        tok = lut[a + 1]
        if mask is not None:
            m = torch.as_tensor(mask, dtype=torch.bool, device=a.device)
            tok = torch.where(m, torch.full_like(tok, MASK), tok)
        out = torch.empty(tok.shape[:-1] + (tok.shape[-1] + 2,), dtype=torch.int64, device=a.device)
        out[..., 0] = SOS
        out[..., -1] = EOS
        out[..., 1:-1] = tok
        return out
    a = np.asarray(alleles).astype(np.int64, copy=False)
    if a.size:
        _check_alleles(int(a.min()), int(a.max()))
    tok = _ALLELE_LUT[a + 1]
    if mask is not None:
        tok = np.where(np.asarray(mask, dtype=bool), MASK, tok)
    out = np.empty(tok.shape[:-1] + (tok.shape[-1] + 2,), dtype=np.int64)
    out[..., 0] = SOS
    out[..., -1] = EOS
    out[..., 1:-1] = tok
    return out


def frame_features(values):
    """Per-site values ``[..., n]`` -> float32 ``[..., n + 2]`` with 0 at SOS and EOS."""
    if isinstance(values, torch.Tensor):
        v = values.to(torch.float32)
        out = torch.zeros(v.shape[:-1] + (v.shape[-1] + 2,), dtype=torch.float32, device=v.device)
        out[..., 1:-1] = v
        return out
    v = np.asarray(values, dtype=np.float32)
    out = np.zeros(v.shape[:-1] + (v.shape[-1] + 2,), dtype=np.float32)
    out[..., 1:-1] = v
    return out


def frame_labels(alleles):
    """Alleles ``[..., n]`` (0/1, -1 missing) -> int64 ``[..., n + 2]`` labels, -100 at SOS/EOS/missing."""
    if isinstance(alleles, torch.Tensor):
        a = alleles.to(torch.int64)
        a = torch.where(a < 0, torch.full_like(a, -100), a)
        out = torch.full(a.shape[:-1] + (a.shape[-1] + 2,), -100, dtype=torch.int64, device=a.device)
        out[..., 1:-1] = a
        return out
    a = np.asarray(alleles).astype(np.int64, copy=False)
    out = np.full(a.shape[:-1] + (a.shape[-1] + 2,), -100, dtype=np.int64)
    out[..., 1:-1] = np.where(a < 0, -100, a)
    return out


def scaled_positions(positions) -> np.ndarray:
    """Base-pair positions of one window, min-max scaled to [0, 1] (float32); one site -> 0."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return np.zeros(0, dtype=np.float32)
    lo, hi = p.min(), p.max()
    if hi <= lo:
        return np.zeros(p.shape, dtype=np.float32)
    return ((p - lo) / (hi - lo)).astype(np.float32)


SITE_FEATURES = ("af", "ref", "het", "hom")  # per-site panel frequencies the model reads


def window_features(positions, freqs: Any, sl: slice, names=SITE_FEATURES) -> dict[str, np.ndarray]:
    """Framed per-site features of one window: ``pos`` (min-max scaled) and ``names`` from ``freqs``.

    float32 ``[n + 2]`` each, 0 at SOS/EOS: the one definition the dataset, the retrievers and
    imputation share. ``freqs`` is a ``SiteFrequencies`` (or anything with those arrays).
    """
    out = {"pos": frame_features(scaled_positions(np.asarray(positions)[sl]))}
    for name in names:
        out[name] = frame_features(np.asarray(getattr(freqs, name), dtype=np.float32)[sl])
    return out
