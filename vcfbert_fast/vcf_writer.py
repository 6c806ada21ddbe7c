"""Imputed VCF output: sorted, BGZF-compressed, tabix-indexed, FORMAT ``GT:DS:GP:HDS``.

Why the shape it has:

* Genotype fields are fixed width (three decimals everywhere), so a chunk of sites is built as
  one ``uint8`` array by digit arithmetic: no per-genotype Python formatting.
* GP is rounded to thousandths with the sum forced to exactly 1.000, and DS is then written
  as exactly ``GP1 + 2*GP2``; HDS is rounded on its own (so ``DS == HDS1 + HDS2`` holds to
  +-0.002). GT is the phased best guess ``round(HDS)`` per haplotype unless given.
* BGZF is written with zlib (``io.bgzf.BgzfWriter``: no dependency on the ``bgzip`` binary)
  into a hidden ``.NAME.partial-<pid>`` beside the output, removed on any error or Ctrl-C;
  the index is made on it by ``tabix -p vcf`` or ``bcftools index -t``, and both are renamed
  into place (``io.bgzf.install_vcf``). Without either tool, or if indexing fails, the file is
  written unindexed, any old index beside it is removed (it would be stale), and the writer
  says so on stderr (the summary's ``index`` is then ``None``).
* ``INFO/DR2`` is the estimated dosage r^2: minimac's Rsq on haplotype dosages,
  ``var(HDS) / (p (1 - p))`` over the output haplotypes with ``p = mean(HDS)``, clipped to
  [0, 1] (0 at monomorphic sites). ``INFO/AF`` is ``p``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io.bgzf import BgzfWriter, install_vcf
from .paths import partial_file

IMPFILL_HEADER = (
    '##INFO=<ID=IMPFILL,Number=1,Type=Integer,Description="Typed marker with this many samples whose input '
    'call was missing (./. or half-missing): their genotypes are imputed by the model, not input calls">'
)
FIELD_WIDTH = 40  # "\t" + "a|b" + ":D.DDD" + ":P.PPP,P.PPP,P.PPP" + ":H.HHH,H.HHH"


@dataclass
class ImputedSites:
    """Everything the writer needs about the panel sites (M sites, S samples), sorted by position.

    ``hds`` [M, S, 2]: probability of ALT on each haplotype (typed sites: the input alleles).
    ``gt`` [M, S, 2] int8 (optional): the alleles to write; default ``hds > 0.5``.
    ``phased`` [M, S] bool (optional): separator ``|`` or ``/``; default all phased.
    ``gp`` [M, S, 3] (optional): genotype probabilities; default from ``hds`` as
    ``P(0)=(1-p1)(1-p2), P(1)=p1(1-p2)+p2(1-p1), P(2)=p1 p2``.
    ``imputed`` [M] bool: True for sites the model filled in (INFO IMP), False for typed ones.
    ``filled`` [M] int (optional): at a typed site, the samples whose input call was (partly)
    missing and is the model's (INFO ``IMPFILL``, declared only when a site has one).
    """

    contig: str
    positions: np.ndarray
    ids: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    hds: np.ndarray
    imputed: np.ndarray
    gt: np.ndarray | None = None
    phased: np.ndarray | None = None
    gp: np.ndarray | None = None
    af: np.ndarray | None = None
    dr2: np.ndarray | None = None
    filled: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def gp_from_hds(hds: np.ndarray) -> np.ndarray:
    """Genotype probabilities [..., 3] from independent haplotype ALT probabilities [..., 2]."""
    p1 = hds[..., 0].astype(np.float64)
    p2 = hds[..., 1].astype(np.float64)
    return np.stack([(1 - p1) * (1 - p2), p1 * (1 - p2) + p2 * (1 - p1), p1 * p2], axis=-1)


def estimated_r2(hds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AF, DR2) per site from haplotype dosages [M, S, 2]: minimac Rsq = var(HDS) / (p(1-p))."""
    h = hds.reshape(hds.shape[0], -1).astype(np.float64)
    p = h.mean(axis=1)
    var = h.var(axis=1)
    denom = p * (1 - p)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(denom > 1e-12, var / denom, 0.0)
    return p, np.clip(r2, 0.0, 1.0)


def _thousandths(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(np.asarray(x, dtype=np.float64), 0.0, None) * 1000).astype(np.int64)


def _rounded_gp(gp: np.ndarray) -> np.ndarray:
    """GP in integer thousandths [..., 3] summing to exactly 1000 (largest remainder kept in GP0/GP1)."""
    gp = np.clip(np.asarray(gp, dtype=np.float64), 0.0, None)
    gp = gp / np.maximum(gp.sum(axis=-1, keepdims=True), 1e-300)
    g = np.rint(gp * 1000).astype(np.int64)
    g[..., 2] = np.clip(g[..., 2], 0, 1000)
    g[..., 1] = np.clip(g[..., 1], 0, 1000 - g[..., 2])
    g[..., 0] = 1000 - g[..., 1] - g[..., 2]
    return g


def _put_decimal(buf: np.ndarray, col: int, v: np.ndarray) -> None:
    """Write integer thousandths ``v`` (0..9999) as 'D.DDD' into buf[..., col:col+5]."""
    buf[..., col] = 48 + v // 1000
    buf[..., col + 1] = 46  # "."
    buf[..., col + 2] = 48 + (v // 100) % 10
    buf[..., col + 3] = 48 + (v // 10) % 10
    buf[..., col + 4] = 48 + v % 10


def format_genotypes(
    gt: np.ndarray, phased: np.ndarray, hds: np.ndarray, gp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample columns of a chunk as bytes [m, S*40] (each field led by a tab), plus DS in thousandths."""
    m, s = gt.shape[:2]
    buf = np.empty((m, s, FIELD_WIDTH), dtype=np.uint8)
    buf[..., 0] = 9  # tab
    buf[..., 1] = 48 + gt[..., 0]
    buf[..., 2] = np.where(phased, 124, 47)  # "|" or "/"
    buf[..., 3] = 48 + gt[..., 1]
    g = _rounded_gp(gp)
    ds = g[..., 1] + 2 * g[..., 2]
    buf[..., 4] = 58  # ":"
    _put_decimal(buf, 5, ds)
    buf[..., 10] = 58
    _put_decimal(buf, 11, g[..., 0])
    buf[..., 16] = 44  # ","
    _put_decimal(buf, 17, g[..., 1])
    buf[..., 22] = 44
    _put_decimal(buf, 23, g[..., 2])
    buf[..., 28] = 58
    h = np.clip(_thousandths(hds), 0, 1000)
    _put_decimal(buf, 29, h[..., 0])
    buf[..., 34] = 44
    _put_decimal(buf, 35, h[..., 1])
    return buf.reshape(m, s * FIELD_WIDTH), ds


def header_lines(
    contig: str,
    samples: list[str],
    command: str | None,
    extra_lines: list[str] | None = None,
    contig_length: int | None = None,
    filled: bool = False,
) -> list[str]:
    from . import __version__

    contig_line = f"##contig=<ID={contig}" + (f",length={contig_length}>" if contig_length else ">")
    lines = [
        "##fileformat=VCFv4.2",
        f"##filedate={datetime.date.today():%Y%m%d}",
        f"##source=vcfbert-fast {__version__}",
        contig_line,
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Estimated ALT allele frequency (mean HDS over target haplotypes)">',
        (
            '##INFO=<ID=DR2,Number=A,Type=Float,Description="Estimated dosage r-squared: var(HDS)/(AF*(1-AF)) '
            'over target haplotypes (minimac Rsq formula), clipped to [0,1]">'
        ),
        '##INFO=<ID=IMP,Number=0,Type=Flag,Description="Imputed marker (not typed in the target)">',
        '##INFO=<ID=TYPED,Number=0,Type=Flag,Description="Typed marker: genotypes are the input calls">',
        *([IMPFILL_HEADER] if filled else []),
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype (phased best guess at imputed markers)">',
        '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Estimated ALT dose [P(0/1)+2*P(1/1)]">',
        '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Estimated genotype probabilities P(0/0),P(0/1),P(1/1)">',
        '##FORMAT=<ID=HDS,Number=2,Type=Float,Description="Estimated haploid ALT dose per haplotype">',
    ]
    ours = {"fileformat", "filedate", "source", "contig"}
    ours_ids = {("INFO", k) for k in ("AF", "DR2", "IMP", "TYPED", "IMPFILL")} | {
        ("FORMAT", k) for k in ("GT", "DS", "GP", "HDS")
    }
    for line in extra_lines or []:
        key = line[2:].split("=", 1)[0]
        if key in ours or key == "vcfbert_fastCommand":
            continue
        if key in ("INFO", "FORMAT") and "ID=" in line:
            ident = line.split("ID=", 1)[1].split(",", 1)[0].rstrip(">")
            if (key, ident) in ours_ids:
                continue
        lines.append(line)
    if command:
        lines.append(f"##vcfbert_fastCommand={command}")
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples))
    return lines


def write_imputed_vcf(
    path: str | os.PathLike,
    sites: ImputedSites,
    samples: list[str],
    passthrough: list[tuple[int, str]] | None = None,
    command: str | None = None,
    extra_header: list[str] | None = None,
    chunk_sites: int = 4096,
    index: bool = True,
    progress=None,
) -> dict:
    """Write the imputed VCF; ``passthrough`` = (position, record text) lines copied as they are.

    Records come out sorted by position (panel sites and pass-through records merged; at equal
    positions the panel record comes first). Returns a summary with counts and the index path.
    """
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    m = int(sites.positions.shape[0])
    n_s = len(samples)
    hds = sites.hds
    if hds.shape != (m, n_s, 2):
        raise ValueError(f"hds has shape {hds.shape}, expected {(m, n_s, 2)}")
    if np.any(np.diff(sites.positions) < 0):
        raise ValueError("panel sites must be sorted by position")
    af, dr2 = sites.af, sites.dr2
    if af is None or dr2 is None:
        est_af, est_r2 = estimated_r2(hds)
        af = est_af if af is None else af
        dr2 = est_r2 if dr2 is None else dr2
    passthrough = sorted(passthrough or [], key=lambda t: t[0])
    pt_pos = np.array([p for p, _ in passthrough], dtype=np.int64)
    pt_next = 0
    n_written = 0
    # a hidden .NAME.partial-<pid> (never mistaken for a finished output), removed on any error or Ctrl-C
    with partial_file(path) as tmp, BgzfWriter(tmp) as out:
        filled = np.zeros(m, dtype=np.int64) if sites.filled is None else np.asarray(sites.filled)
        head = header_lines(sites.contig, samples, command, extra_header, filled=bool(filled.any()))
        out.write(("\n".join(head) + "\n").encode())
        for a in range(0, m, chunk_sites):
            b = min(m, a + chunk_sites)
            h = hds[a:b]
            gt = (h > 0.5).astype(np.int8) if sites.gt is None else sites.gt[a:b].astype(np.int8)
            phased = np.ones(gt.shape[:2], dtype=bool) if sites.phased is None else sites.phased[a:b]
            gp = gp_from_hds(h) if sites.gp is None else sites.gp[a:b]
            body, _ = format_genotypes(gt, phased, h, gp)
            lines = []
            for i in range(a, b):
                pos = int(sites.positions[i])
                while pt_next < len(passthrough) and pt_pos[pt_next] < pos:
                    lines.append(passthrough[pt_next][1].rstrip("\n").encode() + b"\n")
                    pt_next += 1
                info = f"AF={af[i]:.4g};DR2={dr2[i]:.3f};" + ("IMP" if sites.imputed[i] else "TYPED")
                if filled[i]:
                    info += f";IMPFILL={filled[i]}"
                prefix = (
                    f"{sites.contig}\t{pos}\t{sites.ids[i]}\t{sites.ref[i]}\t{sites.alt[i]}\t.\tPASS\t{info}"
                    "\tGT:DS:GP:HDS"
                )
                lines.append(prefix.encode() + body[i - a].tobytes() + b"\n")
            out.write(b"".join(lines))
            n_written += b - a
            if progress is not None:
                progress(b - a)
        rest = [t.rstrip("\n").encode() + b"\n" for _, t in passthrough[pt_next:]]
        out.write(b"".join(rest))
        out.close()  # complete (EOF block) before it is indexed and renamed into place
        idx = install_vcf(tmp, path, index=index)
    return {
        "path": path,
        "index": idx,
        "panel_sites": n_written,
        "imputed_sites": int(np.asarray(sites.imputed).sum()),
        "typed_sites": int(m - np.asarray(sites.imputed).sum()),
        "passthrough_records": len(passthrough),
        "samples": n_s,
    }
