"""Per-site allele and genotype frequencies of the reference panel (global and per population).

These are the model's per-site features ``af``, ``af_p``, ``ref``, ``het``, ``hom``. Compute
them on the training split only (``samples=``) so held-out samples do not leak into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .io import Panel


@dataclass
class SiteFrequencies:
    af: np.ndarray  # float32 [M]: ALT allele frequency over the chosen samples' haplotypes
    ref: np.ndarray  # float32 [M]: fraction of samples homozygous REF
    het: np.ndarray  # float32 [M]: fraction heterozygous
    hom: np.ndarray  # float32 [M]: fraction homozygous ALT
    populations: list[str] = field(default_factory=list)  # [P], sorted
    pop_af: np.ndarray | None = None  # float32 [P, M]; NaN-free (0 where a population has no sample)
    super_populations: list[str] = field(default_factory=list)  # [Q], sorted
    super_pop_af: np.ndarray | None = None  # float32 [Q, M]
    sample_indices: np.ndarray | None = None  # int64 [S'] the samples counted (None: all)


def _group_af(h0: np.ndarray, h1: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    names = sorted(set(labels.tolist()))
    out = np.zeros((len(names), h0.shape[1]), dtype=np.float32)
    for i, name in enumerate(names):
        rows = np.flatnonzero(labels == name)
        alt = h0[rows].sum(axis=0, dtype=np.int64) + h1[rows].sum(axis=0, dtype=np.int64)
        out[i] = alt / (2.0 * rows.shape[0])
    return names, out


def compute_frequencies(panel: Panel, samples: np.ndarray | list[int] | None = None) -> SiteFrequencies:
    """Frequencies over all panel samples, or only over sample indices ``samples`` (e.g. the training split)."""
    idx = None if samples is None else np.asarray(samples, dtype=np.int64)
    if idx is not None and idx.size == 0:
        raise ValueError("compute_frequencies: empty sample subset")
    h0 = panel.haplotypes[0::2]  # [S, M] views, no copy
    h1 = panel.haplotypes[1::2]
    if idx is not None:
        h0, h1 = h0[idx], h1[idx]
    n = h0.shape[0]
    n_alt = h0.sum(axis=0, dtype=np.int64) + h1.sum(axis=0, dtype=np.int64)
    n_hom = np.bitwise_and(h0, h1).sum(axis=0, dtype=np.int64)
    n_het = n_alt - 2 * n_hom
    freqs = SiteFrequencies(
        af=(n_alt / (2.0 * n)).astype(np.float32),
        ref=((n - n_het - n_hom) / n).astype(np.float32),
        het=(n_het / n).astype(np.float32),
        hom=(n_hom / n).astype(np.float32),
        sample_indices=idx,
    )
    if panel.populations is not None:
        labels = panel.populations if idx is None else panel.populations[idx]
        freqs.populations, freqs.pop_af = _group_af(h0, h1, np.asarray(labels))
    if panel.super_populations is not None:
        labels = panel.super_populations if idx is None else panel.super_populations[idx]
        freqs.super_populations, freqs.super_pop_af = _group_af(h0, h1, np.asarray(labels))
    return freqs


def population_af_rows(freqs: SiteFrequencies, populations) -> tuple[np.ndarray, np.ndarray, int]:
    """Population AF of samples given by their population labels, with the global-AF fallback.

    Returns ``(table float32 [P + 1, M], rows int64 [S], n_fallback)``: sample ``s`` reads
    ``table[rows[s]]``. The last table row is the global AF, used by samples whose population
    has no row in ``freqs`` (no training sample of it, unlabelled, or no populations at all).
    The one place this rule lives: training items, validation and imputation all use it.
    """
    labels = [] if populations is None else [str(p) for p in populations]
    af = np.asarray(freqs.af, dtype=np.float32)
    pop_af, names = getattr(freqs, "pop_af", None), getattr(freqs, "populations", None)
    if pop_af is None or names is None or not len(names):
        return af[None, :], np.zeros(len(labels), dtype=np.int64), len(labels)
    lookup = {str(name): i for i, name in enumerate(names)}
    fallback = len(names)
    table = np.concatenate([np.asarray(pop_af, dtype=np.float32), af[None, :]], axis=0)
    rows = np.array([lookup.get(p, fallback) for p in labels], dtype=np.int64)
    return table, rows, int((rows == fallback).sum())


def population_af_for_samples(freqs: SiteFrequencies, panel: Panel, sample_indices) -> np.ndarray:
    """float32 [S', M]: each listed panel sample's own population AF (global AF without populations)."""
    idx = np.asarray(sample_indices, dtype=np.int64)
    labels = None if panel.populations is None else panel.populations[idx]
    table, rows, _ = population_af_rows(freqs, labels if labels is not None else [""] * idx.size)
    return table[rows]
