"""The target's calls over the panel's sites, and the calls written out at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TargetCalls:
    """Target genotypes laid over the panel's ``M`` sites (``S`` samples), kept at the typed ones.

    ``typed`` bool ``[M]``: panel sites the target carries; ``typed_sites`` int64 ``[Mt]``: their
    indices, sorted. At those sites: ``typed_calls`` int8 ``[S, 2, Mt]``, the input alleles in the
    panel's coding (a target site with REF/ALT swapped has 0<->1 swapped), -1 at missing calls;
    ``typed_phased`` bool ``[S, Mt]``: the input call was phased; ``typed_unphased`` bool ``[S, Mt]``:
    an unphased het. Array data types ~1 site in 15: laid densely over every site of a chunk's span
    these would be 4 bytes per site and target (0.45 GB at 1,000 targets x 112k sites), so the
    dense views a window needs (``calls``, ``model_calls``, ``unphased``) are built per call.
    """

    typed: np.ndarray
    typed_sites: np.ndarray
    typed_calls: np.ndarray
    typed_phased: np.ndarray
    typed_unphased: np.ndarray

    @classmethod
    def from_alignment(
        cls, target, alignment, n_sites: int, unphased: np.ndarray, span: tuple[int, int] | None = None
    ) -> TargetCalls:
        """The calls over panel sites ``[lo, hi)`` of ``span`` (default: all ``n_sites``)."""
        lo, hi = (0, n_sites) if span is None else span
        matched_t = np.flatnonzero((alignment.panel_index >= lo) & (alignment.panel_index < hi))
        matched_t = matched_t[np.argsort(alignment.panel_index[matched_t], kind="stable")]
        sites = (alignment.panel_index[matched_t] - lo).astype(np.int64)
        if sites.size > 1 and not (np.diff(sites) > 0).all():  # align_target keeps one record per site
            raise ValueError("two target records are aligned to one panel site")
        typed = np.zeros(hi - lo, dtype=bool)
        typed[sites] = True
        given = target.alleles[:, :, matched_t]  # a copy (fancy indexing)
        swap = np.asarray(alignment.swap, dtype=bool)[matched_t] if len(alignment.swap) else None
        if swap is not None and swap.any():  # allele QC: REF/ALT swapped against the panel
            part = given[:, :, swap]
            given[:, :, swap] = np.where(part >= 0, 1 - part, part)
        return cls(typed, sites, given.astype(np.int8), target.phased[:, matched_t], unphased[:, matched_t])

    @property
    def n_samples(self) -> int:
        return int(self.typed_calls.shape[0])

    def _at(self, cols) -> tuple[np.ndarray, np.ndarray, int]:
        """``(positions in cols, columns of typed_*, n)`` of the typed sites among ``cols``."""
        idx = np.arange(self.typed.size)[cols] if isinstance(cols, slice) else np.asarray(cols, dtype=np.int64)
        at, j = _find(self.typed_sites, idx)
        return at, j, int(idx.size)

    def calls(self, cols) -> np.ndarray:
        """int8 ``[S, 2, n]``: the input calls at sites ``cols`` (a slice or indices), -1 untyped."""
        at, j, n = self._at(cols)
        out = np.full((self.n_samples, 2, n), -1, dtype=np.int8)
        out[:, :, at] = self.typed_calls[:, :, j]
        return out

    def model_calls(self, cols) -> np.ndarray:
        """``calls(cols)`` as the model takes them: unphased hets as missing."""
        at, j, n = self._at(cols)
        out = np.full((self.n_samples, 2, n), -1, dtype=np.int8)
        out[:, :, at] = np.where(self.typed_unphased[:, None, j], np.int8(-1), self.typed_calls[:, :, j])
        return out

    def unphased(self, cols) -> np.ndarray:
        """bool ``[S, n]``: unphased input hets at sites ``cols``."""
        at, j, n = self._at(cols)
        out = np.zeros((self.n_samples, n), dtype=bool)
        out[:, at] = self.typed_unphased[:, j]
        return out


def _find(rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(at, j)``: the positions in ``idx`` whose value is in the sorted ``rows``, and where in ``rows``."""
    j = np.searchsorted(rows, idx)
    hit = j < rows.size
    hit[hit] = rows[j[hit]] == idx[hit]
    return np.flatnonzero(hit), j[hit]


class TypedOverlay:
    """Per-site calls ``[M, S, ...]`` that follow a rule except at the typed sites, stored only there.

    ``base(rows)`` gives the rule's values at site indices ``rows``; ``rows`` (sorted int64
    ``[Mt]``) are the sites whose ``values`` ``[Mt, S, ...]`` are kept. Indexed like the dense array
    it stands for: an index array gives the dense rows, a slice gives the overlay of those sites.
    At 1 typed site in 15, it takes a fifteenth of the dense array (3 bytes per site and target
    for GT and phase at 1,000 targets x 112k sites: 0.33 GB).
    """

    def __init__(self, n_sites: int, base, rows: np.ndarray, values: np.ndarray, offset: int = 0):
        self.n_sites, self.base, self.rows, self.values, self.offset = n_sites, base, rows, values, offset

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_sites, *self.values.shape[1:])

    def __len__(self) -> int:
        return self.n_sites

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, step = key.indices(self.n_sites)
            if step != 1:
                raise IndexError("a TypedOverlay takes slices with step 1 only")
            lo, hi = np.searchsorted(self.rows, [a, b])
            return TypedOverlay(b - a, self.base, self.rows[lo:hi] - a, self.values[lo:hi], self.offset + a)
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        out = self.base(idx + self.offset)
        at, j = _find(self.rows, idx)
        out[at] = self.values[j]
        return out

    def dense(self) -> np.ndarray:
        return self[np.arange(self.n_sites)]


@dataclass
class FinalCalls:
    """What is written per panel site and sample: ``hds`` float32 ``[M, S, 2]``; ``gt`` (int8
    ``[M, S, 2]``) and ``phased`` (bool ``[M, S]``) as :class:`TypedOverlay`: at imputed sites GT is
    ``hds > 0.5`` and phased, so only the typed sites' are stored; ``unphased_het`` (bool ``[M, S]``,
    a :class:`TypedOverlay` too, False at imputed sites): an unphased input het, whose GP is ``0,1,0`` (every other GP follows from ``hds``, so the writer
    computes it per block: a float64 ``[M, S, 3]`` array would be 24 bytes per genotype);
    ``filled`` int64 ``[M]``: at typed sites, the samples whose input call had a missing allele the
    model filled (0 at imputed sites)."""

    gt: TypedOverlay
    hds: np.ndarray
    phased: TypedOverlay
    unphased_het: TypedOverlay
    filled: np.ndarray


def final_calls(hds: np.ndarray, tc: TargetCalls) -> FinalCalls:
    """Imputed sites take the model's dosages; typed sites keep the input calls.

    A typed call the model (partly) filled in (a missing allele) is written phased and counted in
    ``filled`` (INFO ``IMPFILL``: such a genotype is not an input call); an unphased het keeps
    ``0/1`` with HDS 0.5 each and GP ``0,1,0``.
    """
    typed, n, n_samp = tc.typed_sites, hds.shape[0], hds.shape[1]
    given = tc.typed_calls.transpose(2, 0, 1)  # [Mt, S, 2]
    called = given >= 0
    t_unph = tc.typed_unphased.T  # [Mt, S]
    t_hds = hds[typed]
    t_gt = np.where(called, given, (t_hds > 0.5).astype(np.int8))
    t_hds[called] = given[called]
    t_hds[t_unph] = 0.5
    t_ph = tc.typed_phased.T.copy()
    t_ph[~called.all(-1)] = True
    hds[typed] = t_hds
    filled = np.zeros(n, dtype=np.int64)
    filled[typed] = (~called.all(-1)).sum(axis=1)
    gt = TypedOverlay(n, lambda rows: (hds[rows] > 0.5).astype(np.int8), typed, t_gt)
    phased = TypedOverlay(n, lambda rows: np.ones((rows.size, n_samp), dtype=bool), typed, t_ph)
    unphased_het = TypedOverlay(n, lambda rows: np.zeros((rows.size, n_samp), dtype=bool), typed, t_unph)
    return FinalCalls(gt, hds, phased, unphased_het, filled)
