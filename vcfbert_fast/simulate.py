"""msprime simulation of a reference panel, held-out targets and "array" target sites.

Three-population out-of-Africa model (YRI, CEU, CHB; Gutenkunst et al. 2009, PLoS Genet
5:e1000695, the parameters of stdpopsim's ``HomSap/OutOfAfrica_3G09``), written out
directly with ``msprime.Demography`` so stdpopsim is not needed. Output, all phased,
bgzipped and tabix-indexed, contig ``20`` (GRCh37 style, no ``chr`` prefix):

* ``ref.vcf.gz``    reference panel samples, every biallelic SNP
* ``panel.txt``     ``sample pop super_pop`` with a header line
* ``truth.vcf.gz``  held-out target samples, every site (the imputation truth)
* ``target.vcf.gz`` the same held-out samples at an "array" subset of sites

Sites: the discrete-genome JC69 mutations can hit one position twice; sites with more
than two alleles or with only one allele observed in the samples are dropped and
counted (``SimulationResult.dropped``). Array sites are drawn without replacement with
weight ``sqrt(MAF)`` (MAF over the reference panel), times 0.02 below MAF 1%: arrays
favour common variants and carry few rare ones.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .optional import optional_import
from .progress import progress_bar

CONTIG = "20"
POPULATIONS = ("YRI", "CEU", "CHB")
SUPER_POPULATIONS = {"YRI": "AFR", "CEU": "EUR", "CHB": "EAS"}


@dataclass
class SimulationResult:
    out_dir: Path
    ref_vcf: Path
    ref_index: Path
    panel_txt: Path
    truth_vcf: Path
    truth_index: Path
    target_vcf: Path
    target_index: Path
    contig: str
    ref_samples: list[str]
    target_samples: list[str]
    n_sites: int  # biallelic SNPs in ref/truth
    n_array_sites: int  # sites in target
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> simulated sites dropped

    @property
    def n_ref_samples(self) -> int:
        return len(self.ref_samples)

    @property
    def n_target_samples(self) -> int:
        return len(self.target_samples)


def out_of_africa_demography():
    """Gutenkunst et al. (2009) three-population out-of-Africa model as ``msprime.Demography``."""
    msprime = optional_import("msprime")

    generation_time = 25
    n_a, n_b, n_af = 7300, 2100, 12300
    n_eu0, n_as0 = 1000, 510
    r_eu, r_as = 0.004, 0.0055
    t_af = 220e3 / generation_time
    t_b = 140e3 / generation_time
    t_eu_as = 21.2e3 / generation_time
    n_eu = n_eu0 / math.exp(-r_eu * t_eu_as)
    n_as = n_as0 / math.exp(-r_as * t_eu_as)
    m_af_b, m_af_eu, m_af_as, m_eu_as = 25e-5, 3e-5, 1.9e-5, 9.6e-5

    d = msprime.Demography()
    d.add_population(name="YRI", description="Yoruba in Ibadan", initial_size=n_af)
    d.add_population(
        name="CEU", description="Utah residents, European ancestry", initial_size=n_eu, growth_rate=r_eu
    )
    d.add_population(name="CHB", description="Han Chinese in Beijing", initial_size=n_as, growth_rate=r_as)
    d.add_population(name="OOA", description="Bottleneck out-of-Africa population", initial_size=n_b)
    d.add_population(name="AMH", description="Anatomically modern humans", initial_size=n_af)
    d.add_population(name="ANC", description="Ancestral equilibrium population", initial_size=n_a)
    d.set_symmetric_migration_rate(["YRI", "CEU"], m_af_eu)
    d.set_symmetric_migration_rate(["YRI", "CHB"], m_af_as)
    d.set_symmetric_migration_rate(["CEU", "CHB"], m_eu_as)
    d.add_population_split(time=t_eu_as, derived=["CEU", "CHB"], ancestral="OOA")
    d.add_symmetric_migration_rate_change(time=t_eu_as, populations=["YRI", "OOA"], rate=m_af_b)
    d.add_population_split(time=t_b, derived=["YRI", "OOA"], ancestral="AMH")
    d.add_population_split(time=t_af, derived=["AMH"], ancestral="ANC")
    d.sort_events()
    return d


def _split(n: int, k: int) -> list[int]:
    """n items over k groups as evenly as possible (earlier groups get the remainder)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise InputError(
            None, f"{tool} not found on PATH (needed to write indexed VCFs)", "apt-get install tabix"
        )
    return exe


def _write_vcf(
    path: Path,
    samples: list[str],
    positions: np.ndarray,
    ref: np.ndarray,
    alt: np.ndarray,
    haps: np.ndarray,
    chunk: int = 4096,
) -> None:
    """Phased VCF text from site-major haplotypes ``haps`` uint8 [M, 2S] (vectorised per chunk of sites)."""
    n_s = len(samples)
    with open(path, "wb") as fh:
        fh.write(b"##fileformat=VCFv4.2\n##source=vcfbert_fast.simulate (msprime, Gutenkunst 2009 OOA)\n")
        fh.write(f"##contig=<ID={CONTIG}>\n".encode())
        fh.write(b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">\n')
        fh.write(
            ("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n").encode()
        )
        for start in range(0, positions.shape[0], chunk):
            h = haps[start : start + chunk]
            m = h.shape[0]
            gt = np.empty((m, n_s, 4), dtype=np.uint8)
            gt[:, :, 0] = h[:, 0::2] + ord("0")
            gt[:, :, 1] = ord("|")
            gt[:, :, 2] = h[:, 1::2] + ord("0")
            gt[:, :, 3] = ord("\t")
            gt[:, -1, 3] = ord("\n")
            body = gt.reshape(m, -1)
            fh.write(
                b"".join(
                    f"{CONTIG}\t{positions[start + j]}\t.\t{ref[start + j]}\t{alt[start + j]}\t.\tPASS\t.\tGT\t".encode()
                    + body[j].tobytes()
                    for j in range(m)
                )
            )


def _bgzip_index(plain: Path) -> tuple[Path, Path]:
    subprocess.run([_need("bgzip"), "-f", str(plain)], check=True)
    gz = plain.with_name(plain.name + ".gz")
    subprocess.run([_need("tabix"), "-f", "-p", "vcf", str(gz)], check=True)
    return gz, gz.with_name(gz.name + ".tbi")


def choose_array_sites(maf: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of about ``density * M`` sites drawn with weight sqrt(MAF) (x0.02 below MAF 1%)."""
    w = np.sqrt(np.clip(maf, 0.0, 0.5)) * np.where(maf < 0.01, 0.02, 1.0)
    k = min(round(density * maf.shape[0]), int(np.count_nonzero(w)))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    idx = rng.choice(maf.shape[0], size=k, replace=False, p=w / w.sum())
    return np.sort(idx).astype(np.int64)


def simulate(
    out_dir: str | os.PathLike,
    n_ref_samples: int = 1000,
    n_target_samples: int = 100,
    length_bp: int = 5_000_000,
    seed: int = 1,
    array_density: float = 1 / 15,
    mutation_rate: float = 1.29e-8,
    recombination_rate: float = 1.0e-8,
    progress: bool = True,
) -> SimulationResult:
    """Simulate a panel + held-out targets under the OOA model; write indexed VCFs to ``out_dir``.

    Samples are spread evenly over YRI/CEU/CHB (reference and target counts each split
    evenly), named ``sim_<POP>_<NNNN>``. Deterministic for a given ``seed``.
    """
    msprime = optional_import("msprime")

    if n_ref_samples < 1 or n_target_samples < 1:
        raise InputError(
            None, "n_ref_samples and n_target_samples must be >= 1", "pass positive sample counts"
        )
    if not 0 < array_density <= 1:
        raise InputError(None, f"array_density {array_density} outside (0, 1]", "use e.g. 1/15")
    _need("bgzip"), _need("tabix")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    ref_per_pop = _split(n_ref_samples, 3)
    tgt_per_pop = _split(n_target_samples, 3)
    counts = {p: ref_per_pop[i] + tgt_per_pop[i] for i, p in enumerate(POPULATIONS)}
    bar = progress_bar(4, desc="simulate", unit=" step", enabled=progress)
    ts = msprime.sim_ancestry(
        samples={p: c for p, c in counts.items() if c > 0},
        demography=out_of_africa_demography(),
        sequence_length=length_bp,
        recombination_rate=recombination_rate,
        random_seed=seed,
        discrete_genome=True,
    )
    bar.update(1)
    ts = msprime.sim_mutations(ts, rate=mutation_rate, random_seed=seed, discrete_genome=True)
    bar.update(1)

    # individuals in tree-sequence order; name them per population, first ref then target
    pop_names = [ts.population(i).metadata.get("name", str(i)) for i in range(ts.num_populations)]
    ind_pop = [pop_names[ts.node(ind.nodes[0]).population] for ind in ts.individuals()]
    ref_ids, tgt_ids, names = [], [], {}
    seen = {p: 0 for p in POPULATIONS}
    for i, p in enumerate(ind_pop):
        seen[p] += 1
        names[i] = f"sim_{p}_{seen[p]:04d}"
        (ref_ids if seen[p] <= ref_per_pop[POPULATIONS.index(p)] else tgt_ids).append(i)

    n_sites_total = ts.num_sites
    keep_pos, keep_ref, keep_alt, rows = [], [], [], []
    dropped = {"multiallelic": 0, "monomorphic": 0}
    gm = ts.genotype_matrix()  # int [sites, 2N] (node order: individual i -> 2i, 2i+1)
    for site, g in zip(ts.sites(), gm):
        alleles = [site.ancestral_state] + []
        for mut in site.mutations:
            if mut.derived_state not in alleles:
                alleles.append(mut.derived_state)
        observed = np.unique(g)
        if len(alleles) > 2:
            dropped["multiallelic"] += 1
            continue
        if observed.shape[0] < 2:
            dropped["monomorphic"] += 1
            continue
        keep_pos.append(int(site.position) + 1)
        keep_ref.append(alleles[0])
        keep_alt.append(alleles[1])
        rows.append(g)
    if not rows:
        raise InputError(
            None,
            f"the simulation produced no biallelic SNPs ({n_sites_total} sites)",
            "increase length_bp or the sample counts",
        )
    haps = np.asarray(rows, dtype=np.uint8)  # [M, 2N]
    positions = np.asarray(keep_pos, dtype=np.int64)
    assert (np.diff(positions) > 0).all()
    ref, alt = np.asarray(keep_ref), np.asarray(keep_alt)

    def cols(ids: list[int]) -> np.ndarray:
        return np.array([[2 * i, 2 * i + 1] for i in ids], dtype=np.int64).reshape(-1)

    ref_h, tgt_h = haps[:, cols(ref_ids)], haps[:, cols(tgt_ids)]
    ref_names = [names[i] for i in ref_ids]
    tgt_names = [names[i] for i in tgt_ids]
    af = ref_h.mean(axis=1, dtype=np.float64)
    maf = np.minimum(af, 1 - af)
    rng = np.random.default_rng([seed, 20])
    arr = choose_array_sites(maf, array_density, rng)
    bar.update(1)

    panel_txt = out / "panel.txt"
    with open(panel_txt, "w") as fh:
        fh.write("sample\tpop\tsuper_pop\n")
        for i in ref_ids + tgt_ids:
            fh.write(f"{names[i]}\t{ind_pop[i]}\t{SUPER_POPULATIONS[ind_pop[i]]}\n")
    _write_vcf(out / "ref.vcf", ref_names, positions, ref, alt, ref_h)
    _write_vcf(out / "truth.vcf", tgt_names, positions, ref, alt, tgt_h)
    _write_vcf(out / "target.vcf", tgt_names, positions[arr], ref[arr], alt[arr], tgt_h[arr])
    ref_vcf, ref_index = _bgzip_index(out / "ref.vcf")
    truth_vcf, truth_index = _bgzip_index(out / "truth.vcf")
    target_vcf, target_index = _bgzip_index(out / "target.vcf")
    bar.update(1)
    bar.close()
    return SimulationResult(
        out_dir=out,
        ref_vcf=ref_vcf,
        ref_index=ref_index,
        panel_txt=panel_txt,
        truth_vcf=truth_vcf,
        truth_index=truth_index,
        target_vcf=target_vcf,
        target_index=target_index,
        contig=CONTIG,
        ref_samples=ref_names,
        target_samples=tgt_names,
        n_sites=int(positions.shape[0]),
        n_array_sites=int(arr.shape[0]),
        dropped=dropped,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n-ref", type=int, default=1000, help="reference panel samples (diploid)")
    parser.add_argument("--n-target", type=int, default=100, help="held-out target samples (diploid)")
    parser.add_argument("--length", type=int, default=5_000_000, help="sequence length in bp")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--array-density", type=float, default=1 / 15, help="fraction of sites on the array")
    parser.add_argument("--mutation-rate", type=float, default=1.29e-8)
    parser.add_argument("--recombination-rate", type=float, default=1.0e-8)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    res = simulate(
        args.out,
        n_ref_samples=args.n_ref,
        n_target_samples=args.n_target,
        length_bp=args.length,
        seed=args.seed,
        array_density=args.array_density,
        mutation_rate=args.mutation_rate,
        recombination_rate=args.recombination_rate,
        progress=not args.no_progress,
    )
    print(
        f"wrote {res.ref_vcf} ({res.n_ref_samples} samples), {res.truth_vcf} and {res.target_vcf} "
        f"({res.n_target_samples} samples), {res.panel_txt}: {res.n_sites} sites, {res.n_array_sites} on the array; "
        f"dropped {res.dropped}"
    )
    return 0
