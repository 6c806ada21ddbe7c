"""BGZF (blocked gzip) files: recognise one, open it for reading.

The format's facts (the gzip magic, the ``BC`` extra field, the 28-byte end-of-file block)
live here once, for the input checks and the fast panel reader.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from typing import IO

# The 28-byte empty BGZF block every complete bgzip/BCF file ends with (SAM/BAM spec, section 4.1.2).
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
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
