"""Per-site allele and genotype frequencies of the reference panel (global and per population).

These are the model's per-site features ``af``, ``af_p``, ``ref``, ``het``, ``hom``. Compute
them on the training split only (``samples=``) so held-out samples do not leak into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .panel import Panel


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


def population_af_for_samples(freqs: SiteFrequencies, panel: Panel, sample_indices) -> np.ndarray:
    """float32 [S', M]: each listed panel sample's own population AF (global AF without populations).

    A sample whose population is absent from ``freqs`` (no training sample of it) falls
    back to the global AF.
    """
    idx = np.asarray(sample_indices, dtype=np.int64)
    if panel.populations is None or freqs.pop_af is None:
        return np.broadcast_to(freqs.af, (idx.shape[0], freqs.af.shape[0])).copy()
    lookup = {name: i for i, name in enumerate(freqs.populations)}
    table = np.concatenate([freqs.pop_af, freqs.af[None, :]], axis=0)  # last row: global fallback
    rows = np.array([lookup.get(p, len(freqs.populations)) for p in panel.populations[idx]], dtype=np.int64)
    return table[rows]
