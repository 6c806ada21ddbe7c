"""The chunk outputs of a chunked or sharded ``impute``: written, resumed, joined.

Each chunk is written as a finished, self-contained BGZF VCF (with its QC and sites tables) into
a hidden directory beside the output, ``.NAME.chunks/``, by whichever rank owns it. A chunk file
appears only when complete (``partial_file``: written under a temporary name, renamed at the end),
so after a kill every chunk file there is whole and ``--resume`` skips it. A manifest records the
inputs and options; a resume against other inputs or options is refused. The main rank joins the
chunks in order into the output (``bcftools concat``), merges the tables, and removes the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import InputError
from ..paths import partial_file
from .chunks import Chunk
from .qc import qc_path

__all__ = ["ChunkParts", "file_fingerprint"]

MANIFEST = "manifest.json"


def file_fingerprint(path: str | os.PathLike | None) -> list | None:
    """``[absolute path, size, mtime_ns]`` of an input, so a resume notices a changed file."""
    if path is None or not os.path.exists(path):
        return None if path is None else [str(path)]
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class ChunkParts:
    """The hidden chunk directory of one ``--out``; ``manifest``: what the chunks depend on."""

    def __init__(self, out_path: str, manifest: dict, resume: bool, main: bool = True):
        out = Path(out_path)
        self.out_path = str(out_path)
        self.dir = out.parent / f".{out.name}.chunks"
        self.manifest = manifest
        if main:
            self._prepare(resume)

    def _prepare(self, resume: bool) -> None:
        mf = self.dir / MANIFEST
        if self.dir.exists() and not resume:
            print(
                f"note: removing the chunks of an earlier unfinished run in {self.dir} (no --resume)",
                file=sys.stderr,
            )
            shutil.rmtree(self.dir)
        if self.dir.exists():
            try:
                old = json.loads(mf.read_text())
            except (OSError, ValueError):
                old = None
            if old != self.manifest:
                changed = sorted(k for k in self.manifest if not old or old.get(k) != self.manifest[k])
                raise InputError(
                    self.out_path,
                    f"--resume: the unfinished run in {self.dir} had other inputs or options ({', '.join(changed) or 'manifest'})",
                    "rerun with the same inputs and options, or without --resume to start over",
                )
            n_done = sum(1 for p in self.dir.glob("chunk-*.vcf.gz"))
            print(f"resuming: {n_done} finished chunk(s) in {self.dir} are kept", file=sys.stderr)
            return
        if resume:
            print(
                f"note: --resume but no unfinished run in {self.dir}: starting from the beginning",
                file=sys.stderr,
            )
        self.dir.mkdir(parents=True)
        with partial_file(mf) as tmp:
            Path(tmp).write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
            os.replace(tmp, mf)

    def path(self, chunk: Chunk) -> str:
        return str(self.dir / f"{chunk.name}.vcf.gz")

    def sites_path(self, chunk: Chunk) -> str:
        return str(self.dir / f"{chunk.name}.sites.tsv")

    def done(self, chunk: Chunk, sites: bool) -> bool:
        """The chunk's VCF and tables are all there (each appears only once complete)."""
        need = [self.path(chunk), qc_path(self.path(chunk))] + ([self.sites_path(chunk)] if sites else [])
        return all(os.path.exists(p) for p in need)

    def join(self, chunks: list[Chunk], kind: str, sites_path: str | None) -> dict:
        """Concatenate the chunks into ``--out`` (type ``kind``), merge the QC and sites tables; returns
        ``{"index", "qc", "qc_file"}``. The directory is removed once everything is in place."""
        from ..io.vcf_output import install_output

        if shutil.which("bcftools") is None:
            raise InputError(
                self.out_path,
                "joining the chunks needs bcftools, which is not on PATH",
                f"install bcftools (the chunks are kept in {self.dir}: rerun with --resume)",
            )
        parts = [self.path(c) for c in chunks]
        missing = [p for p in parts if not os.path.exists(p)]
        if missing:
            raise InputError(
                self.out_path,
                f"{len(missing)} chunk(s) are missing, e.g. {missing[0]}",
                "rerun with --resume",
            )
        with partial_file(self.out_path) as tmp:
            flags = ["--naive"] if kind == "z" else ["-O", kind]
            proc = subprocess.run(
                ["bcftools", "concat", "--no-version", *flags, "-o", tmp, *parts],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise InputError(
                    self.out_path,
                    f"bcftools concat failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}",
                    f"the chunks are kept in {self.dir}: rerun with --resume",
                )
            index = install_output(tmp, self.out_path, kind)
        counts = self._merge_tables([qc_path(p) for p in parts], qc_path(self.out_path))
        if sites_path is not None:
            self._merge_tables([self.sites_path(c) for c in chunks], sites_path)
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"index": index, "qc": counts, "qc_file": qc_path(self.out_path)}

    @staticmethod
    def _merge_tables(paths: list[str], dest: str) -> dict[str, int]:
        """One header, then every part's rows in order; counts of the last column (QC actions)."""
        counts: dict[str, int] = {}
        with partial_file(dest) as tmp:
            with open(tmp, "w") as out:
                for i, p in enumerate(paths):
                    with open(p) as fh:
                        head = fh.readline()
                        if i == 0:
                            out.write(head)
                        for line in fh:
                            out.write(line)
                            key = line.rstrip("\n").rsplit("\t", 1)[-1]
                            counts[key] = counts.get(key, 0) + 1
            os.replace(tmp, dest)
        return dict(sorted(counts.items()))
