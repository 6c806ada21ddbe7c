"""Unphased heterozygotes in a target, and pre-phasing against the panel with Beagle 5.4."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import numpy as np

from ..errors import InputError

BEAGLE_JAR = "/usr/share/beagle/beagle.jar"


def unphased_hets(alleles: np.ndarray, phased: np.ndarray) -> np.ndarray:
    """bool [S, T]: heterozygous calls whose phase is unknown ('0/1')."""
    a0, a1 = alleles[:, 0], alleles[:, 1]
    return (a0 >= 0) & (a1 >= 0) & (a0 != a1) & ~phased


def prephase_with_beagle(
    ref_path: str, target_path: str, out_prefix: str, java_mem: str = "4g", nthreads: int | None = None
) -> str:
    """Phase the target against the panel with Beagle 5.4 (``impute=false``); returns the phased VCF path."""
    jar = os.environ.get("BEAGLE_JAR", BEAGLE_JAR)
    java = shutil.which("java")
    if java is None or not os.path.exists(jar):
        missing = "java" if java is None else jar
        raise InputError(
            target_path,
            f"--prephase beagle needs Java and Beagle 5.4 ({missing} not found)",
            "install them (Debian: apt install default-jre beagle) or set BEAGLE_JAR, or phase the target "
            "yourself (Beagle, SHAPEIT) and pass the phased VCF",
        )
    if nthreads is None:
        from ..devices import available_cpus

        nthreads = available_cpus()
    cmd = [
        java,
        f"-Xmx{java_mem}",
        "-jar",
        jar,
        f"ref={ref_path}",
        f"gt={target_path}",
        f"out={out_prefix}",
        "impute=false",
        f"nthreads={nthreads}",
    ]
    print("pre-phasing with Beagle: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    out = out_prefix + ".vcf.gz"
    if proc.returncode != 0 or not os.path.exists(out):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise InputError(
            target_path,
            f"Beagle pre-phasing failed (exit {proc.returncode}): {' | '.join(tail)}",
            f"see {out_prefix}.log; check that target and panel share sites and build",
        )
    return out


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
):
    """``(target, unphased [S, T] bool, prephased path or None)``: phase the target or say why not.

    A target with unphased heterozygotes is pre-phased (``prephase="beagle"``), refused, or, with
    ``allow_unphased``, kept: its unphased hets then enter the model as missing calls.
    """
    from ..io import read_target

    unph = unphased_hets(target.alleles, target.phased)
    if not unph.any():
        return target, unph, None
    n_g, n_s = int(unph.sum()), int(unph.any(axis=1).sum())
    if prephase == "beagle":
        path = prephase_with_beagle(str(ref_path), str(target_path), str(out_path) + ".prephased", java_mem, threads)
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
