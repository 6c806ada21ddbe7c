"""Panel loading benchmark (CPU): time ``read_panel`` on a 1000 Genomes-sized phased VCF.

The input is a *synthetic* phased VCF (random haplotypes with a skewed allele
frequency spectrum, written with numpy and compressed with ``bgzip``), not an
msprime simulation: msprime at 2504 samples x 150k sites would take far longer
than the read being measured, and the reader's cost depends on the file's shape
(samples x sites, text layout), not on the genetics.

    python benchmarks/load_panel_benchmark.py [--samples 2504] [--sites 150000] [--keep DIR]
        [--write-md BENCHMARKS.md]

Prints the figures; with ``--write-md`` replaces the "## Panel loading (CPU)"
section of that file (other sections are left alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SECTION = "## Panel loading (CPU)"


def write_synthetic_vcf(path: Path, n_samples: int, n_sites: int, seed: int = 0, chunk: int = 2000) -> None:
    """Write a phased, sorted, biallelic-SNP VCF text file quickly (vectorised over a chunk of sites)."""
    rng = np.random.default_rng(seed)
    samples = [f"S{i:05d}" for i in range(n_samples)]
    positions = np.sort(rng.choice(np.arange(1, 40 * n_sites), size=n_sites, replace=False)) + 10_000
    bases = np.array(list("ACGT"))
    with open(path, "wb") as fh:
        fh.write(b"##fileformat=VCFv4.2\n##contig=<ID=21>\n")
        fh.write(b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        fh.write(
            ("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n").encode()
        )
        for start in range(0, n_sites, chunk):
            m = min(chunk, n_sites - start)
            # skewed AF spectrum: most sites rare, like real panels
            af = rng.beta(0.3, 1.5, size=m).astype(np.float32)
            haps = (rng.random((m, 2 * n_samples), dtype=np.float32) < af[:, None]).astype(np.uint8)
            gt = np.empty((m, n_samples, 4), dtype=np.uint8)
            gt[:, :, 0] = haps[:, 0::2] + ord("0")
            gt[:, :, 1] = ord("|")
            gt[:, :, 2] = haps[:, 1::2] + ord("0")
            gt[:, :, 3] = ord("\t")
            gt[:, -1, 3] = ord("\n")
            ref_i = rng.integers(0, 4, size=m)
            alt_i = (ref_i + rng.integers(1, 4, size=m)) % 4
            body = gt.reshape(m, -1)
            lines = []
            for j in range(m):
                pos = positions[start + j]
                prefix = (
                    f"21\t{pos}\trs{pos}\t{bases[ref_i[j]]}\t{bases[alt_i[j]]}\t.\tPASS\t.\tGT\t".encode()
                )
                lines.append(prefix + body[j].tobytes())
            fh.write(b"".join(lines))


def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, nproc={os.cpu_count()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def section_text(md_path: Path) -> str:
    """Our section's current text ('' if absent), to keep the other engine's row."""
    if not md_path.exists():
        return ""
    lines = md_path.read_text().splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    if start is None:
        return ""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[start + 1 : end])


def replace_section(md_path: Path, body: str) -> None:
    """Replace (or append) our section in BENCHMARKS.md, leaving other sections untouched."""
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    new = SECTION + "\n\n" + body.rstrip() + "\n\n"
    if start is None:
        if not text.endswith("\n"):
            text += "\n"
        md_path.write_text(text + "\n" + new)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    md_path.write_text("".join(lines[:start]) + new + "".join(lines[end:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2504)
    ap.add_argument("--sites", type=int, default=150_000)
    ap.add_argument(
        "--keep", type=Path, default=None, help="directory to keep (and reuse) the synthetic VCF in"
    )
    ap.add_argument("--write-md", type=Path, default=None, help="BENCHMARKS.md to update")
    ap.add_argument("--engine", default="auto", choices=["auto", "cyvcf2", "text"], help="read_panel engine")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from vcfbert_fast.io import read_panel

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vcfbert_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    vcf_gz = workdir / f"synthetic_{args.samples}x{args.sites}.vcf.gz"
    gen_s = 0.0
    if not vcf_gz.exists():
        if shutil.which("bgzip") is None:
            print("bgzip not found; install htslib's tabix package (apt-get install tabix)", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        plain = vcf_gz.with_suffix("")
        write_synthetic_vcf(plain, args.samples, args.sites)
        subprocess.run(["bgzip", "-f", "-@", str(os.cpu_count() or 1), str(plain)], check=True)
        gen_s = time.perf_counter() - t0
        print(f"wrote {vcf_gz} ({vcf_gz.stat().st_size / 1e6:.0f} MB) in {gen_s:.1f} s")

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    cpu0 = cpu()
    t0 = time.perf_counter()
    panel = read_panel(vcf_gz, progress=False, engine=args.engine)
    secs = time.perf_counter() - t0
    cpu_s = cpu() - cpu0  # incl. the bgzip -dc child: meaningful when the box is shared
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hap_mb = panel.haplotypes.nbytes / 1e6
    n_gt = panel.n_samples * panel.n_sites
    print(
        f"read_panel(engine={args.engine}): {panel.n_samples} samples x {panel.n_sites} sites in {secs:.1f} s "
        f"wall, {cpu_s:.1f} s CPU (self + bgzip child), load average before {load:.1f}; "
        f"({n_gt / secs / 1e6:.1f} M genotypes/s); haplotypes {hap_mb:.0f} MB; "
        f"peak RSS {peak_mb:.0f} MB (before read {rss_before:.0f} MB)"
    )
    if args.write_md:
        row = (
            f"| {args.engine} | {panel.n_samples} | {panel.n_sites} | {secs:.1f} s | {cpu_s:.1f} s | "
            f"{n_gt / secs / 1e6:.1f} M | {hap_mb:.0f} MB | {peak_mb:.0f} MB | {load:.1f} |\n"
        )
        body = (
            f"Machine: {machine_description()}.\n\n"
            f"Command: `python benchmarks/load_panel_benchmark.py --samples {args.samples} --sites {args.sites}"
            f" --engine ENGINE --write-md BENCHMARKS.md`\n\n"
            "Input: synthetic phased bgzipped VCF (random haplotypes, Beta(0.3, 1.5) allele frequencies, "
            f"one contig, biallelic SNPs, FORMAT GT only), {vcf_gz.stat().st_size / 1e6:.0f} MB compressed. "
            "Engine `auto` is the numpy text path (`bgzip -dc` in a child process); `cyvcf2` the htslib "
            "reference path. CPU = user + system seconds of the process and its children; the box was shared "
            "with other jobs (load average column), so wall time overstates the unloaded figure. "
            "The `cyvcf2` engine includes its pre-scan of the text (column count, POS, contig, GT tokens per "
            "line), which guards htslib against malformed lines that crash it.\n\n"
            "| engine | samples | sites | wall | CPU | genotypes/s (wall) | haplotypes array | peak RSS | load |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
        keep = [
            ln + "\n"
            for ln in section_text(args.write_md).splitlines()
            if ln.startswith("| ") and not ln.startswith((f"| {args.engine} |", "| engine"))
        ]
        replace_section(args.write_md, body + "".join(keep) + row)
        print(f"updated {args.write_md}")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
