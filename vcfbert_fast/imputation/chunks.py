"""Chunks of a chromosome for ``impute``: core ranges with buffers, and the run's inputs cut to one.

As Beagle (40 cM windows, 2 cM overlap) and minimac4 (20 Mb chunks, 3 Mb overlap) do it: the
panel's sites are cut into cores of ``chunk_mb`` megabases; a chunk reads its core plus
``buffer_mb`` on each side (so windows, PBWT matches and the model see context across the core's
edges) and writes only its core. Every panel site lies in exactly one core, so the chunks' outputs
concatenate into the whole file. ``--region`` limits the cores to a range of positions.

Everything per site is sliced (panel columns are views, not copies); frequencies, windows and the
PBWT index are rebuilt per chunk over its span, exactly as a whole-chromosome run builds them over
the chromosome. A single chunk spanning the panel is the unchunked run.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .calls import FinalCalls, TargetCalls

__all__ = [
    "AUTO",
    "Chunk",
    "auto_chunk_mb",
    "parse_region",
    "plan_chunks",
    "slice_calls",
    "slice_final",
    "slice_panel",
]

AUTO = "auto"  # --chunk-mb auto (the default): cores sized by the genotype budget below
# Sites x targets one chunk's span may hold under --chunk-mb auto. A chunk holds ~14 bytes per
# genotype of its span (HDS 8, the target's calls and flags 4, the donors ~2; BENCHMARKS.md
# "Chromosome scale"), so ~2 GB, beside the panel's 1 byte per haplotype x site.
CHUNK_GENOTYPES = 150_000_000
MIN_AUTO_CHUNK_MB = 1.0  # below this the buffers' repeated work would outweigh the cores'

_REGION = re.compile(r"^(?P<chrom>[^:\s]+)(?::(?P<start>[\d,]+)?-(?P<end>[\d,]+)?)?$")


@dataclass(frozen=True)
class Chunk:
    """One unit of work: panel sites ``[span[0], span[1])`` are read, ``[core[0], core[1])`` written.

    ``bp`` is the core's position range ``[start, end)``: target records the panel lacks are
    passed through by the chunk whose ``bp`` holds their position.
    """

    index: int
    n_chunks: int
    core: tuple[int, int]
    span: tuple[int, int]
    bp: tuple[int, int]

    @property
    def name(self) -> str:
        return f"chunk-{self.index + 1:05d}-of-{self.n_chunks:05d}"

    def describe(self, contig: str) -> str:
        return f"{self.name} {contig}:{self.bp[0]}-{self.bp[1] - 1} ({self.core[1] - self.core[0]} sites)"


def parse_region(text: str | None) -> tuple[str, int, int] | None:
    """``CHR``, ``CHR:START-END``, ``CHR:START-`` or ``CHR:-END`` (1-based, inclusive) -> ``(chr, start, end)``."""
    if text is None:
        return None
    m = _REGION.match(text.strip())
    if not m:
        raise InputError(None, f"--region {text!r} is not CHR:START-END", "e.g. --region 20:1000000-2000000")
    start = int(m["start"].replace(",", "")) if m["start"] else 1
    end = int(m["end"].replace(",", "")) if m["end"] else 2**62
    if start < 1 or end < start:
        raise InputError(
            None, f"--region {text!r}: START must be >= 1 and <= END", "e.g. --region 20:1-5000000"
        )
    return m["chrom"], start, end


def _same_contig(a: str, b: str) -> bool:
    def strip(c: str) -> str:
        return c[3:] if c.lower().startswith("chr") else c

    return strip(a) == strip(b)


def auto_chunk_mb(
    positions: np.ndarray,
    n_targets: int,
    region: tuple[str, int, int] | None = None,
    buffer_mb: float = 2.0,
    budget: int = CHUNK_GENOTYPES,
) -> float | None:
    """``--chunk-mb auto``: None (one chunk) when the region's sites x targets fit ``budget``; else
    equal cores, as few as keep a span (core + two buffers, at the region's mean site density)
    within it, and never under ``MIN_AUTO_CHUNK_MB``. More targets, shorter chunks: peak memory is
    set by the chunk, not by the chromosome."""
    pos = np.asarray(positions, dtype=np.int64)
    if region is not None:
        pos = pos[(pos >= region[1]) & (pos <= region[2])]
    if pos.size == 0 or pos.size * max(1, n_targets) <= budget:
        return None
    length = int(pos[-1]) + 1 - int(pos[0])  # bp
    per_mb = pos.size / (length / 1e6)
    core = budget / max(1, n_targets) / per_mb - 2 * buffer_mb
    if core < MIN_AUTO_CHUNK_MB:  # at the floor: as many cores of at least the floor as fit
        n = max(1, int(length // (MIN_AUTO_CHUNK_MB * 1e6)))
    else:
        n = int(np.ceil(length / (core * 1e6)))
    return -(-length // n) / 1e6  # bp per core, rounded up so that n cores cover the region


def plan_chunks(
    positions: np.ndarray,
    contig: str,
    region: tuple[str, int, int] | None = None,
    chunk_mb: float | None = None,
    buffer_mb: float = 2.0,
) -> list[Chunk]:
    """Cores of ``chunk_mb`` Mb over the panel's ``positions`` (within ``region``), each with its buffer.

    ``chunk_mb=None``: one core over the whole region. Cores without a panel site are dropped.
    """
    pos = np.asarray(positions, dtype=np.int64)
    if buffer_mb < 0 or (chunk_mb is not None and chunk_mb <= 0):
        raise InputError(
            None, f"--chunk-mb {chunk_mb} / --buffer-mb {buffer_mb}", "use --chunk-mb > 0, --buffer-mb >= 0"
        )
    lo_bp, hi_bp = int(pos[0]), int(pos[-1]) + 1
    if region is not None:
        chrom, start, end = region
        if not _same_contig(chrom, contig):
            raise InputError(
                None,
                f"--region {chrom} is not the panel's contig {contig}",
                f"use --region {contig}:START-END",
            )
        lo_bp, hi_bp = max(lo_bp, start), min(hi_bp, end + 1)
        if not np.any((pos >= start) & (pos <= end)):
            raise InputError(
                None,
                f"--region {chrom}:{start}-{end} holds no panel site (the panel spans {pos[0]}-{pos[-1]})",
                "pick a region inside the panel",
            )
    step = hi_bp - lo_bp if chunk_mb is None else max(1, round(chunk_mb * 1e6))
    buf = round(buffer_mb * 1e6)
    edges = list(range(lo_bp, hi_bp, step)) + [hi_bp]
    cores = []
    for a_bp, b_bp in itertools.pairwise(edges):
        a, b = np.searchsorted(pos, [a_bp, b_bp])
        if b > a:
            cores.append(((int(a), int(b)), (a_bp, b_bp)))
    out = []
    for i, (core, bp) in enumerate(cores):
        s0, s1 = np.searchsorted(pos, [bp[0] - buf, bp[1] + buf])
        out.append(Chunk(i, len(cores), core, (int(s0), int(s1)), bp))
    return out


def slice_panel(panel, lo: int, hi: int):
    """The panel restricted to sites ``[lo, hi)``: per-site arrays sliced, haplotype columns a view."""
    sl = slice(lo, hi)
    return dataclasses.replace(
        panel,
        positions=panel.positions[sl],
        ref=panel.ref[sl],
        alt=panel.alt[sl],
        ids=panel.ids[sl],
        haplotypes=panel.haplotypes[:, sl],
    )


def slice_calls(tc: TargetCalls, lo: int, hi: int) -> TargetCalls:
    """``tc`` restricted to panel sites ``[lo, hi)`` (views of its typed arrays, no copies)."""
    a, b = np.searchsorted(tc.typed_sites, [lo, hi])
    return TargetCalls(
        tc.typed[lo:hi],
        tc.typed_sites[a:b] - lo,
        tc.typed_calls[:, :, a:b],
        tc.typed_phased[:, a:b],
        tc.typed_unphased[:, a:b],
    )


def slice_final(fc: FinalCalls, a: int, b: int) -> FinalCalls:
    """Final calls of sites ``[a, b)`` (of the sites ``fc`` holds)."""
    sl = slice(a, b)
    return FinalCalls(fc.gt[sl], fc.hds[sl], fc.phased[sl], fc.unphased_het[sl], fc.filled[sl])
