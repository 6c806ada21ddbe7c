"""Which records become sites: the site rules every reader shares, and the rows it grows per site.

A reader hands each record's (CHROM, POS, ID, REF, ALT) to :class:`SiteTable`, which keeps
biallelic SNPs, counts the skips, and raises InputError for records a file must not hold.
Genotype rows grow beside it in a :class:`RowBuffer`; because a later record can retract a
kept site (a split multi-allelic site), the two live together here.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError

SNP_BASES = frozenset("ACGTacgt")
CHUNK = 1024  # sites per growing row-buffer chunk

# Skip reasons (keys of Panel.skipped / Target.skipped).
SKIP_MULTIALLELIC = "multiallelic"  # >1 ALT allele, or several records at one position (split multi-allelic)
SKIP_NOT_SNP = "not_snp"  # indel, MNP, symbolic (<DEL>), spanning deletion (*), non-ACGT base
SKIP_NO_ALT = "no_alt"  # ALT '.': a monomorphic reference record


def classify(ref: str, alts: list[str]) -> str | None:
    """None for a biallelic SNP, else the skip reason."""
    if len(alts) == 0 or alts == ["."]:
        return SKIP_NO_ALT
    if len(alts) > 1:
        return SKIP_MULTIALLELIC
    alt = alts[0]
    if len(ref) != 1 or len(alt) != 1 or ref not in SNP_BASES or alt not in SNP_BASES or ref == alt:
        return SKIP_NOT_SNP
    return None


class SiteTable:
    """Site bookkeeping shared by every reader: order, contig, duplicates, skips, growing arrays.

    ``add`` returns True when the record is a biallelic SNP to keep (the caller then stores
    its genotypes in row ``self.n - 1``), False for a counted skip, and raises InputError
    for records the file must not contain. Several records at one position with different
    alleles are a split multi-allelic site: all of them are skipped (the first one, already
    kept, is retracted), because keeping one would call the other ALT allele REF.
    """

    def __init__(self, path: str, role: str):
        self.path, self.role = path, role
        self.contig: str | None = None
        self.prev_pos = -1
        self.alleles_at_pos: set[tuple[str, str]] = set()
        self.multi_pos = -1  # position already marked multi-allelic
        self.positions: list[int] = []
        self.ref: list[str] = []
        self.alt: list[str] = []
        self.ids: list[str] = []
        self.skipped: dict[str, int] = {}
        self.n_records = 0

    @property
    def n(self) -> int:
        return len(self.positions)

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, chrom: str, pos: int, vid: str, ref: str, alts: list[str]) -> bool:
        self.n_records += 1
        rec = f"{chrom}:{pos}"
        if self.contig is None:
            self.contig = chrom
        elif chrom != self.contig:
            raise InputError(
                self.path,
                f"several contigs ({self.contig} and {chrom}); one {self.role} file must hold one chromosome",
                f"split by contig with bcftools view -r {self.contig}",
                record=rec,
            )
        if pos < 1:
            raise InputError(self.path, f"invalid position {pos}", "positions are 1-based", record=rec)
        if pos < self.prev_pos:
            raise InputError(
                self.path,
                f"records not sorted by position (after {chrom}:{self.prev_pos})",
                "sort it with bcftools sort",
                record=rec,
            )
        ref = ref.upper()  # VCF bases are case-insensitive; matching target to panel compares strings
        alts = [a.upper() for a in alts]
        alt_key = ",".join(alts)
        if pos == self.prev_pos:
            if (ref, alt_key) in self.alleles_at_pos:
                raise InputError(
                    self.path,
                    f"duplicate record (same position and alleles {ref}>{alt_key})",
                    "remove duplicates with bcftools norm -d exact",
                    record=rec,
                )
        else:
            self.alleles_at_pos.clear()
            self.prev_pos = pos
        self.alleles_at_pos.add((ref, alt_key))
        reason = classify(ref, alts)
        if reason in (None, SKIP_MULTIALLELIC) and self.positions and self.positions[-1] == pos:
            # a second SNP (or a multi-allelic record) at a kept SNP's position: a split
            # multi-allelic site; keeping the SNP would code the other ALT allele as REF
            self.positions.pop()
            self.ref.pop()
            self.alt.pop()
            self.ids.pop()
            self._skip(SKIP_MULTIALLELIC)
            reason = SKIP_MULTIALLELIC
        elif reason is None and self.multi_pos == pos:
            reason = SKIP_MULTIALLELIC
        if reason == SKIP_MULTIALLELIC:
            self.multi_pos = pos
        if reason is not None:
            self._skip(reason)
            return False
        self.positions.append(pos)
        self.ref.append(ref)
        self.alt.append(alts[0])
        self.ids.append(vid or ".")
        return True

    def after(self) -> str:
        """Where a parse failure sits, for an error's record field: after the last record read."""
        return f"after {self.contig}:{self.prev_pos}" if self.prev_pos > 0 else "first record"

    def finish(self) -> None:
        """Raise InputError if no site was kept; warn once with the skip counts."""
        if self.n == 0:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "no records"
            raise InputError(
                self.path,
                f"no usable biallelic SNP sites ({self.n_records} records; skipped: {detail})",
                f"give a {self.role} VCF with biallelic SNPs (bcftools view -m2 -M2 -v snps)",
            )
        if self.skipped:
            detail = ", ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
            warnings.warn(
                f"{self.path}: skipped {sum(self.skipped.values())} of {self.n_records} records ({detail}); "
                "only biallelic SNPs are used",
                stacklevel=3,
            )

    def columns(self) -> dict:
        """The kept sites as the array fields that Panel and Target share (contig, positions, ref, alt, skipped)."""
        return {
            "contig": str(self.contig),
            "positions": np.asarray(self.positions, dtype=np.int64),
            "ref": np.array(self.ref, dtype=object),
            "alt": np.array(self.alt, dtype=object),
            "skipped": dict(self.skipped),
        }


class RowBuffer:
    """Growing site-major buffer [n, width] in fixed-size chunks (no per-genotype Python work)."""

    def __init__(self, width: int, dtype=np.uint8):
        self.width, self.dtype = width, dtype
        self.chunks: list[np.ndarray] = []
        self.fill = CHUNK  # rows used in the last chunk

    def row(self) -> np.ndarray:
        if self.fill == CHUNK:
            self.chunks.append(np.empty((CHUNK, self.width), dtype=self.dtype))
            self.fill = 0
        self.fill += 1
        return self.chunks[-1][self.fill - 1]

    def pop(self) -> None:
        self.fill -= 1
        if self.fill == 0 and self.chunks:
            self.chunks.pop()
            self.fill = CHUNK

    def site_major(self, n: int) -> np.ndarray:
        if not self.chunks:
            return np.empty((0, self.width), dtype=self.dtype)
        last = self.chunks[-1][: self.fill]
        out = np.concatenate(self.chunks[:-1] + [last], axis=0) if len(self.chunks) > 1 else last
        assert out.shape[0] == n, (out.shape, n)
        return out


def hap_major(blocks: list[np.ndarray], n_sites: int, n_hap: int) -> np.ndarray:
    """[2S, M] uint8 from site-major decoded blocks [m, 2S], transposed block by block (cache friendly)."""
    out = np.empty((n_hap, n_sites), dtype=np.uint8)
    col = 0
    for b in blocks:
        m = b.shape[0]
        for r in range(0, n_hap, 256):  # 256-row slabs keep the transposed writes in cache
            out[r : r + 256, col : col + m] = b[:, r : r + 256].T
        col += m
    assert col == n_sites
    return out


def progress_bar(progress: bool, desc: str):
    """A counter of sites read (the package's one bar rule, ``progress.progress_bar``), or None when off."""
    if not progress:
        return None
    from ..progress import progress_bar as bar

    return bar(None, desc=desc, unit=" sites", unit_scale=True, mininterval=1.0)
