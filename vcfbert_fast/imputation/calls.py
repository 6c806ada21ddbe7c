"""The target's calls over the panel's sites, and the calls written out at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TargetCalls:
    """Target genotypes laid over the panel's ``M`` sites (``S`` samples).

    ``calls`` int8 ``[S, 2, M]``: input alleles at typed sites, in the panel's coding (a target
    site with REF/ALT swapped has 0<->1 swapped), -1 elsewhere and at missing calls.
    ``typed`` bool ``[M]``: panel sites the target carries. ``phased_in`` bool ``[S, M]``: the input
    call was phased (True at untyped sites). ``unphased`` bool ``[S, M]``: an unphased het.
    ``model_calls(cols)``: ``calls`` with unphased hets set to -1 (unknown phase is missing for the
    model), built per window rather than kept (it would be 2 more bytes per site and target).
    """

    calls: np.ndarray
    typed: np.ndarray
    phased_in: np.ndarray
    unphased: np.ndarray

    @classmethod
    def from_alignment(
        cls, target, alignment, n_sites: int, unphased: np.ndarray, span: tuple[int, int] | None = None
    ) -> TargetCalls:
        """The calls over panel sites ``[lo, hi)`` of ``span`` (default: all ``n_sites``). A chunked
        ``impute`` builds them per chunk: over the whole chromosome they take 6 bytes per panel
        site and target, though the target carries only its typed sites (``target`` is compact)."""
        n_samp = len(target.samples)
        lo, hi = (0, n_sites) if span is None else span
        n_sites = hi - lo
        matched_t = np.flatnonzero((alignment.panel_index >= lo) & (alignment.panel_index < hi))
        matched_p = alignment.panel_index[matched_t] - lo
        typed = np.zeros(n_sites, dtype=bool)
        typed[matched_p] = True
        calls = np.full((n_samp, 2, n_sites), -1, dtype=np.int8)
        given = target.alleles[:, :, matched_t]
        swap = np.asarray(alignment.swap, dtype=bool)[matched_t] if len(alignment.swap) else None
        if swap is not None and swap.any():  # allele QC: REF/ALT swapped against the panel
            given = given.copy()
            part = given[:, :, swap]
            given[:, :, swap] = np.where(part >= 0, 1 - part, part)
        calls[:, :, matched_p] = given
        phased_in = np.ones((n_samp, n_sites), dtype=bool)
        phased_in[:, matched_p] = target.phased[:, matched_t]
        unph = np.zeros((n_samp, n_sites), dtype=bool)
        unph[:, matched_p] = unphased[:, matched_t]
        return cls(calls, typed, phased_in, unph)

    def model_calls(self, cols) -> np.ndarray:
        """int8 ``[S, 2, n]``: the calls at sites ``cols`` (a slice or indices) as the model takes
        them, unphased hets as missing."""
        return np.where(self.unphased[:, None, cols], np.int8(-1), self.calls[:, :, cols])

    @property
    def n_samples(self) -> int:
        return int(self.calls.shape[0])


@dataclass
class FinalCalls:
    """What is written per panel site and sample: ``gt`` int8 / ``hds`` float32 ``[M, S, 2]``,
    ``phased`` bool ``[M, S]``; ``unphased_het`` bool ``[M, S]``: an unphased input het, whose GP is
    ``0,1,0`` (every other GP follows from ``hds``, so the writer computes it per block: a float64
    ``[M, S, 3]`` array would be 24 bytes per genotype, the largest thing a chunk holds);
    ``filled`` int64 ``[M]``: at typed sites, the samples whose input call had a missing allele the
    model filled (0 at imputed sites)."""

    gt: np.ndarray
    hds: np.ndarray
    phased: np.ndarray
    unphased_het: np.ndarray
    filled: np.ndarray


def final_calls(hds: np.ndarray, tc: TargetCalls) -> FinalCalls:
    """Imputed sites take the model's dosages; typed sites keep the input calls.

    A typed call the model (partly) filled in (a missing allele) is written phased and counted in
    ``filled`` (INFO ``IMPFILL``: such a genotype is not an input call); an unphased het keeps
    ``0/1`` with HDS 0.5 each and GP ``0,1,0``.
    """
    typed = tc.typed
    gt = (hds > 0.5).astype(np.int8)
    phased = np.ones(hds.shape[:2], dtype=bool)
    given = tc.calls[:, :, typed].transpose(2, 0, 1)  # [Mt, S, 2]
    called = given >= 0
    t_gt, t_hds = gt[typed], hds[typed]
    t_gt[called] = given[called]
    t_hds[called] = given[called]
    t_unph = tc.unphased[:, typed].T  # [Mt, S]
    t_hds[t_unph] = 0.5
    t_ph = tc.phased_in[:, typed].T.copy()
    t_ph[~called.all(-1)] = True
    gt[typed], hds[typed], phased[typed] = t_gt, t_hds, t_ph
    filled = np.zeros(hds.shape[0], dtype=np.int64)
    filled[typed] = (~called.all(-1)).sum(axis=1)
    return FinalCalls(gt, hds, phased, tc.unphased.T, filled)  # False off the typed sites already
