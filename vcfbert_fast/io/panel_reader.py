"""The reference panel as compact numpy arrays: :class:`Panel` and :func:`read_panel`.

Everything downstream (windows, dataset, retrieval, imputation) consumes only these arrays.
``read_panel`` picks an engine (the numpy text engine where it applies, cyvcf2 otherwise)
and applies the checks common to both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .checks import check_file
from .panel_cyvcf2 import read_panel_cyvcf2
from .panel_text import Fallback, read_panel_text
from .populations import read_panel_file


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


def read_panel(
    path: str | os.PathLike,
    panel_file: str | os.PathLike | None = None,
    population_column: int = 1,
    super_population_column: int | None = 2,
    progress: bool = True,
    engine: str = "auto",
) -> Panel:
    """Read a phased reference panel (VCF or BCF, bgzipped or plain) of one contig.

    Keeps biallelic SNPs; multi-allelic records (incl. split ones sharing a position),
    indels/symbolic alleles and ALT='.' records are skipped and counted in
    ``Panel.skipped`` (one warning with the counts). Raises InputError (one line: file,
    record, problem, fix) for: a missing/empty/non-VCF/truncated file, no samples,
    unphased, missing, haploid or polyploid genotypes, duplicate or unsorted records,
    several contigs, zero usable sites.

    ``panel_file``: optional sample -> population table (see :func:`read_panel_file`).
    ``engine``: ``"auto"`` (numpy fast path for plain 'GT'-only VCF text, falling back to
    cyvcf2 for anything else), ``"cyvcf2"`` (reference path) or ``"text"`` (fast path only;
    raises RuntimeError where it would fall back; for tests).
    """
    path = str(path)
    kind, compressed = check_file(path, "reference panel")
    result = None
    if kind == "vcf" and engine in ("auto", "text"):
        try:
            result = read_panel_text(path, compressed, progress)
        except Fallback:
            if engine == "text":
                raise RuntimeError(f"{path}: the fast text reader cannot handle this file") from None
    elif engine == "text":
        raise RuntimeError(f"{path}: the fast text reader reads VCF text only")
    if result is None:
        result = read_panel_cyvcf2(path, progress)
    sites, samples, haplotypes = result
    if len(set(samples)) != len(samples):
        dup = next(s for s in samples if samples.count(s) > 1)
        raise InputError(
            path, f"sample {dup} appears twice in the header", "rename or drop one (bcftools view -s)"
        )
    sites.finish()
    pops = sups = None
    if panel_file is not None:
        pops, sups = read_panel_file(panel_file, samples, population_column, super_population_column)
    return Panel(
        path=path,
        ids=np.array(sites.ids, dtype=object),
        samples=samples,
        haplotypes=haplotypes,
        populations=pops,
        super_populations=sups,
        **sites.columns(),
    )
