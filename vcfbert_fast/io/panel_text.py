"""The panel's fast engine: numpy decoding of VCF text whose FORMAT is exactly GT with 'a|b' calls.

1000 Genomes style panels are this shape, and reading them through cyvcf2 costs one Python
call per record plus htslib's per-genotype parse. Here a line costs a split of the fixed
columns and one copy of the genotype bytes; a chunk of sites is validated and decoded at
once. Anything else raises :class:`Fallback`, and ``read_panel`` reruns the file through
the cyvcf2 engine, which handles (and reports) it.
"""

from __future__ import annotations

import gzip

import numpy as np

from ..errors import InputError
from .bgzf import open_bytes_fast
from .sites import CHUNK, SiteTable, hap_major, progress_bar

# One 'a|b<TAB>' genotype field read as a little-endian uint32, with the two allele bits cleared.
_GT_PATTERN = np.uint32(0x09307C30)  # bytes '0', '|', '0', '\t'
_GT_MASK = np.uint32(0xFFFEFFFE)  # '0' and '1' differ only in bit 0 of bytes 0 and 2


class Fallback(Exception):
    """The fast text path met something it does not handle; rerun with the cyvcf2 reference path."""


def read_panel_text(path: str, compressed: bool, progress: bool) -> tuple[SiteTable, list[str], np.ndarray]:
    """Read a GT-only, phased, complete VCF text panel; (sites, samples, haplotypes [2S, M]) or Fallback.

    Each 4-byte 'a|b<TAB>' field is read as one uint32; other FORMAT fields and
    missing/unphased/haploid calls, and any error, raise ``Fallback``. A gzip stream cut
    short is definitive and raises InputError.
    """
    sites = SiteTable(path, "reference panel")
    samples: list[str] = []
    width = 0
    raw: list[np.ndarray] = []  # chunks of genotype bytes [CHUNK, 4S]
    decoded: list[np.ndarray] = []  # validated chunks as haplotypes, site-major [m, 2S]
    fill = CHUNK
    bar = progress_bar(progress, "reading panel")

    def decode(block: np.ndarray) -> None:
        v = block.view("<u4")  # [m, S]
        if not ((v & _GT_MASK) == _GT_PATTERN).all():
            raise Fallback
        # allele bits of bytes 0 and 2 -> two little-endian uint16 per sample: (a, b) in haplotype order
        decoded.append((v & np.uint32(0x00010001)).view("<u2").astype(np.uint8))

    def line_fn(line: bytes) -> None:
        nonlocal samples, width, fill
        if not width:
            if line.startswith(b"##"):
                return
            if not line.startswith(b"#CHROM"):
                raise Fallback
            cols = line.rstrip(b"\r").decode().split("\t")
            if len(cols) < 10:
                raise Fallback
            samples = cols[9:]
            width = 4 * len(samples)
            return
        parts = line.split(b"\t", 9)
        if len(parts) != 10 or parts[8] != b"GT" or len(parts[9]) != width - 1:
            raise Fallback
        try:
            pos = int(parts[1])
        except ValueError:
            raise Fallback from None
        prev_n = sites.n
        if not sites.add(
            parts[0].decode(), pos, parts[2].decode(), parts[3].decode(), parts[4].decode().split(",")
        ):
            if sites.n < prev_n:  # retracted split multi-allelic record
                fill -= 1
                if fill == 0:
                    raw.pop()
                    fill = CHUNK
            return
        if fill == CHUNK:
            if raw:
                decode(raw.pop())
            raw.append(np.empty((CHUNK, width), dtype=np.uint8))
            raw[-1][:, -1] = 9
            fill = 0
        raw[-1][fill, : width - 1] = np.frombuffer(parts[9], dtype=np.uint8)
        fill += 1

    proc = None
    try:
        fh, proc = open_bytes_fast(path, compressed)
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
            raise Fallback
    except EOFError as exc:  # gzip stream cut short: definitive, no point in falling back
        raise InputError(
            path, f"truncated gzip file ({exc})", "re-download or re-create it (bgzip)", record=sites.after()
        ) from None
    except (OSError, gzip.BadGzipFile, UnicodeDecodeError, InputError):
        raise Fallback from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if bar is not None:
            bar.close()
    if not samples:
        raise Fallback
    if raw:
        decode(raw.pop()[:fill])
    return sites, samples, hap_major(decoded, sites.n, 2 * len(samples))
