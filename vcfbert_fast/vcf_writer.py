"""Imputed VCF output: sorted, indexed, FORMAT ``GT:DS:GP:HDS`` (or the ``-f`` subset), plus a sites table.

Why the shape it has:

* Genotype fields are fixed width (three decimals everywhere), so a chunk of sites is built as
  one ``uint8`` array by digit arithmetic: no per-genotype Python formatting.
* GP is rounded to thousandths with the sum forced to exactly 1.000, and DS is then written
  as exactly ``GP1 + 2*GP2``; HDS is rounded on its own (so ``DS == HDS1 + HDS2`` holds to
  +-0.002). GT is the phased best guess ``round(HDS)`` per haplotype unless given.
* The type follows the name or ``-O`` (``io.vcf_output``): ``.vcf`` plain text, ``.vcf.gz``
  BGZF (zlib, no ``bgzip`` binary), ``.bcf`` BCF (htslib through cyvcf2). It is written into a
  hidden ``.NAME.partial-<pid>`` beside the output, removed on any error or Ctrl-C; the index
  (``.tbi`` for BGZF, ``.csi`` for BCF, none for text) is made on it and both are renamed into
  place. Without the tool, or if indexing fails, the file is written unindexed, any old index
  beside it is removed (it would be stale), and stderr says so (the summary's ``index`` is None).
* The inputs' ``##contig`` lines (length, assembly) are kept as they are.
* ``INFO/DR2`` is the estimated dosage r^2: minimac's Rsq on haplotype dosages,
  ``var(HDS) / (p (1 - p))`` over the output haplotypes with ``p = mean(HDS)``, clipped to
  [0, 1] (0 at monomorphic sites). ``INFO/AF`` is ``p``. ``min_r2`` leaves out imputed sites
  whose DR2 (as written) is below it; typed sites are always written.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.vcf_output import install_output, open_output, output_type
from .paths import partial_file

FORMAT_FIELDS = ("GT", "DS", "GP", "HDS")  # what can be written; the default is all four, in this order
_FIELD_BYTES = {"GT": 3, "DS": 5, "GP": 17, "HDS": 11}  # "a|b", "D.DDD", "P.PPP,P.PPP,P.PPP", "H.HHH,H.HHH"
_FORMAT_HEADER = {
    "GT": '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype (phased best guess at imputed markers)">',
    "DS": '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Estimated ALT dose [P(0/1)+2*P(1/1)]">',
    "GP": '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Estimated genotype probabilities P(0/0),P(0/1),P(1/1)">',
    "HDS": '##FORMAT=<ID=HDS,Number=2,Type=Float,Description="Estimated haploid ALT dose per haplotype">',
}
IMPFILL_HEADER = (
    '##INFO=<ID=IMPFILL,Number=1,Type=Integer,Description="Typed marker with this many samples whose input '
    'call was missing (./. or half-missing): their genotypes are imputed by the model, not input calls">'
)


def format_fields(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The FORMAT fields to write from ``-f GT,DS,...`` (None: all four); GT first; a one-line error otherwise."""
    if text is None:
        return FORMAT_FIELDS
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    bad = [n for n in names if n not in FORMAT_FIELDS]
    fix = f"choose from {','.join(FORMAT_FIELDS)}, e.g. -f GT,DS"
    if bad or not names:
        raise InputError(None, f"-f/--format-fields: {', '.join(bad) or 'no field'} is not a field written here", fix)
    if len(set(names)) != len(names):
        raise InputError(None, f"-f/--format-fields {','.join(names)} names a field twice", fix)
    return tuple(sorted(names, key=lambda n: n != "GT"))  # GT first (VCF 4.2), the rest as given

@dataclass
class ImputedSites:
    """Everything the writer needs about the panel sites (M sites, S samples), sorted by position.

    ``hds`` [M, S, 2]: probability of ALT on each haplotype (typed sites: the input alleles).
    ``gt`` [M, S, 2] int8 (optional): the alleles to write; default ``hds > 0.5``.
    ``phased`` [M, S] bool (optional): separator ``|`` or ``/``; default all phased.
    ``gp`` [M, S, 3] (optional): genotype probabilities; default from ``hds`` as
    ``P(0)=(1-p1)(1-p2), P(1)=p1(1-p2)+p2(1-p1), P(2)=p1 p2``, computed per block of records.
    ``gp_het`` [M, S] bool (optional): genotypes whose GP is ``0,1,0`` whatever ``hds`` says (an
    unphased input het, HDS 0.5 each).
    ``gt``, ``phased`` and ``gp_het`` are read a block of rows at a time (``x[rows]``), so any
    object indexed so will do: ``impute`` passes ``imputation.calls.TypedOverlay``, which stores
    them at the typed sites only.
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
    gp_het: np.ndarray | None = None
    af: np.ndarray | None = None
    dr2: np.ndarray | None = None
    filled: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def gp_from_hds(hds: np.ndarray) -> np.ndarray:
    """Genotype probabilities [..., 3] from independent haplotype ALT probabilities [..., 2]."""
    p1 = hds[..., 0].astype(np.float64)
    p2 = hds[..., 1].astype(np.float64)
    return np.stack([(1 - p1) * (1 - p2), p1 * (1 - p2) + p2 * (1 - p1), p1 * p2], axis=-1)


def estimated_r2(hds: np.ndarray, block: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """(AF, DR2) per site from haplotype dosages [M, S, 2]: minimac Rsq = var(HDS) / (p(1-p)).

    Float64 over ``block`` values at a time: a whole chunk in float64 would be 16 bytes per genotype."""
    m = hds.shape[0]
    p, var = np.empty(m), np.empty(m)
    rows = max(1, block // max(1, hds[0].size))
    for a in range(0, m, rows):
        h = hds[a : a + rows].reshape(min(rows, m - a), -1).astype(np.float64)
        p[a : a + rows] = h.mean(axis=1)
        var[a : a + rows] = h.var(axis=1)
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


def _decimal_table() -> np.ndarray:
    """'D.DDD' as bytes ``[10000, 5]`` for every integer thousandths 0..9999."""
    x = np.arange(10000)
    digits = [48 + x // 1000, np.full_like(x, 46), 48 + (x // 100) % 10, 48 + (x // 10) % 10, 48 + x % 10]
    return np.stack(digits, axis=1).astype(np.uint8)


_DECIMALS = _decimal_table()


def _put_decimal(buf: np.ndarray, col: int, v: np.ndarray) -> None:
    """Write integer thousandths ``v`` (0..9999) as 'D.DDD' into buf[..., col:col+5]: a lookup
    (2.3x faster than the integer divisions per value, which numpy does not vectorise)."""
    buf[..., col : col + 5] = _DECIMALS[v]


def format_genotypes(
    gt: np.ndarray,
    phased: np.ndarray,
    hds: np.ndarray,
    gp: np.ndarray,
    fields: tuple[str, ...] = FORMAT_FIELDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample columns of a chunk as bytes [m, S*width] (each field led by a tab), plus DS in thousandths.

    ``fields``: the FORMAT fields in their order (``format_fields``); each has a fixed width.
    """
    m, s = gt.shape[:2]
    width = 1 + sum(_FIELD_BYTES[f] for f in fields) + len(fields) - 1
    buf = np.empty((m, s, width), dtype=np.uint8)
    buf[..., 0] = 9  # tab
    g = _rounded_gp(gp)
    ds = g[..., 1] + 2 * g[..., 2]
    col = 1
    for k, name in enumerate(fields):
        if k:
            buf[..., col] = 58  # ":"
            col += 1
        if name == "GT":
            buf[..., col] = 48 + gt[..., 0]
            buf[..., col + 1] = np.where(phased, 124, 47)  # "|" or "/"
            buf[..., col + 2] = 48 + gt[..., 1]
        elif name == "DS":
            _put_decimal(buf, col, ds)
        else:  # GP: three values, HDS: two, comma-separated
            v3 = g if name == "GP" else np.clip(_thousandths(hds), 0, 1000)
            for j in range(v3.shape[-1]):
                v = v3[..., j]
                if j:
                    buf[..., col + 6 * j - 1] = 44  # ","
                _put_decimal(buf, col + 6 * j, v)
        col += _FIELD_BYTES[name]
    return buf.reshape(m, s * width), ds


def contig_id(line: str) -> str:
    """The ID of a ``##contig=<ID=...>`` line ('' when it has none)."""
    return line.split("ID=", 1)[1].split(",", 1)[0].rstrip(">") if "ID=" in line else ""


def header_lines(
    contig: str,
    samples: list[str],
    command: str | None,
    extra_lines: list[str] | None = None,
    contig_length: int | None = None,
    fields: tuple[str, ...] = FORMAT_FIELDS,
    filled: bool = False,
) -> list[str]:
    """The output header; ``extra_lines`` (the inputs' header lines) keep their ``##contig`` lines.

    The inputs' ``##contig`` lines (length, assembly, md5...) are written as they are, the first
    per ID; only when none names ``contig`` is a line made here (with ``contig_length`` if given).
    Our own INFO/FORMAT definitions replace an input's of the same ID.
    """
    from . import __version__

    extra_lines = list(extra_lines or [])
    contig_lines: dict[str, str] = {}
    for line in extra_lines:
        if line.startswith("##contig=") and contig_id(line):
            contig_lines.setdefault(contig_id(line), line)
    if contig not in contig_lines:
        own = f"##contig=<ID={contig}" + (f",length={contig_length}>" if contig_length else ">")
        contig_lines = {contig: own, **contig_lines}
    lines = [
        "##fileformat=VCFv4.2",
        f"##filedate={datetime.date.today():%Y%m%d}",
        f"##source=vcfbert-fast {__version__}",
        *contig_lines.values(),
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Estimated ALT allele frequency (mean HDS over target haplotypes)">',
        (
            '##INFO=<ID=DR2,Number=A,Type=Float,Description="Estimated dosage r-squared: var(HDS)/(AF*(1-AF)) '
            'over target haplotypes (minimac Rsq formula), clipped to [0,1]">'
        ),
        '##INFO=<ID=IMP,Number=0,Type=Flag,Description="Imputed marker (not typed in the target)">',
        '##INFO=<ID=TYPED,Number=0,Type=Flag,Description="Typed marker: genotypes are the input calls">',
        *([IMPFILL_HEADER] if filled else []),
        *(_FORMAT_HEADER[f] for f in fields),
    ]
    ours = {"fileformat", "filedate", "source", "contig"}
    ours_ids = {("INFO", k) for k in ("AF", "DR2", "IMP", "TYPED", "IMPFILL")} | {("FORMAT", k) for k in fields}
    for line in extra_lines:
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


def _info(af: float, dr2: float, imputed: bool, filled: int = 0) -> str:
    """INFO of a panel site: ``IMP``, or ``TYPED`` (with ``IMPFILL=n`` where the model filled n samples' calls)."""
    return f"AF={af:.4g};DR2={dr2:.3f};" + ("IMP" if imputed else "TYPED") + (f";IMPFILL={filled}" if filled else "")


def write_sites_file(path: str, sites: ImputedSites, af: np.ndarray, dr2: np.ndarray, kept: np.ndarray) -> str:
    """A sites-only table of every panel site (minimac's ``.info``), written atomically.

    Columns: CHROM POS ID REF ALT AF DR2 STATUS (TYPED or IMPUTED) FILTER (PASS, or MIN_R2 for an
    imputed site left out of the VCF by ``--min-r2``). AF and DR2 as in the VCF's INFO.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rows = ["#CHROM\tPOS\tID\tREF\tALT\tAF\tDR2\tSTATUS\tFILTER\n"]
    for i in range(int(sites.positions.shape[0])):
        rows.append(
            f"{sites.contig}\t{int(sites.positions[i])}\t{sites.ids[i]}\t{sites.ref[i]}\t{sites.alt[i]}\t"
            f"{af[i]:.4g}\t{dr2[i]:.3f}\t{'IMPUTED' if sites.imputed[i] else 'TYPED'}\t"
            f"{'PASS' if kept[i] else 'MIN_R2'}\n"
        )
    with partial_file(path) as tmp:
        with open(tmp, "w") as fh:
            fh.writelines(rows)
        os.replace(tmp, path)
    return path


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
    output: str | None = None,
    fields: tuple[str, ...] | str | None = None,
    min_r2: float | None = None,
    sites_path: str | None = None,
) -> dict:
    """Write the imputed VCF; ``passthrough`` = (position, record text) lines copied as they are.

    Records come out sorted by position (panel sites and pass-through records merged; at equal
    positions the panel record comes first). ``output``: the -O letter (None: from the name);
    ``fields``: the FORMAT fields (``format_fields``); ``min_r2``: imputed sites with DR2 below it
    are left out (typed sites never are) and counted; ``sites_path``: also write the sites table
    (``write_sites_file``). Returns a summary with counts and the index path.
    """
    path = str(path)
    kind = output_type(path, output)
    fields = format_fields(fields)
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
    imputed = np.asarray(sites.imputed, dtype=bool)
    # compare the DR2 as written (3 decimals), so the VCF and the sites file agree with the filter
    kept = ~imputed | (np.round(np.asarray(dr2, dtype=np.float64), 3) >= min_r2) if min_r2 else np.ones(m, bool)
    passthrough = sorted(passthrough or [], key=lambda t: t[0])
    pt_pos = np.array([p for p, _ in passthrough], dtype=np.int64)
    pt_next = 0
    fmt = ":".join(fields)
    # a hidden .NAME.partial-<pid> (never mistaken for a finished output), removed on any error or Ctrl-C
    filled = np.zeros(m, dtype=np.int64) if sites.filled is None else np.asarray(sites.filled)
    with partial_file(path) as tmp, open_output(tmp, kind) as out:
        head = header_lines(sites.contig, samples, command, extra_header, fields=fields, filled=bool(filled.any()))
        out.write(("\n".join(head) + "\n").encode())
        for a in range(0, m, chunk_sites):
            b = min(m, a + chunk_sites)
            rows = np.flatnonzero(kept[a:b]) + a
            if rows.size:
                h = hds[rows]
                gt = (h > 0.5).astype(np.int8) if sites.gt is None else sites.gt[rows].astype(np.int8)
                phased = np.ones(gt.shape[:2], dtype=bool) if sites.phased is None else sites.phased[rows]
                gp = gp_from_hds(h) if sites.gp is None else sites.gp[rows]
                if sites.gp_het is not None:
                    gp[sites.gp_het[rows]] = (0.0, 1.0, 0.0)
                body, _ = format_genotypes(gt, phased, h, gp, fields)
            lines = []
            for r, i in enumerate(rows):
                pos = int(sites.positions[i])
                while pt_next < len(passthrough) and pt_pos[pt_next] < pos:
                    lines.append(passthrough[pt_next][1].rstrip("\n").encode() + b"\n")
                    pt_next += 1
                prefix = (
                    f"{sites.contig}\t{pos}\t{sites.ids[i]}\t{sites.ref[i]}\t{sites.alt[i]}\t.\tPASS\t"
                    f"{_info(af[i], dr2[i], imputed[i], filled[i])}\t{fmt}"
                )
                lines.append(prefix.encode() + body[r].tobytes() + b"\n")
            out.write(b"".join(lines))
            if progress is not None:
                progress(b - a)
        rest = [t.rstrip("\n").encode() + b"\n" for _, t in passthrough[pt_next:]]
        out.write(b"".join(rest))
        out.close()  # complete (EOF block) before it is indexed and renamed into place
        idx = install_output(tmp, path, kind, index=index)
    if sites_path is not None:
        write_sites_file(sites_path, sites, af, dr2, kept)
    n_imp = int(imputed.sum())
    return {
        "path": path,
        "output_type": kind,
        "index": idx,
        "format": fmt,
        "panel_sites": int(kept.sum()),
        "imputed_sites": int((imputed & kept).sum()),
        "typed_sites": int(m - n_imp),
        "min_r2": min_r2,
        "below_min_r2": int(n_imp - (imputed & kept).sum()),
        "sites_file": sites_path,
        "passthrough_records": len(passthrough),
        "samples": n_s,
    }
