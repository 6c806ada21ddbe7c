"""Reference panel and target genotypes as compact numpy arrays.

Readers (``read_panel``, ``read_target``, ``align_target``) are added below the
dataclasses; everything downstream (windows, dataset, retrieval, imputation)
consumes only these arrays.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError


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
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of records skipped

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


# ----------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------

# The 28-byte empty BGZF block every complete bgzip/BCF file ends with (SAM/BAM spec, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_SNP_BASES = frozenset("ACGTacgt")
_CHUNK = 1024  # sites per growing haplotype buffer chunk

# Skip reasons (keys of Panel.skipped / Target.skipped).
SKIP_MULTIALLELIC = "multiallelic"  # >1 ALT allele, or several records at one position (split multi-allelic)
SKIP_NOT_SNP = "not_snp"  # indel, MNP, symbolic (<DEL>), spanning deletion (*), non-ACGT base
SKIP_NO_ALT = "no_alt"  # ALT '.': a monomorphic reference record


class _Fallback(Exception):
    """The fast text path met something it does not handle; rerun with the cyvcf2 reference path."""


def _verify_gzip_stream(path: str | os.PathLike) -> None:
    """Decompress a plain (non-BGZF) gzip file to its end: htslib reads a truncated one without complaint."""
    try:
        with gzip.open(path, "rb") as g:
            while g.read(1 << 24):
                pass
    except (OSError, EOFError) as exc:
        raise InputError(
            path, f"truncated or corrupt gzip file ({exc})", "re-download or re-create it (bgzip)"
        ) from None


def _check_file(path: str | os.PathLike, role: str, verify_gzip: bool = False) -> tuple[str, bool]:
    """Validate that ``path`` looks like a complete VCF/BCF; return (kind 'vcf'|'bcf', compressed).

    Catches what htslib reports badly or not at all: a missing or empty file, text that
    is not a VCF, and a truncated BGZF file (htslib only warns about the missing EOF block
    and silently returns the records before the cut).
    """
    p = Path(path)
    fix_kind = f"give a {role} VCF/BCF file"
    if not p.exists():
        raise InputError(path, "no such file", f"check the path; {fix_kind}")
    if p.is_dir():
        raise InputError(path, "is a directory, not a file", fix_kind)
    size = p.stat().st_size
    if size == 0:
        raise InputError(path, "file is empty", f"{fix_kind} with a header and records")
    with open(p, "rb") as fh:
        head = fh.read(18)
    compressed = head[:2] == b"\x1f\x8b"
    if compressed:
        is_bgzf = len(head) >= 16 and bool(head[3] & 4) and head[12:14] == b"BC"
        if not is_bgzf and verify_gzip:
            _verify_gzip_stream(path)
        if is_bgzf:
            with open(p, "rb") as fh:
                fh.seek(max(0, size - len(_BGZF_EOF)))
                if fh.read() != _BGZF_EOF:
                    raise InputError(
                        path,
                        "truncated BGZF file (end-of-file block missing: incomplete download or copy?)",
                        "re-download or re-create the file (bgzip/bcftools) and its index",
                    )
        try:
            with gzip.open(p, "rb") as g:
                first = g.read(16)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(path, f"cannot decompress ({exc})", "re-create the file with bgzip") from None
    else:
        first = head[:16]
    if first.startswith(b"BCF\x02"):
        return "bcf", compressed
    if first.startswith(b"##fileformat=VCF"):
        return "vcf", compressed
    raise InputError(
        path,
        "not a VCF or BCF file (it does not start with '##fileformat=VCF')",
        f"{fix_kind} (bgzipped or plain)",
    )


# A sample column whose GT token (text up to the first ':') is not allele(s) joined by '|' or '/'.
# htslib reports most such tokens, but after an undefined contig it can crash instead.
_BAD_GT = re.compile(rb"\t(?!(?:[0-9]+|\.)(?:[|/](?:[0-9]+|\.))*(?::|\t|$))")


def _scan_text_structure(path: str, compressed: bool) -> None:
    """Check every data line of VCF text: the header's column count, non-empty fixed fields, GT tokens.

    htslib accepts short or ragged lines and odd GT text and hands cyvcf2 half-initialised
    records (reading one can crash the process: found by tests/test_vcf_fuzz.py), so text
    goes through this scan (a tab count, a split of the fixed columns and one regex per
    line) before cyvcf2 sees it.
    """
    opener = gzip.open if compressed else open
    n_cols = None
    contig = None
    pending = b""
    lineno = 0

    def bad(line: bytes, problem: str, fix: str = "check the file with bcftools view") -> InputError:
        f = line.split(b"\t", 2)
        rec = f"{f[0].decode(errors='replace')}:{f[1].decode(errors='replace')}" if len(f) > 2 else None
        return InputError(path, problem, fix, record=rec or f"line {lineno}")

    try:
        with opener(path, "rb") as fh:
            while True:
                data = fh.read(1 << 24)
                if data:
                    lines = (pending + data).split(b"\n")
                    pending = lines.pop()
                else:  # end of file: a last line without its newline
                    lines, pending = ([pending] if pending else []), b""
                for line in lines:
                    lineno += 1
                    if line.startswith(b"##"):
                        continue
                    line = line.rstrip(b"\r")
                    if line.startswith(b"#"):
                        if n_cols is None and line.startswith(b"#CHROM"):
                            n_cols = line.count(b"\t") + 1
                            if n_cols < 8:
                                raise bad(line, f"header line has {n_cols} columns, VCF needs at least 8")
                        continue
                    if n_cols is None:
                        raise InputError(
                            path, "no #CHROM header line before the records", "add the VCF header"
                        )
                    if not line:
                        raise bad(line, "empty line among the records")
                    cols = line.count(b"\t") + 1
                    if cols != n_cols:
                        raise bad(
                            line, f"{cols} columns, the header has {n_cols} (truncated or corrupt line?)"
                        )
                    parts = line.split(b"\t", 9)
                    if any(not f for f in parts[:9]):
                        raise bad(line, "empty field among the first 9 columns")
                    if not parts[1].isdigit() or not 0 < int(parts[1]) < 2**31:
                        raise bad(line, f"invalid position {parts[1].decode(errors='replace')!r}")
                    if contig is None:
                        contig = parts[0]
                    elif parts[0] != contig:
                        raise bad(
                            line,
                            f"several contigs ({contig.decode(errors='replace')} and "
                            f"{parts[0].decode(errors='replace')}); one file must hold one chromosome",
                            f"split by contig with bcftools view -r {contig.decode(errors='replace')}",
                        )
                    if len(parts) == 10:
                        if not parts[8].startswith(b"GT") or parts[8][2:3] not in (b"", b":"):
                            raise bad(line, "GT is not the first FORMAT field", "give phased GT genotypes")
                        gts = b"\t" + parts[9]
                        if _BAD_GT.search(gts):
                            raise bad(
                                line, "malformed GT value (allowed: allele numbers or '.' joined by | or /)"
                            )
                if not data:
                    break
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot read ({exc})", "re-create the file (bgzip)") from None
    if n_cols is None:
        raise InputError(path, "no #CHROM header line", "give a VCF with a complete header")


def _classify(ref: str, alts: list[str]) -> str | None:
    """None for a biallelic SNP, else the skip reason."""
    if len(alts) == 0 or alts == ["."]:
        return SKIP_NO_ALT
    if len(alts) > 1:
        return SKIP_MULTIALLELIC
    alt = alts[0]
    if len(ref) != 1 or len(alt) != 1 or ref not in _SNP_BASES or alt not in _SNP_BASES or ref == alt:
        return SKIP_NOT_SNP
    return None


class _Sites:
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
        reason = _classify(ref, alts)
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

    def finish(self) -> None:
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


class _HapBuffer:
    """Growing site-major uint8 buffer [n, width] in fixed-size chunks (no per-genotype Python work)."""

    def __init__(self, width: int, dtype=np.uint8):
        self.width, self.dtype = width, dtype
        self.chunks: list[np.ndarray] = []
        self.fill = _CHUNK  # rows used in the last chunk

    def row(self) -> np.ndarray:
        if self.fill == _CHUNK:
            self.chunks.append(np.empty((_CHUNK, self.width), dtype=self.dtype))
            self.fill = 0
        self.fill += 1
        return self.chunks[-1][self.fill - 1]

    def pop(self) -> None:
        self.fill -= 1
        if self.fill == 0 and self.chunks:
            self.chunks.pop()
            self.fill = _CHUNK

    def site_major(self, n: int) -> np.ndarray:
        if not self.chunks:
            return np.empty((0, self.width), dtype=self.dtype)
        last = self.chunks[-1][: self.fill]
        out = np.concatenate(self.chunks[:-1] + [last], axis=0) if len(self.chunks) > 1 else last
        assert out.shape[0] == n, (out.shape, n)
        return out


def _gt_problem(g: np.ndarray, samples: list[str], allow_missing: bool, require_phased: bool) -> str | None:
    """Describe the first bad genotype of one record's ``genotype.array()`` ([S, ploidy+1] int16)."""
    if g.shape[1] == 2:
        return f"haploid genotype for sample {samples[0]}"
    if g.shape[1] > 3:
        bad = np.flatnonzero(g[:, 2] != -2)
        s = samples[int(bad[0])] if bad.size else samples[0]
        return f"polyploid genotype ({g.shape[1] - 1} alleles) for sample {s}"
    a = g[:, :2]
    if not allow_missing:
        miss = np.flatnonzero((a == -1).any(axis=1))
        if miss.size:
            return f"missing genotype for sample {samples[int(miss[0])]}"
    hap = np.flatnonzero((a[:, 1] == -2) & (a[:, 0] != -1))  # '.' alone is a missing call, not haploid
    if hap.size:
        return f"haploid genotype for sample {samples[int(hap[0])]}"
    big = np.flatnonzero((a > 1).any(axis=1) | (a[:, 0] < -1))
    if big.size:
        return f"allele index {int(a[big[0]].max())} out of range for sample {samples[int(big[0])]}"
    if require_phased:
        unph = np.flatnonzero(g[:, 2] == 0)
        if unph.size:
            return f"unphased genotype for sample {samples[int(unph[0])]}"
    return None


def _open_cyvcf2(path: str, role: str, samples: list[str] | None = None):
    import cyvcf2  # lazy: heavy, and absent on the GPU machine

    try:
        vcf = cyvcf2.VCF(str(path), samples=samples, gts012=False, strict_gt=False, threads=2)
    except Exception as exc:  # noqa: BLE001  (htslib failures surface as bare Exception/OSError)
        raise InputError(path, f"cannot open as VCF/BCF ({exc})", f"give a valid {role} VCF/BCF") from None
    return vcf


def _genotypes(v, path: str) -> np.ndarray:
    """``genotype.array()`` ([S, ploidy+1] int16: alleles, then the phased flag), or InputError without GT."""
    try:
        g = v.genotype.array()
        if g.shape[1] == 2 and (g[:, 0] == -1).all():
            # Every call is a lone '.': htslib sizes the record as haploid, but it is a diploid
            # missing call (the first haplotype's '.', then '.' for the absent second allele).
            g = np.column_stack([g[:, 0], np.full_like(g[:, 0], -2), np.zeros_like(g[:, 1])])
        return g
    except Exception:  # noqa: BLE001  (cyvcf2: "couldn't get genotypes for variant")
        raise InputError(
            path,
            "no GT genotypes in the record",
            "every record needs a GT FORMAT field",
            record=f"{v.CHROM}:{v.POS}",
        ) from None


def _after(sites: _Sites) -> str:
    return f"after {sites.contig}:{sites.prev_pos}" if sites.prev_pos > 0 else "first record"


def _iter_records(vcf, path: str, sites: _Sites):
    """Iterate cyvcf2 records, turning htslib parse failures into InputError naming the last good record."""
    it = iter(vcf)
    while True:
        try:
            v = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001  (cyvcf2 raises a bare Exception on a malformed line)
            raise InputError(
                path, f"malformed record ({exc})", "check the file with bcftools view", record=_after(sites)
            ) from None
        yield v


def _progress(progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit=" sites", unit_scale=True, mininterval=1.0)


def _read_panel_cyvcf2(path: str, progress: bool) -> tuple[_Sites, list[str], np.ndarray]:
    """Reference reader: any VCF/BCF htslib can parse; one ``genotype.array()`` per record."""
    kind, compressed = _check_file(path, "reference panel", verify_gzip=True)
    if kind == "vcf":
        _scan_text_structure(path, compressed)
    vcf = _open_cyvcf2(path, "reference panel")
    samples = list(vcf.samples)
    if not samples:
        raise InputError(
            path, "no samples in the header", "the reference panel needs phased sample genotypes"
        )
    sites = _Sites(path, "reference panel")
    buf = _HapBuffer(2 * len(samples))
    bar = _progress(progress, "reading panel")
    for v in _iter_records(vcf, path, sites):
        prev_n = sites.n
        if not sites.add(v.CHROM, int(v.POS), v.ID or ".", v.REF, list(v.ALT)):
            if sites.n < prev_n:  # retracted split multi-allelic record
                buf.pop()
            continue
        g = _genotypes(v, path)
        if g.shape[1] != 3 or g[:, :2].min() < 0 or g[:, :2].max() > 1 or not g[:, 2].all():
            problem = _gt_problem(g, samples, allow_missing=False, require_phased=True)
            if problem is not None:
                fix = {
                    "u": "the panel must be phased; phase it with Beagle/SHAPEIT first",
                    "m": "the panel must have no missing genotypes; impute/phase it with Beagle first",
                    "h": "use diploid autosomal genotypes (haploid/polyploid calls are not supported)",
                    "p": "use diploid autosomal genotypes (haploid/polyploid calls are not supported)",
                    "a": "check the file with bcftools view",
                }[problem[0]]
                raise InputError(path, problem, fix, record=f"{v.CHROM}:{v.POS}")
        buf.row()[:] = g[:, :2].reshape(-1)
        if bar is not None and sites.n_records % 4096 == 0:
            bar.update(4096)
    if bar is not None:
        bar.update(sites.n_records % 4096)
        bar.close()
    vcf.close()
    return sites, samples, _hap_major([buf.site_major(sites.n)], sites.n, 2 * len(samples))


# One 'a|b<TAB>' genotype field read as a little-endian uint32, with the two allele bits cleared.
_GT_PATTERN = np.uint32(0x09307C30)  # bytes '0', '|', '0', '\t'
_GT_MASK = np.uint32(0xFFFEFFFE)  # '0' and '1' differ only in bit 0 of bytes 0 and 2


def _hap_major(blocks: list[np.ndarray], n_sites: int, n_hap: int) -> np.ndarray:
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


def _open_text(path: str, compressed: bool):
    """A binary stream of decompressed VCF text; BGZF goes through ``bgzip -dc`` (a second core) if present."""
    if compressed:
        exe = shutil.which("bgzip")
        with open(path, "rb") as fh:
            head = fh.read(16)
        if exe is not None and len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC":
            proc = subprocess.Popen(
                [exe, "-dc", "-@", "2", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            return proc.stdout, proc
        return gzip.open(path, "rb"), None
    return open(path, "rb"), None


def _read_panel_text(path: str, compressed: bool, progress: bool) -> tuple[_Sites, list[str], np.ndarray]:
    """Fast path for VCF text whose FORMAT is exactly GT with 'a|b' calls (1000 Genomes style).

    Per line only a split of the fixed columns and one copy of the genotype bytes; a chunk
    of sites is validated and decoded with numpy, reading each 4-byte 'a|b<TAB>' field as
    one uint32. Anything else (other FORMAT fields, missing/unphased/haploid calls, any
    error) raises ``_Fallback`` so the cyvcf2 reference reader handles (and reports) it.
    Returns haplotypes hap-major [2S, M].
    """
    sites = _Sites(path, "reference panel")
    samples: list[str] = []
    width = 0
    raw: list[np.ndarray] = []  # chunks of genotype bytes [CHUNK, 4S]
    decoded: list[np.ndarray] = []  # validated chunks as haplotypes, site-major [m, 2S]
    fill = _CHUNK
    bar = _progress(progress, "reading panel")

    def decode(block: np.ndarray) -> None:
        v = block.view("<u4")  # [m, S]
        if not ((v & _GT_MASK) == _GT_PATTERN).all():
            raise _Fallback
        # allele bits of bytes 0 and 2 -> two little-endian uint16 per sample: (a, b) in haplotype order
        decoded.append((v & np.uint32(0x00010001)).view("<u2").astype(np.uint8))

    def line_fn(line: bytes) -> None:
        nonlocal samples, width, fill
        if not width:
            if line.startswith(b"##"):
                return
            if not line.startswith(b"#CHROM"):
                raise _Fallback
            cols = line.rstrip(b"\r").decode().split("\t")
            if len(cols) < 10:
                raise _Fallback
            samples = cols[9:]
            width = 4 * len(samples)
            return
        parts = line.split(b"\t", 9)
        if len(parts) != 10 or parts[8] != b"GT" or len(parts[9]) != width - 1:
            raise _Fallback
        try:
            pos = int(parts[1])
        except ValueError:
            raise _Fallback from None
        prev_n = sites.n
        if not sites.add(
            parts[0].decode(), pos, parts[2].decode(), parts[3].decode(), parts[4].decode().split(",")
        ):
            if sites.n < prev_n:  # retracted split multi-allelic record
                fill -= 1
                if fill == 0:
                    raw.pop()
                    fill = _CHUNK
            return
        if fill == _CHUNK:
            if raw:
                decode(raw.pop())
            raw.append(np.empty((_CHUNK, width), dtype=np.uint8))
            raw[-1][:, -1] = 9
            fill = 0
        raw[-1][fill, : width - 1] = np.frombuffer(parts[9], dtype=np.uint8)
        fill += 1

    proc = None
    try:
        fh, proc = _open_text(path, compressed)
        with fh:
            pending = b""
            while True:
                data = fh.read(1 << 24)
                if not data:
                    break
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    line_fn(line)
                if bar is not None:
                    bar.update(sites.n_records - bar.n)
            if pending:  # a last line without its newline
                line_fn(pending)
        if proc is not None and proc.wait() != 0:
            raise _Fallback
    except EOFError as exc:  # gzip stream cut short: definitive, no point in falling back
        raise InputError(
            path, f"truncated gzip file ({exc})", "re-download or re-create it (bgzip)", record=_after(sites)
        ) from None
    except (OSError, gzip.BadGzipFile, UnicodeDecodeError, InputError):
        raise _Fallback from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if bar is not None:
            bar.close()
    if not samples:
        raise _Fallback
    if raw:
        decode(raw.pop()[:fill])
    return sites, samples, _hap_major(decoded, sites.n, 2 * len(samples))


def read_panel_file(
    path: str | os.PathLike,
    samples: list[str],
    population_column: int = 1,
    super_population_column: int | None = 2,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a whitespace table mapping sample -> population (-> super population).

    Column 0 is the sample name; ``population_column`` and ``super_population_column``
    (0-based; ``None`` or a column absent from the file: no super population) pick the
    labels, as in 1000 Genomes' ``integrated_call_samples_v3.20130502.ALL.panel``
    (``sample pop super_pop gender``). A first line whose first field is ``sample``
    (any case, optionally starting with ``#``) is a header. Samples of ``samples`` absent
    from the file raise InputError; extra rows are ignored. Returns object arrays [S].
    """
    p = Path(path)
    if not p.exists():
        raise InputError(path, "no such panel file", "check the path of the sample -> population table")
    table: dict[str, tuple[str, str | None]] = {}
    has_super = super_population_column is not None
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields or fields[0].startswith("##"):
                continue
            if lineno == 1 and fields[0].lstrip("#").lower() in (
                "sample",
                "samples",
                "sample_id",
                "id",
                "iid",
            ):
                continue
            if len(fields) <= population_column:
                raise InputError(
                    path,
                    f"{len(fields)} columns, population column {population_column} missing",
                    "use 'sample population super_population' columns or set population_column",
                    record=f"line {lineno}",
                )
            sup = None
            if has_super:
                if len(fields) > super_population_column:
                    sup = fields[super_population_column]
                else:
                    has_super = False
            if fields[0] in table and table[fields[0]][0] != fields[population_column]:
                raise InputError(
                    path,
                    f"sample {fields[0]} listed twice with different populations",
                    "keep one row per sample",
                    record=f"line {lineno}",
                )
            table[fields[0]] = (fields[population_column], sup)
    missing = [s for s in samples if s not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            path,
            f"{len(missing)} VCF samples have no population: {shown}",
            "add a row 'sample population super_population' for each, or drop them with bcftools view -S",
        )
    pops = np.array([table[s][0] for s in samples], dtype=object)
    sups = None
    if has_super and all(table[s][1] is not None for s in samples):
        sups = np.array([table[s][1] for s in samples], dtype=object)
    return pops, sups


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
    kind, compressed = _check_file(path, "reference panel")
    result = None
    if kind == "vcf" and engine in ("auto", "text"):
        try:
            result = _read_panel_text(path, compressed, progress)
        except _Fallback:
            if engine == "text":
                raise RuntimeError(f"{path}: the fast text reader cannot handle this file") from None
    elif engine == "text":
        raise RuntimeError(f"{path}: the fast text reader reads VCF text only")
    if result is None:
        result = _read_panel_cyvcf2(path, progress)
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
        contig=str(sites.contig),
        positions=np.asarray(sites.positions, dtype=np.int64),
        ref=np.array(sites.ref, dtype=object),
        alt=np.array(sites.alt, dtype=object),
        ids=np.array(sites.ids, dtype=object),
        samples=samples,
        haplotypes=haplotypes,
        populations=pops,
        super_populations=sups,
        skipped=dict(sites.skipped),
    )


def read_target(path: str | os.PathLike, samples: list[str] | None = None, progress: bool = False) -> Target:
    """Read target genotypes (VCF/BCF, phased or not, missing calls allowed) of one contig.

    ``samples``: load only these (kept in file order). Site rules as in :func:`read_panel`:
    biallelic SNPs kept; multi-allelic (incl. split), non-SNP and ALT='.' records skipped
    and counted in ``Target.skipped``; unsorted/duplicate records, several contigs,
    haploid/polyploid calls raise InputError. Missing alleles are -1; ``phased`` is the
    per-call phase flag (False for '/' genotypes).
    """
    path = str(path)
    kind, compressed = _check_file(path, "target", verify_gzip=True)
    if kind == "vcf":
        _scan_text_structure(path, compressed)
    vcf = _open_cyvcf2(path, "target")
    all_samples = list(vcf.samples)
    if samples is not None:
        absent = [s for s in samples if s not in set(all_samples)]
        if absent:
            shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise InputError(
                path, f"samples not in the file: {shown}", "check the sample names (bcftools query -l)"
            )
        vcf.close()
        vcf = _open_cyvcf2(path, "target", samples=list(samples))
    names = list(vcf.samples)
    if not names:
        raise InputError(path, "no samples in the header", "the target VCF needs sample genotypes")
    sites = _Sites(path, "target")
    width = 3 * len(names)  # allele 0, allele 1, phased flag per sample
    buf = _HapBuffer(width, dtype=np.int8)
    bar = _progress(progress, "reading target")
    for v in _iter_records(vcf, path, sites):
        prev_n = sites.n
        if not sites.add(v.CHROM, int(v.POS), v.ID or ".", v.REF, list(v.ALT)):
            if sites.n < prev_n:
                buf.pop()
            continue
        g = _genotypes(v, path)
        if g.shape[1] != 3 or g[:, :2].min() < -1 or g[:, :2].max() > 1:
            problem = _gt_problem(g, names, allow_missing=True, require_phased=False)
            if problem is not None:
                raise InputError(
                    path,
                    problem,
                    "use diploid genotypes with allele indices 0/1 (bcftools norm -m-any splits multi-allelic sites)",
                    record=f"{v.CHROM}:{v.POS}",
                )
            g[:, 1][g[:, 1] == -2] = -1  # a lone '.' is missing on both haplotypes
        buf.row()[:] = g.reshape(-1)
        if bar is not None and sites.n_records % 4096 == 0:
            bar.update(4096)
    if bar is not None:
        bar.update(sites.n_records % 4096)
        bar.close()
    vcf.close()
    sites.finish()
    raw = buf.site_major(sites.n).reshape(sites.n, len(names), 3)  # [T, S, 3]
    alleles = np.ascontiguousarray(raw[:, :, :2].transpose(1, 2, 0))  # [S, 2, T]
    # a missing call is never "phased" information: '.|.' carries no phase
    phased = np.ascontiguousarray((raw[:, :, 2] != 0).T)
    return Target(
        path=path,
        contig=str(sites.contig),
        positions=np.asarray(sites.positions, dtype=np.int64),
        ref=np.array(sites.ref, dtype=object),
        alt=np.array(sites.alt, dtype=object),
        samples=names,
        alleles=alleles,
        phased=phased,
        skipped=dict(sites.skipped),
    )


def _strip_chr(contig: str) -> str:
    return contig[3:] if contig.lower().startswith("chr") else contig


def align_target(target: Target, panel: Panel) -> Alignment:
    """Match target sites to panel sites by (contig, position, REF, ALT).

    A target site whose position is in the panel but with other alleles, including the
    swapped REF/ALT pair, counts as an allele mismatch (``panel_index`` -1): swapping
    would silently flip the allele coding. Raises InputError when the contigs differ
    (suggesting ``bcftools annotate --rename-chrs`` when only a 'chr' prefix differs) or no
    target site matches (a genome build or chromosome mismatch).
    """
    if target.contig != panel.contig:
        if _strip_chr(target.contig) == _strip_chr(panel.contig):
            fix = (
                f"rename the target's contig with bcftools annotate --rename-chrs (a file with the line "
                f"'{target.contig} {panel.contig}')"
            )
        else:
            fix = "give a target and a panel of the same chromosome"
        raise InputError(
            target.path,
            f"target contig '{target.contig}' differs from the panel's '{panel.contig}' ({panel.path})",
            fix,
            record=f"{target.contig}:{int(target.positions[0]) if target.n_sites else 0}",
        )
    t_pos = target.positions
    j = np.searchsorted(panel.positions, t_pos)
    j_clip = np.minimum(j, max(panel.n_sites - 1, 0))
    present = (j < panel.n_sites) & (panel.positions[j_clip] == t_pos) if panel.n_sites else np.zeros(0, bool)
    same = present & (panel.ref[j_clip] == target.ref) & (panel.alt[j_clip] == target.alt)
    index = np.where(same, j_clip, -1).astype(np.int64)
    n_matched = int(same.sum())
    n_absent = int((~present).sum())
    n_mismatch = int((present & ~same).sum())
    if n_matched == 0:
        raise InputError(
            target.path,
            f"no target site matches the panel {panel.path} ({n_absent} of {target.n_sites} positions absent, "
            f"{n_mismatch} with other alleles)",
            "check that target and panel use the same genome build (GRCh37 vs GRCh38) and chromosome",
        )
    return Alignment(panel_index=index, n_matched=n_matched, n_absent=n_absent, n_allele_mismatch=n_mismatch)
