"""Unphased heterozygotes in a target; running Beagle 5.4, and pre-phasing the target with it.

Beagle 5.4 drops every target marker whose alleles differ from the panel's, so a REF/ALT swap
or a strand flip would be lost by pre-phasing although the allele QC recodes it
(``io.target.allele_actions``). Beagle is therefore handed a copy of the target recoded into the
panel's coding (:func:`write_panel_coded`): a hidden temporary beside the output, removed after.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import numpy as np

from ..errors import InputError
from ..paths import remove_quietly, same_file

BEAGLE_JAR = "/usr/share/beagle/beagle.jar"
_BEAGLE_FIX = (
    "install them (Debian: apt install default-jre beagle) or set BEAGLE_JAR, or phase the target "
    "yourself (Beagle, SHAPEIT) and pass the phased VCF"
)


def unphased_hets(alleles: np.ndarray, phased: np.ndarray) -> np.ndarray:
    """bool [S, T]: heterozygous calls whose phase is unknown ('0/1')."""
    a0, a1 = alleles[:, 0], alleles[:, 1]
    return (a0 >= 0) & (a1 >= 0) & (a0 != a1) & ~phased


def find_beagle() -> tuple[str | None, str, str | None]:
    """``(java, jar, missing)``: the Java binary on PATH (None if absent), the Beagle jar
    (``$BEAGLE_JAR``, else the Debian package's) and what is missing (None when both are there)."""
    jar = os.environ.get("BEAGLE_JAR", BEAGLE_JAR)
    java = shutil.which("java")
    missing = "java" if java is None else (None if os.path.exists(jar) else jar)
    return java, jar, missing


def run_beagle(
    ref_path: str,
    gt_path: str,
    out_prefix: str,
    args: list[str],
    java_mem: str = "4g",
    nthreads: int | None = None,
    blame: str | None = None,
    purpose: str = "Beagle",
) -> str:
    """Run ``java -jar beagle.jar ref= gt= out= ARGS nthreads=``; returns ``out_prefix.vcf.gz``.

    A missing Java or jar, or a failed run, is a one-line ``InputError`` naming ``blame`` (default
    ``gt_path``: the user's file when Beagle reads a temporary copy) and ``purpose``.
    """
    blame = blame or gt_path
    java, jar, missing = find_beagle()
    if missing:
        raise InputError(blame, f"{purpose} needs Java and Beagle 5.4 ({missing} not found)", _BEAGLE_FIX)
    if nthreads is None:
        from ..devices import available_cpus

        nthreads = available_cpus()
    cmd = [java, f"-Xmx{java_mem}", "-jar", jar, f"ref={ref_path}", f"gt={gt_path}", f"out={out_prefix}"]
    cmd += [*args, f"nthreads={nthreads}"]
    print("running Beagle: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    out = out_prefix + ".vcf.gz"
    if proc.returncode != 0 or not os.path.exists(out):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise InputError(
            blame,
            f"Beagle failed (exit {proc.returncode}): {' | '.join(tail)}",
            f"see {out_prefix}.log; check that target and panel share sites and build",
        )
    return out


def prephase_with_beagle(
    ref_path: str,
    target_path: str,
    out_prefix: str,
    java_mem: str = "4g",
    nthreads: int | None = None,
    blame: str | None = None,
) -> str:
    """Phase the target against the panel with Beagle 5.4 (``impute=false``); returns the phased VCF path."""
    args = ["impute=false"]
    return run_beagle(ref_path, target_path, out_prefix, args, java_mem, nthreads, blame, "--prephase beagle")


def prephase_input_path(out_path: str, role: str = "input") -> str:
    """``dir/.NAME.prephase-ROLE-<pid>.vcf.gz`` beside the output: a copy Beagle reads (``input``:
    the recoded target, ``ref``: the panel at its sites), hidden so that no tool takes it for an
    output; Beagle needs the ``.gz`` ending to read BGZF."""
    head, name = os.path.split(os.fspath(out_path))
    return os.path.join(head, f".{name}.prephase-{role}-{os.getpid()}.vcf.gz")


def _write_gt_vcf(path: str, panel, samples, sites: np.ndarray, gt_block) -> int:
    """A BGZF VCF, GT only, of panel sites ``sites`` (the panel's CHROM/POS/ID/REF/ALT) for
    ``samples``: ``gt_block(b0, b1)`` gives rows ``[b0, b1)`` of ``sites`` as uint8 ``[b, S, 4]``
    ("\ta|b" per sample), a block at a time so that no whole file is held as text."""
    from ..io.bgzf import BgzfWriter

    head = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={panel.contig}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples),
    ]
    with BgzfWriter(path) as w:
        w.write(("\n".join(head) + "\n").encode())
        for b0 in range(0, sites.size, 256):
            gt = gt_block(b0, min(sites.size, b0 + 256))
            for row, k in enumerate(sites[b0 : b0 + 256].tolist()):
                site = f"{panel.contig}\t{int(panel.positions[k])}\t{panel.ids[k]}\t{panel.ref[k]}\t{panel.alt[k]}"
                w.write(f"{site}\t.\tPASS\t.\tGT".encode() + gt[row].tobytes() + b"\n")
    return int(sites.size)


def write_panel_coded(path: str, target, alignment, panel) -> int:
    """Write (BGZF VCF, GT only) the target's sites that type a panel site, in the panel's coding:
    the panel's REF/ALT, alleles 0<->1 swapped where ``alignment.swap``; excluded and absent sites
    left out. Returns the sites written."""
    used = np.flatnonzero(alignment.panel_index >= 0)
    a = target.alleles[:, :, used]  # [S, 2, U]
    swap = alignment.swap[used][None, None, :]
    a = np.where((a >= 0) & swap, 1 - a, a)
    gt = np.empty((used.size, target.alleles.shape[0], 4), dtype=np.uint8)
    gt[..., 0] = 9
    gt[..., 1] = np.where(a[:, 0] < 0, 46, 48 + a[:, 0]).T
    gt[..., 2] = np.where(target.phased[:, used], 124, 47).T
    gt[..., 3] = np.where(a[:, 1] < 0, 46, 48 + a[:, 1]).T
    return _write_gt_vcf(path, panel, target.samples, alignment.panel_index[used], lambda b0, b1: gt[b0:b1])


def write_panel_at(path: str, panel, sites: np.ndarray) -> int:
    """Write (BGZF VCF, phased GT only) the panel's haplotypes at panel sites ``sites`` (sorted).

    The pre-phase hands Beagle this panel at the target's sites: phasing reads the reference at
    target markers only, so the phased calls are those against the whole panel (tested), and Java
    parses and holds 1 panel site in 15. Returns the sites written."""
    sites = np.asarray(sites, dtype=np.int64)

    def block(b0: int, b1: int) -> np.ndarray:
        hap = panel.haplotypes[:, sites[b0:b1]].T.reshape(b1 - b0, panel.n_samples, 2)  # [b, S, 2]
        gt = np.empty((b1 - b0, panel.n_samples, 4), dtype=np.uint8)
        gt[..., 0], gt[..., 1], gt[..., 2], gt[..., 3] = 9, 48 + hap[..., 0], 124, 48 + hap[..., 1]
        return gt

    return _write_gt_vcf(path, panel, panel.samples, sites, block)


def prephase_panel_coded(
    target, panel, ref_path: str, target_path: str, out_path: str, java_mem: str, threads: int | None
) -> str:
    """Pre-phase with Beagle a copy of the target recoded into the panel's coding, against the panel
    at the target's sites; the phased VCF path.

    Both copies (``prephase_input_path``) are removed afterwards, on an error or Ctrl-C too.
    """
    from ..io import align_target

    _, _, missing = find_beagle()
    if missing:  # before any work, naming the user's target
        raise InputError(target_path, f"--prephase beagle needs Java and Beagle 5.4 ({missing} not found)", _BEAGLE_FIX)
    alignment = align_target(target, panel)
    copy, ref_copy = prephase_input_path(out_path), prephase_input_path(out_path, "ref")
    for role, given in (("--ref", ref_path), ("--target", target_path)):
        for tmp in (copy, ref_copy):
            if same_file(tmp, given):  # a hidden pid-named file: only a contrived input name can hit it
                raise InputError(given, f"the {role} file is named like impute's temporary {tmp}", "rename it")
    try:
        n = write_panel_coded(copy, target, alignment, panel)
        write_panel_at(ref_copy, panel, np.unique(alignment.panel_index[alignment.panel_index >= 0]))
        n_recoded = alignment.n_recoded
        left_out = target.n_sites - n
        print(
            f"pre-phase: Beagle gets {n} target sites in the panel's coding ({n_recoded} recoded from a REF/ALT "
            f"swap or strand flip); {left_out} left out (excluded by allele QC, or absent from the panel)",
            file=sys.stderr,
        )
        prefix = str(out_path) + ".prephased"
        return prephase_with_beagle(ref_copy, copy, prefix, java_mem, threads, blame=str(target_path))
    finally:
        remove_quietly(copy)
        remove_quietly(ref_copy)


def phase_target(
    target,
    ref_path: str,
    target_path: str,
    out_path: str,
    prephase: str | None,
    allow_unphased: bool,
    java_mem: str = "4g",
    progress: bool = True,
    threads: int | None = None,
    panel=None,
):
    """``(target, unphased [S, T] bool, prephased path or None)``: phase the target or say why not.

    A target with unphased heterozygotes is pre-phased (``prephase="beagle"``; ``panel`` is
    required then: the copy Beagle reads is recoded into its coding), refused, or, with
    ``allow_unphased``, kept: its unphased hets then enter the model as missing calls.
    """
    from ..io import read_target

    unph = unphased_hets(target.alleles, target.phased)
    if not unph.any():
        return target, unph, None
    n_g, n_s = int(unph.sum()), int(unph.any(axis=1).sum())
    if prephase == "beagle":
        if panel is None:
            raise TypeError("phase_target(prephase='beagle') needs the panel")
        path = prephase_panel_coded(target, panel, ref_path, target_path, out_path, java_mem, threads)
        target = read_target(path, progress=progress)
        return target, unphased_hets(target.alleles, target.phased), path
    if not allow_unphased:
        raise InputError(
            str(target_path),
            f"{n_g} heterozygous genotypes in {n_s} samples are unphased",
            "pre-phase with --prephase beagle (Java + Beagle 5.4), or phase with Beagle/SHAPEIT first; "
            "--allow-unphased instead feeds them to the model as missing calls",
        )
    print(
        f"note: {n_g} unphased heterozygous genotypes in {n_s} samples enter the model as missing "
        "calls (--allow-unphased); their output GT stays unphased. For better accuracy use "
        "--prephase beagle.",
        file=sys.stderr,
    )
    return target, unph, None
