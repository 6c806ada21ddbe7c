"""Checks a VCF/BCF file passes before htslib reads it: the catches htslib reports badly or not at all.

htslib reads a truncated gzip or BGZF file without complaint (it returns the records before
the cut), and hands cyvcf2 half-initialised records for short or ragged text lines (reading
one can crash the process: found by tests/test_vcf_fuzz.py). So every reader calls
:func:`check_file` first, and VCF text goes through :func:`scan_text_structure` before cyvcf2.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from ..errors import InputError
from .bgzf import has_eof_block, is_bgzf, is_gzip, open_bytes, read_head


def verify_gzip_stream(path: str | os.PathLike) -> None:
    """Decompress a plain (non-BGZF) gzip file to its end: htslib reads a truncated one without complaint."""
    try:
        with gzip.open(path, "rb") as g:
            while g.read(1 << 24):
                pass
    except (OSError, EOFError) as exc:
        raise InputError(
            path, f"truncated or corrupt gzip file ({exc})", "re-download or re-create it (bgzip)"
        ) from None


def check_file(path: str | os.PathLike, role: str, verify_gzip: bool = False) -> tuple[str, bool]:
    """Validate that ``path`` looks like a complete VCF/BCF; return (kind 'vcf'|'bcf', compressed).

    Catches a missing or empty file, text that is not a VCF, and a truncated BGZF file (its
    EOF block missing). ``verify_gzip`` also reads a plain gzip file to its end.
    """
    p = Path(path)
    fix_kind = f"give a {role} VCF/BCF file"
    if not p.exists():
        raise InputError(path, "no such file", f"check the path; {fix_kind}")
    if p.is_dir():
        raise InputError(path, "is a directory, not a file", fix_kind)
    if p.stat().st_size == 0:
        raise InputError(path, "file is empty", f"{fix_kind} with a header and records")
    head = read_head(p)
    compressed = is_gzip(head)
    if compressed:
        bgzf = is_bgzf(head)
        if not bgzf and verify_gzip:
            verify_gzip_stream(path)
        if bgzf and not has_eof_block(p):
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


def scan_text_structure(path: str, compressed: bool) -> None:
    """Check every data line of VCF text: the header's column count, non-empty fixed fields, GT tokens.

    A tab count, a split of the fixed columns and one regex per line, so that cyvcf2 never
    sees a line htslib would hand over half-parsed.
    """
    n_cols = None
    contig = None
    pending = b""
    lineno = 0

    def bad(line: bytes, problem: str, fix: str = "check the file with bcftools view") -> InputError:
        f = line.split(b"\t", 2)
        rec = f"{f[0].decode(errors='replace')}:{f[1].decode(errors='replace')}" if len(f) > 2 else None
        return InputError(path, problem, fix, record=rec or f"line {lineno}")

    try:
        with open_bytes(path, compressed) as fh:
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
