"""io.bgzf: what BgzfWriter writes is BGZF that gzip, the checks and htslib's tools read back."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from vcfbert_fast.io.bgzf import (
    EOF_BLOCK,
    BgzfWriter,
    has_eof_block,
    is_bgzf,
    is_gzip,
    open_bytes,
    open_bytes_fast,
    read_head,
)

DATA = b"".join(b"line %d\n" % i for i in range(40000))  # several 0xFF00-byte blocks


def _write(path, data=DATA):
    with BgzfWriter(str(path)) as out:
        out.write(data[:1000])
        out.write(data[1000:])


def test_writer_output_is_complete_bgzf(tmp_path):
    p = tmp_path / "x.gz"
    _write(p)
    head = read_head(p)
    assert is_gzip(head) and is_bgzf(head)
    assert has_eof_block(p)
    assert p.read_bytes().endswith(EOF_BLOCK)
    assert gzip.decompress(p.read_bytes()) == DATA


def test_plain_gzip_and_text_are_not_bgzf(tmp_path):
    g = tmp_path / "plain.gz"
    g.write_bytes(gzip.compress(DATA))
    t = tmp_path / "plain.txt"
    t.write_bytes(DATA)
    assert is_gzip(read_head(g)) and not is_bgzf(read_head(g))
    assert not is_gzip(read_head(t)) and not is_bgzf(read_head(t))
    assert not has_eof_block(g)


def test_cut_file_loses_its_eof_block(tmp_path):
    p = tmp_path / "x.gz"
    _write(p)
    p.write_bytes(p.read_bytes()[:-100])
    assert is_bgzf(read_head(p)) and not has_eof_block(p)


@pytest.mark.parametrize("fast", [False, True])
def test_open_bytes_reads_every_kind(tmp_path, fast):
    b = tmp_path / "x.gz"
    _write(b)
    g = tmp_path / "plain.gz"
    g.write_bytes(gzip.compress(DATA))
    t = tmp_path / "plain.txt"
    t.write_bytes(DATA)
    for path, compressed in ((b, True), (g, True), (t, False)):
        if fast:
            fh, proc = open_bytes_fast(path, compressed)
            with fh:
                assert fh.read() == DATA
            if proc is not None:
                assert path == b and proc.wait() == 0
        else:
            with open_bytes(path, compressed) as fh:
                assert fh.read() == DATA


@pytest.mark.skipif(shutil.which("bgzip") is None, reason="bgzip not installed")
def test_bgzip_reads_writer_output(tmp_path):
    p = tmp_path / "x.gz"
    _write(p)
    out = subprocess.run(["bgzip", "-dc", str(p)], check=True, capture_output=True).stdout
    assert out == DATA
