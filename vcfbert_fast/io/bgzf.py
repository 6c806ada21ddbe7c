"""BGZF (blocked gzip) files: recognise one, open it for reading, write one (indexing: ``io.vcf_output``).

The format's facts (the gzip magic, the ``BC`` extra field, the 28-byte end-of-file block)
live here once, for the input checks, the fast panel reader and the imputed-VCF writer.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import zlib
from typing import IO

# The 28-byte empty BGZF block every complete bgzip/BCF file ends with (SAM/BAM spec, section 4.1.2).
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
BLOCK_DATA = 0xFF00  # uncompressed bytes per written block (bgzip's choice; a block holds < 64 KiB)
HEAD_BYTES = 16  # enough of a file's start to tell gzip from BGZF


def read_head(path: str | os.PathLike, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a file (fewer if it is shorter)."""
    with open(path, "rb") as fh:
        return fh.read(n)


def is_gzip(head: bytes) -> bool:
    """True when a file starting with ``head`` is gzip (BGZF included)."""
    return head[:2] == b"\x1f\x8b"


def is_bgzf(head: bytes) -> bool:
    """True when ``head`` (a file's first 16 bytes) is a gzip header with BGZF's ``BC`` extra field."""
    return len(head) >= HEAD_BYTES and is_gzip(head) and bool(head[3] & 4) and head[12:14] == b"BC"


def has_eof_block(path: str | os.PathLike) -> bool:
    """True when the file ends with the BGZF EOF block; htslib only warns when it is missing."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(max(0, size - len(EOF_BLOCK)))
        return fh.read() == EOF_BLOCK


def open_bytes(path: str | os.PathLike, compressed: bool) -> IO[bytes]:
    """The decompressed bytes of a (b)gzipped or plain file (``gzip`` reads BGZF as well)."""
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def open_bytes_fast(path: str | os.PathLike, compressed: bool) -> tuple[IO[bytes], subprocess.Popen | None]:
    """Like :func:`open_bytes`, but BGZF is inflated by a ``bgzip -dc`` child (a second core) if on PATH.

    Returns (stream, child or None); the caller checks the child's exit status at the end,
    because a failing child only shows as a stream that ends early.
    """
    exe = shutil.which("bgzip") if compressed else None
    if exe is not None and is_bgzf(read_head(path)):
        proc = subprocess.Popen(
            [exe, "-dc", "-@", "2", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return proc.stdout, proc
    return open_bytes(path, compressed), None


class Sink:
    """A writer: ``write(bytes)``, ``close()`` when complete, ``abort()`` on an error (``with``: either)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class BgzfWriter(Sink):
    """Minimal BGZF writer with zlib (no ``bgzip`` binary): valid for tabix/bcftools/htslib and gzip."""

    def __init__(self, path: str, level: int = 4):
        self._fh = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._buf = bytearray()
        self._level = level

    def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= BLOCK_DATA:
            self._flush_block(bytes(self._buf[:BLOCK_DATA]))
            del self._buf[:BLOCK_DATA]

    def _flush_block(self, data: bytes) -> None:
        comp = zlib.compressobj(self._level, zlib.DEFLATED, -15)
        body = comp.compress(data) + comp.flush()
        bsize = len(body) + 25  # total block size - 1
        header = struct.pack("<BBBBIBBHBBHH", 31, 139, 8, 4, 0, 0, 255, 6, 66, 67, 2, bsize)
        trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data))
        self._fh.write(header + body + trailer)

    def close(self) -> None:
        if self._fh.closed:
            return
        if self._buf:
            self._flush_block(bytes(self._buf))
            self._buf = bytearray()
        self._fh.write(EOF_BLOCK)
        self._fh.close()

    def abort(self) -> None:
        """Close without the EOF block: a file cut short this way reads as truncated, never as complete."""
        self._buf = bytearray()
        self._fh.close()
