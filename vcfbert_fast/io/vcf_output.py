"""Where the imputed VCF's bytes go: plain text, BGZF or BCF (by name or ``-O``), indexed, installed atomically.

The type follows the name as bcftools users expect (``.vcf`` plain text, ``.vcf.gz``/``.vcf.bgz``
BGZF, ``.bcf`` BCF) unless ``-O v|z|b`` says otherwise; a name that says nothing is refused rather
than guessed. BGZF is written by ``io.bgzf.BgzfWriter`` (zlib, no binary needed); BCF by htslib
through cyvcf2 (the text records are parsed by htslib and written binary), so it needs no
bcftools either. The index matches the type: ``.tbi`` for BGZF (``tabix`` or ``bcftools``),
``.csi`` for BCF (``bcftools``), none for plain text. It is built on the hidden temporary, and
every old index beside the output is removed before the rename, so a new file never sits beside
a stale index; without the tool the file is installed unindexed and stderr says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ..errors import InputError
from ..paths import INDEX_SUFFIXES, remove_quietly
from .bgzf import BgzfWriter, Sink

# -O letter -> (what it is, its index suffix or None)
OUTPUT_TYPES: dict[str, tuple[str, str | None]] = {
    "v": ("plain-text VCF", None),
    "z": ("bgzipped VCF", ".tbi"),
    "b": ("BCF", ".csi"),
}
_BY_NAME = ((".vcf.gz", "z"), (".vcf.bgz", "z"), (".bcf", "b"), (".vcf", "v"))


def output_type(path: str | os.PathLike, given: str | None = None) -> str:
    """The -O letter for ``path``: ``given`` when set, else from the name; a one-line error otherwise."""
    if given is not None:
        if given not in OUTPUT_TYPES:
            raise InputError(
                None, f"-O/--output-type {given!r} is not v, z or b", "v: plain VCF, z: bgzipped VCF, b: BCF"
            )
        return given
    name = os.fspath(path).lower()
    for suffix, kind in _BY_NAME:
        if name.endswith(suffix):
            return kind
    raise InputError(
        os.fspath(path),
        "the output type cannot be told from the name",
        "name it .vcf, .vcf.gz or .bcf, or give -O v|z|b",
    )


class PlainWriter(Sink):
    def __init__(self, path: str):
        self._fh = open(path, "wb")  # noqa: SIM115 (closed in close())

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def close(self) -> None:
        self._fh.close()

    abort = close


class BcfWriter(Sink):
    """VCF text in, BCF out: htslib (cyvcf2) parses the header, then every record line, and writes BCF."""

    def __init__(self, path: str):
        self._path = path
        self._rest = b""
        self._header: list[str] = []
        self._w = None

    def write(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for raw in lines:
            line = raw.decode()
            if self._w is None:
                self._header.append(line)
                if line.startswith("#CHROM"):
                    self._open()
            elif line:
                self._w.write_record(self._w.variant_from_string(line))

    def _open(self) -> None:
        import cyvcf2

        self._w = cyvcf2.Writer.from_string(self._path, "\n".join(self._header) + "\n", mode="wb")
        self._w.write_header()

    def close(self) -> None:
        if self._rest:
            self.write(b"\n")
        if self._w is None:
            raise ValueError("BcfWriter closed before a #CHROM header line was written")
        self._w.close()

    def abort(self) -> None:
        if self._w is not None:
            self._w.close()


def open_output(tmp: str, kind: str) -> Sink:
    """A writer of type ``kind`` (an ``OUTPUT_TYPES`` letter) filling ``tmp``."""
    return {"v": PlainWriter, "z": BgzfWriter, "b": BcfWriter}[kind](tmp)


def index_output(path: str, suffix: str) -> tuple[str | None, str | None]:
    """Index ``path`` (``.tbi``: tabix or bcftools; ``.csi``: bcftools). Returns (index or None, why not)."""
    if suffix == ".tbi":
        tools = [("tabix", ["-f", "-p", "vcf"]), ("bcftools", ["index", "-f", "-t"])]
    else:
        tools = [("bcftools", ["index", "-f", "-c"])]
    for exe, args in tools:
        found = shutil.which(exe)
        if not found:
            continue
        res = subprocess.run([found, *args, path], check=False, capture_output=True, text=True)
        if res.returncode == 0 and os.path.exists(path + suffix):
            return path + suffix, None
        remove_quietly(path + suffix)
        why = (res.stderr or res.stdout).strip().splitlines()
        return None, f"{exe} failed to index it ({why[-1] if why else f'exit status {res.returncode}'})"
    names = " nor ".join(exe for exe, _ in tools)
    return None, f"{'neither ' if len(tools) > 1 else ''}{names} is on PATH (apt install {tools[-1][0]})"


def install_output(tmp: str, path: str, kind: str, index: bool = True) -> str | None:
    """Move the finished ``tmp`` onto ``path`` with its index, or with no index at all.

    Every old ``.tbi``/``.csi`` beside ``path`` is removed before the rename (a crash in between
    leaves an unindexed file, never a wrong index). Returns the index path, or None after saying
    why on stderr. On any error (KeyboardInterrupt too) ``tmp`` and its index are removed.
    """
    suffix = OUTPUT_TYPES[kind][1]
    try:
        new_idx, why = index_output(tmp, suffix) if index and suffix else (None, None)
        stale = [path + s for s in INDEX_SUFFIXES if os.path.lexists(path + s)]
        for old in stale:
            os.unlink(old)
        os.replace(tmp, path)
        if new_idx is not None:
            os.replace(new_idx, path + suffix)
            return path + suffix
    except BaseException:
        remove_quietly(tmp, *(tmp + s for s in INDEX_SUFFIXES))
        raise
    removed = f"removed the stale index {', '.join(stale)}" if stale else ""
    if why is not None:
        how = f"tabix -p vcf {path}" if suffix == ".tbi" else f"bcftools index -c {path}"
        print(
            f"warning: {path} written without an index: {why}{'; ' + removed if removed else ''}; "
            f"index it with `{how}`",
            file=sys.stderr,
        )
    elif removed:
        reason = "a plain-text VCF has none" if suffix is None else "as asked"
        print(f"note: {path} written without an index ({reason}); {removed}", file=sys.stderr)
    return None
