"""Reference panel and target genotypes as compact numpy arrays.

Readers (``read_panel``, ``read_target``, ``align_target``) are added below the
dataclasses; everything downstream (windows, dataset, retrieval, imputation)
consumes only these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Panel:
    """A phased reference panel of biallelic sites on one contig.

    ``haplotypes[2*s]`` and ``haplotypes[2*s + 1]`` are sample ``s``'s two
    haplotypes (0 = REF, 1 = ALT), one column per site.
    """

    path: str
    contig: str
    positions: np.ndarray  # int64 [M], strictly increasing
    ref: np.ndarray  # object (str) [M]
    alt: np.ndarray  # object (str) [M]
    ids: np.ndarray  # object (str) [M], "." where absent
    samples: list[str]  # [S]
    haplotypes: np.ndarray  # uint8 [2S, M]
    populations: np.ndarray | None = None  # object (str) [S]
    super_populations: np.ndarray | None = None  # object (str) [S]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of records skipped

    @property
    def n_sites(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def n_haplotypes(self) -> int:
        return int(self.haplotypes.shape[0])

    def packed_bits(self) -> np.ndarray:
        """Haplotypes bit-packed along sites: uint8 [2S, ceil(M/8)], little bit order."""
        return np.packbits(self.haplotypes, axis=1, bitorder="little")


@dataclass
class Target:
    """Target genotypes (phased or not, with missing calls) at the target's own sites.

    ``alleles[s, h, j]`` is haplotype ``h`` of sample ``s`` at target site ``j``:
    0/1, or -1 for a missing call. ``phased[s, j]`` is False where the input
    genotype was unphased (heterozygous phase then unknown).
    """

    path: str
    contig: str
    positions: np.ndarray  # int64 [T]
    ref: np.ndarray  # object [T]
    alt: np.ndarray  # object [T]
    samples: list[str]
    alleles: np.ndarray  # int8 [S, 2, T]
    phased: np.ndarray  # bool [S, T]

    @property
    def n_sites(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class Alignment:
    """Target sites matched to panel sites by (contig, position, REF, ALT)."""

    panel_index: np.ndarray  # int64 [T]: panel site of each target site, -1 if none
    n_matched: int
    n_absent: int  # position not in the panel
    n_allele_mismatch: int  # position present, alleles differ (incl. swapped REF/ALT)

    def summary(self) -> str:
        return (
            f"{self.n_matched} target sites matched the panel, {self.n_absent} absent from the panel, "
            f"{self.n_allele_mismatch} with mismatched alleles"
        )
