"""Score imputed VCFs against the truth: dosage r^2 by MAF bin, concordance, a table and a plot.

Conventions (the imputation literature's, see docs/IMPUTATION.md):

* **Masked sites** are the truth's sites that were *not* typed in the target. With ``target``
  they are the truth sites absent from the target VCF (matched on CHROM, POS, REF, ALT).
  Without it they are read from the first imputed file: a site is imputed when its INFO
  carries ``IMP`` (Beagle, vcfbert-fast) or ``IMPUTED`` (minimac4), typed otherwise.
* **MAF** comes from the reference panel when ``ref_path`` is given, else from the truth.
* **Dosages are counted as copies of the panel's minor allele** (ALT if the panel's ALT
  frequency is <= 0.5, else REF), so the few sites whose ALT is the common allele do not
  dominate a rare bin. Dosage = FORMAT DS if the file has it, else the GT allele count.
* **Aggregate r^2**: squared Pearson correlation over every (site, sample) genotype of the bin
  pooled. **Mean per-site r^2**: the mean over sites polymorphic in the targets' truth; a site
  whose imputed dosage is constant scores 0.
* **AF baseline** (the floor): dosage = 2 x panel frequency of the coded allele at every sample.
* **DR2 calibration**: the imputed file's estimated r^2 (INFO ``DR2``, Beagle / vcfbert-fast, or
  ``R2``, minimac) against the true per-site r^2, over the masked sites polymorphic in the truth:
  means per MAF bin and per DR2 bin (``PREFIX_dr2_calibration.png``), and how many masked sites
  pass ``DR2 >= 0.3`` and ``DR2 >= 0.8`` (the usual filters; ``impute --min-r2`` keeps the same).
* **Concordance**: best-guess genotype (GT allele count, else rounded DS) equals the truth.
  **Non-reference concordance**: the same over genotypes where the truth or the guess carries an
  ALT allele.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .optional import optional_import

MAF_BINS: list[tuple[float, float]] = [(0.001, 0.005), (0.005, 0.01), (0.01, 0.05), (0.05, 0.2), (0.2, 0.5)]
AF_BASELINE = "AF baseline"
DR2_THRESHOLDS = (0.3, 0.8)
DR2_BIN_EDGES = tuple(round(0.1 * i, 1) for i in range(11))  # the calibration plot's DR2 bins


def bin_label(lo: float, hi: float) -> str:
    return f"[{lo:g},{hi:g}]" if hi >= 0.5 else f"[{lo:g},{hi:g})"


def maf_bin_index(maf: np.ndarray) -> np.ndarray:
    """Bin of each MAF (-1 outside every bin); the last bin is closed at 0.5."""
    out = np.full(maf.shape, -1, dtype=np.int64)
    for b, (lo, hi) in enumerate(MAF_BINS):
        inside = (maf >= lo) & ((maf <= hi) if hi >= 0.5 else (maf < hi))
        out[inside] = b
    return out


@dataclass
class _Truth:
    keys: list[tuple[str, int, str, str]]
    samples: list[str]
    alt_count: np.ndarray  # int8 [M, S]: ALT copies, -1 missing
    n_skipped_multiallelic: int


def _site_key(v) -> tuple[str, int, str, str]:
    return (v.CHROM, int(v.POS), v.REF, ",".join(v.ALT))


def _read_truth(path: str) -> _Truth:
    import cyvcf2

    _check_exists(path)
    vcf = cyvcf2.VCF(path, gts012=True)
    keys, rows, skipped = [], [], 0
    for v in vcf:
        if len(v.ALT) != 1:
            skipped += 1
            continue
        keys.append(_site_key(v))
        g = np.asarray(v.gt_types, dtype=np.int8)
        rows.append(np.where(g == 3, -1, g).astype(np.int8))
    samples = list(vcf.samples)
    vcf.close()
    if not keys:
        raise InputError(
            path, "no biallelic sites in the truth VCF", "pass the truth genotypes of the targets"
        )
    return _Truth(keys, samples, np.stack(rows), skipped)


def _check_exists(path: str | None) -> None:
    if path is not None and not os.path.exists(path):
        raise InputError(path, "file not found", "check the path")


def _site_keys(path: str) -> set[tuple[str, int, str, str]]:
    import cyvcf2

    _check_exists(path)
    vcf = cyvcf2.VCF(path, samples=[])  # sites only: fast
    keys = {_site_key(v) for v in vcf}
    vcf.close()
    return keys


def _imputed_flag_keys(path: str) -> tuple[set, set]:
    """(imputed keys, typed keys) of an imputed VCF from its INFO IMP / IMPUTED flags."""
    import cyvcf2

    _check_exists(path)
    vcf = cyvcf2.VCF(path, samples=[])
    imputed, typed = set(), set()
    for v in vcf:
        flagged = v.INFO.get("IMP") is not None or v.INFO.get("IMPUTED") is not None
        (imputed if flagged else typed).add(_site_key(v))
    vcf.close()
    return imputed, typed


def _panel_alt_freq(path: str, wanted: set) -> dict:
    """ALT frequency over called panel haplotypes at the wanted sites."""
    import cyvcf2

    _check_exists(path)
    vcf = cyvcf2.VCF(path, gts012=True)
    out = {}
    for v in vcf:
        key = _site_key(v)
        if key not in wanted:
            continue
        g = np.asarray(v.gt_types)
        called = g != 3
        n = 2 * int(called.sum())
        if n:
            out[key] = float(g[called].sum()) / n
    vcf.close()
    return out


def _read_imputed(
    path: str, index: dict, samples: list[str]
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Dosage (ALT copies, NaN missing), best-guess ALT count (-1 missing), the number of masked
    sites absent, and the estimated r^2 (INFO DR2, else R2; NaN without) at the masked sites."""
    import cyvcf2

    _check_exists(path)
    vcf = cyvcf2.VCF(path, gts012=True)
    pos_of = {s: i for i, s in enumerate(vcf.samples)}
    absent = [s for s in samples if s not in pos_of]
    if absent:
        raise InputError(
            path,
            f"{len(absent)} truth samples missing from the imputed file (first: {absent[0]})",
            "impute the same samples as in the truth VCF",
        )
    cols = np.array([pos_of[s] for s in samples], dtype=np.int64)
    m = len(index)
    dos = np.full((m, len(samples)), np.nan, dtype=np.float64)
    best = np.full((m, len(samples)), -1, dtype=np.int8)
    seen = np.zeros(m, dtype=bool)
    dr2 = np.full(m, np.nan, dtype=np.float64)
    has_ds = "DS" in {h["ID"] for h in vcf.header_iter() if h["HeaderType"] == "FORMAT"}
    for v in vcf:
        i = index.get(_site_key(v))
        if i is None:
            continue
        seen[i] = True
        dr2[i] = _info_r2(v)
        g = np.asarray(v.gt_types)[cols]
        gt = np.where(g == 3, -1, g).astype(np.int8)
        ds = v.format("DS") if has_ds else None
        if ds is not None:
            d = np.asarray(ds, dtype=np.float64)[cols, 0]
            d[(d < -1e-6) | (d > 2 + 1e-6)] = np.nan  # cyvcf2 encodes missing floats as huge/negative
            dos[i] = d
            gt_missing = gt < 0
            gt[gt_missing & ~np.isnan(d)] = np.rint(d[gt_missing & ~np.isnan(d)]).astype(np.int8)
        else:
            dos[i] = np.where(gt < 0, np.nan, gt)
        best[i] = gt
    vcf.close()
    return dos, best, int((~seen).sum()), dr2


def _info_r2(v) -> float:
    """The record's estimated r^2: INFO DR2 (Beagle, vcfbert-fast) or R2 (minimac); NaN if neither."""
    for key in ("DR2", "R2"):
        x = v.INFO.get(key)
        if x is not None:
            x = x[0] if isinstance(x, tuple) else x
            try:
                return float(x)
            except (TypeError, ValueError):
                return float("nan")
    return float("nan")


def _r2(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 2:
        return None
    vx, vy = x.var(), y.var()
    if vx <= 0 or vy <= 0:
        return None
    c = ((x - x.mean()) * (y - y.mean())).mean()
    return float(c * c / (vx * vy))


def site_r2(truth_m: np.ndarray, dos_m: np.ndarray) -> np.ndarray:
    """Per-site r^2 [m] of dosage against truth over the samples both have: NaN where the truth is
    monomorphic in the targets (undefined), 0 where the imputed dosage is constant."""
    valid = (truth_m >= 0) & ~np.isnan(dos_m)
    n = valid.sum(axis=1).astype(np.float64)
    t = np.where(valid, truth_m, 0).astype(np.float64)
    d = np.where(valid, dos_m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt, md = t.sum(axis=1) / n, d.sum(axis=1) / n
        tc, dc = np.where(valid, t - mt[:, None], 0.0), np.where(valid, d - md[:, None], 0.0)
        vt, vd, c = (tc * tc).sum(axis=1), (dc * dc).sum(axis=1), (tc * dc).sum(axis=1)
        r2 = np.where(vd > 1e-12 * np.maximum(n, 1), c * c / (vt * vd), 0.0)
    return np.where((n >= 2) & (vt > 1e-12), r2, np.nan)


def _scores(truth_m: np.ndarray, dos_m: np.ndarray, truth_alt: np.ndarray, best_alt: np.ndarray) -> dict:
    """Scores over a set of sites; minor-allele-coded truth/dosage [m, S], ALT-coded genotypes [m, S]."""
    valid = (truth_m >= 0) & ~np.isnan(dos_m)
    agg = _r2(truth_m[valid].astype(np.float64), dos_m[valid])
    per_site = site_r2(truth_m, dos_m)
    site_r2s = per_site[~np.isnan(per_site)]
    gvalid = (truth_alt >= 0) & (best_alt >= 0)
    conc = float((truth_alt[gvalid] == best_alt[gvalid]).mean()) if gvalid.any() else None
    nonref = gvalid & ((truth_alt > 0) | (best_alt > 0))
    nrc = float((truth_alt[nonref] == best_alt[nonref]).mean()) if nonref.any() else None
    return {
        "n_sites": int(truth_m.shape[0]),
        "n_genotypes": int(valid.sum()),
        "aggregate_r2": agg,
        "mean_site_r2": float(np.mean(site_r2s)) if site_r2s.size else None,
        "n_polymorphic_sites": int(site_r2s.size),
        "concordance": conc,
        "nonref_concordance": nrc,
    }


def _dr2_group(dr2: np.ndarray, true_r2: np.ndarray) -> dict:
    """DR2 against true r^2 over a set of sites: means over the sites with a DR2 that are
    polymorphic in the truth, pass counts over every site with a DR2."""
    has = ~np.isnan(dr2)
    poly = has & ~np.isnan(true_r2)
    out = {"n_sites": int(has.sum()), "n_polymorphic": int(poly.sum())}
    out["mean_dr2"] = float(dr2[poly].mean()) if poly.any() else None
    out["mean_true_r2"] = float(true_r2[poly].mean()) if poly.any() else None
    out["gap"] = None if out["mean_dr2"] is None else out["mean_dr2"] - out["mean_true_r2"]
    for t in DR2_THRESHOLDS:
        ok = has & (dr2 >= t)
        out[f"pass_{t:g}"] = int(ok.sum())
        out[f"true_r2_pass_{t:g}"] = float(true_r2[ok & poly].mean()) if (ok & poly).any() else None
    return out


def dr2_calibration(dr2: np.ndarray, true_r2: np.ndarray, bins: np.ndarray) -> dict | None:
    """The file's DR2 calibration (None when it writes no DR2/R2): :func:`_dr2_group` per MAF bin,
    over the binned and over all masked sites, and per DR2 bin (``by_dr2``, the plot's points)."""
    if np.isnan(dr2).all():
        return None
    out = {"bins": {}}
    for b, (lo, hi) in enumerate(MAF_BINS):
        out["bins"][bin_label(lo, hi)] = _dr2_group(dr2[bins == b], true_r2[bins == b])
    out["all_binned"] = _dr2_group(dr2[bins >= 0], true_r2[bins >= 0])
    out["all_masked"] = _dr2_group(dr2, true_r2)
    out["by_dr2"] = []
    edges = DR2_BIN_EDGES
    for lo, hi in itertools.pairwise(edges):
        sel = (dr2 >= lo) & ((dr2 <= hi) if hi == edges[-1] else (dr2 < hi))
        g = _dr2_group(dr2[sel], true_r2[sel])
        out["by_dr2"].append(
            {
                "dr2_bin": f"[{lo:g},{hi:g}{']' if hi == edges[-1] else ')'}",
                **{k: g[k] for k in ("n_polymorphic", "mean_dr2", "mean_true_r2")},
            }
        )
    return out


def evaluate(
    truth_path: str,
    imputed_paths: list[str] | str,
    ref_path: str | None = None,
    out_prefix: str | None = None,
    target_path: str | None = None,
    labels: list[str] | None = None,
    plot: bool = True,
) -> dict:
    """Score each imputed VCF against the truth over the masked sites; see the module docstring.

    Writes ``out_prefix``.json / .md / .png when ``out_prefix`` is given. Returns the JSON dict.
    """
    paths = [imputed_paths] if isinstance(imputed_paths, (str, os.PathLike)) else list(imputed_paths)
    paths = [str(p) for p in paths]
    if not paths:
        raise InputError(None, "no imputed VCF given", "pass at least one --imputed file")
    if labels is None:
        labels = [_label(p) for p in paths]
    if len(labels) != len(paths):
        raise InputError(
            None, f"{len(labels)} labels for {len(paths)} imputed files", "give one label per file"
        )
    labels = _dedupe(labels)

    truth = _read_truth(str(truth_path))
    # Which truth sites were masked (not typed in the target)?
    if target_path is not None:
        typed = _site_keys(str(target_path))
        masked_source = f"absent from the target {target_path}"
    else:
        imp, _typed = _imputed_flag_keys(paths[0])
        typed = set(truth.keys) - imp
        masked_source = f"IMP/IMPUTED flag in {paths[0]}"
    masked = np.array([k not in typed for k in truth.keys], dtype=bool)
    midx = np.flatnonzero(masked)
    if midx.size == 0:
        raise InputError(
            truth_path, "no masked sites: every truth site was typed", "check --target / the IMP flags"
        )

    # MAF and the coded (minor) allele, from the panel when given.
    if ref_path is not None:
        afd = _panel_alt_freq(str(ref_path), {truth.keys[i] for i in midx})
        alt_freq = np.array([afd.get(truth.keys[i], np.nan) for i in midx])
        maf_source = f"panel {ref_path}"
    else:
        t = truth.alt_count[midx].astype(np.float64)
        t[t < 0] = np.nan
        with np.errstate(invalid="ignore"):
            alt_freq = np.nanmean(t, axis=1) / 2.0
        maf_source = f"truth {truth_path}"
    not_in_panel = int(np.isnan(alt_freq).sum())
    flip = alt_freq > 0.5  # the panel's minor allele is REF: count REF copies
    maf = np.where(flip, 1.0 - alt_freq, alt_freq)
    bins = maf_bin_index(np.nan_to_num(maf, nan=-1.0))

    truth_alt = truth.alt_count[midx]
    truth_m = np.where(truth_alt < 0, -1, np.where(flip[:, None], 2 - truth_alt, truth_alt)).astype(np.int8)
    base_dos = np.broadcast_to(2.0 * maf[:, None], truth_m.shape)
    masked_index = {truth.keys[i]: j for j, i in enumerate(midx)}

    result: dict = {
        "truth": str(truth_path),
        "maf_bins": [bin_label(lo, hi) for lo, hi in MAF_BINS],
        "masked_sites": int(midx.size),
        "masked_source": masked_source,
        "maf_source": maf_source,
        "masked_sites_not_in_panel": not_in_panel,
        "masked_sites_below_lowest_bin": int(((bins < 0) & ~np.isnan(maf)).sum()),
        "truth_multiallelic_skipped": truth.n_skipped_multiallelic,
        "n_samples": len(truth.samples),
        "files": {},
    }

    def score_all(dos_m: np.ndarray, best: np.ndarray) -> dict:
        out = {"bins": {}}
        for b, (lo, hi) in enumerate(MAF_BINS):
            sel = bins == b
            out["bins"][bin_label(lo, hi)] = _scores(truth_m[sel], dos_m[sel], truth_alt[sel], best[sel])
        sel = bins >= 0
        out["all_binned"] = _scores(truth_m[sel], dos_m[sel], truth_alt[sel], best[sel])
        return out

    for path, label in zip(paths, labels):
        dos, best, missing, dr2 = _read_imputed(path, masked_index, truth.samples)
        dos_m = np.where(flip[:, None], 2.0 - dos, dos)
        entry = score_all(dos_m, best)
        entry["path"] = path
        entry["missing_masked_sites"] = missing
        entry["dr2"] = dr2_calibration(dr2, site_r2(truth_m, dos_m), bins)
        result["files"][label] = entry

    base_best = np.where(flip[:, None], 2 - np.rint(base_dos), np.rint(base_dos)).astype(np.int8)
    result["af_baseline"] = score_all(np.array(base_dos), base_best)

    if out_prefix is not None:
        write_reports(result, out_prefix, plot=plot)
    return result


def _label(path: str) -> str:
    name = Path(path).name
    for ext in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _dedupe(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        n = seen.get(lab, 0)
        seen[lab] = n + 1
        out.append(lab if n == 0 else f"{lab}#{n + 1}")
    return out


def _fmt(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def markdown_table(result: dict) -> str:
    """Two tables: r^2 per MAF bin (aggregate / mean per-site) and concordance per file."""
    labels = list(result["files"])
    head = ["MAF bin", "sites"] + [f"{lab} r2 agg / site" for lab in labels] + ["AF baseline r2 agg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = result["maf_bins"] + ["all_binned"]
    for b in rows:
        get = (lambda e: e["all_binned"]) if b == "all_binned" else (lambda e, b=b: e["bins"][b])
        base = get(result["af_baseline"])
        cells = [b if b != "all_binned" else "all (MAF >= 0.001)", str(base["n_sites"])]
        for lab in labels:
            s = get(result["files"][lab])
            cells.append(f"{_fmt(s['aggregate_r2'])} / {_fmt(s['mean_site_r2'])}")
        cells.append(_fmt(base["aggregate_r2"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| file | concordance | non-ref concordance | masked sites missing from output |",
        "|---|---|---|---|",
    ]
    for lab in labels:
        e = result["files"][lab]
        s = e["all_binned"]
        lines.append(
            f"| {lab} | {_fmt(s['concordance'], 4)} | {_fmt(s['nonref_concordance'], 4)} | "
            f"{e['missing_masked_sites']} |"
        )
    return "\n".join(lines + _dr2_table(result)) + "\n"


def _dr2_table(result: dict) -> list[str]:
    """DR2 against true r^2 per MAF bin, and the DR2 filters' pass counts (files that write DR2)."""
    files = {lab: e["dr2"] for lab, e in result["files"].items() if e.get("dr2")}
    if not files:
        return []
    thr = " | ".join(f"DR2 >= {t:g}: sites (their true r2)" for t in DR2_THRESHOLDS)
    lines = [
        "",
        (
            "DR2 calibration: mean DR2 and mean true per-site r2 over the masked sites polymorphic in the "
            "truth; pass counts over every masked site with a DR2."
        ),
        "",
        f"| file | MAF bin | sites | mean DR2 | mean true r2 | DR2 - r2 | {thr} |",
        "|---|---|---|---|---|---|" + "---|" * len(DR2_THRESHOLDS),
    ]
    for lab, d in files.items():
        rows = [(b, d["bins"][b]) for b in result["maf_bins"]]
        rows += [("all (MAF >= 0.001)", d["all_binned"]), ("all masked", d["all_masked"])]
        for name, g in rows:
            passes = " | ".join(
                f"{g[f'pass_{t:g}']} ({_fmt(g[f'true_r2_pass_{t:g}'])})" for t in DR2_THRESHOLDS
            )
            lines.append(
                f"| {lab} | {name} | {g['n_polymorphic']} | {_fmt(g['mean_dr2'])} | {_fmt(g['mean_true_r2'])} | "
                f"{_signed(g['gap'])} | {passes} |"
            )
    return lines


def plot_r2(result: dict, path: str) -> None:
    """r^2 (aggregate, and mean per-site) against MAF bin: one line per file plus the AF baseline."""
    matplotlib = optional_import("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result["maf_bins"]
    x = np.arange(len(bins))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    series = [(lab, e, "-o") for lab, e in result["files"].items()] + [
        (AF_BASELINE, result["af_baseline"], "--x")
    ]
    for ax, key, title in zip(
        axes, ("aggregate_r2", "mean_site_r2"), ("aggregate r$^2$", "mean per-site r$^2$")
    ):
        for lab, e, style in series:
            if lab == AF_BASELINE and key == "mean_site_r2":
                continue  # constant per site: 0 by construction
            y = [e["bins"][b][key] for b in bins]
            ax.plot(x, [np.nan if v is None else v for v in y], style, label=lab)
        ax.set_xticks(x, bins, rotation=20)
        ax.set_xlabel("minor allele frequency (panel)")
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dosage r$^2$ (masked sites)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_dr2_calibration(result: dict, path: str) -> None:
    """Estimated DR2 against true r^2: mean true r^2 per DR2 bin (left; on the diagonal when DR2
    means what it says) and mean DR2 beside mean true r^2 per MAF bin (right); files with DR2."""
    matplotlib = optional_import("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {lab: e["dr2"] for lab, e in result["files"].items() if e.get("dr2")}
    bins = result["maf_bins"]
    x = np.arange(len(bins))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot([0, 1], [0, 1], ":", color="grey", label="DR2 = true r$^2$")
    for i, (lab, d) in enumerate(files.items()):
        color = f"C{i}"
        pts = [
            (p["mean_dr2"], p["mean_true_r2"], p["n_polymorphic"]) for p in d["by_dr2"] if p["n_polymorphic"]
        ]
        if pts:
            px, py, n = (np.array(v, dtype=float) for v in zip(*pts))
            left.plot(px, py, "-", color=color, alpha=0.5)
            left.scatter(px, py, s=12 + 60 * np.sqrt(n / n.max()), color=color, label=lab)
        for key, style, what in (("mean_true_r2", "-o", "true r$^2$"), ("mean_dr2", "--s", "DR2")):
            y = [d["bins"][b][key] for b in bins]
            right.plot(x, [np.nan if v is None else v for v in y], style, color=color, label=f"{lab} {what}")
    left.set_xlabel("mean estimated DR2 (DR2 bins of 0.1; size: sites)")
    left.set_ylabel("mean true r$^2$ (masked sites)")
    left.set_xlim(0, 1.02)
    left.set_ylim(0, 1.02)
    left.set_title("DR2 calibration")
    right.set_xticks(x, bins, rotation=20)
    right.set_xlabel("minor allele frequency (panel)")
    right.set_ylim(0, 1.02)
    right.set_title("mean DR2 and mean true r$^2$ by MAF")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(result: dict, out_prefix: str, plot: bool = True) -> dict[str, str]:
    """PREFIX.json / .md, and with ``plot`` PREFIX.png and (files with DR2) PREFIX_dr2_calibration.png,
    whose path is ``result["calibration_png"]`` (None when not drawn)."""
    prefix = str(out_prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": prefix + ".json", "md": prefix + ".md"}
    has_dr2 = any(e.get("dr2") for e in result["files"].values())
    result["calibration_png"] = prefix + "_dr2_calibration.png" if plot and has_dr2 else None
    if plot:
        paths["png"] = prefix + ".png"
    if result["calibration_png"]:
        paths["calibration_png"] = result["calibration_png"]
    result["reports"] = paths
    with open(paths["json"], "w") as fh:
        json.dump(result, fh, indent=2)
    with open(paths["md"], "w") as fh:
        fh.write(markdown_table(result))
    if plot:
        plot_r2(result, paths["png"])
    if result["calibration_png"]:
        plot_dr2_calibration(result, result["calibration_png"])
    return paths


def add_arguments(parser) -> None:
    parser.add_argument("--truth", required=True, help="VCF with the targets' true genotypes at all sites")
    parser.add_argument("--imputed", required=True, nargs="+", help="one or more imputed VCFs to compare")
    parser.add_argument("--ref", default=None, help="reference panel VCF: MAF and minor allele from it")
    parser.add_argument(
        "--target", default=None, help="the target VCF that was imputed: its sites are the typed ones"
    )
    parser.add_argument("--labels", nargs="+", default=None, help="names for the imputed files in table/plot")
    parser.add_argument("--out", default=None, help="output prefix for PREFIX.json, PREFIX.md, PREFIX.png")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def run(args) -> int:
    result = evaluate(
        args.truth,
        args.imputed,
        ref_path=args.ref,
        out_prefix=args.out,
        target_path=args.target,
        labels=args.labels,
        plot=not args.no_plot,
    )
    print(
        f"{result['masked_sites']} masked sites ({result['masked_source']}); MAF from {result['maf_source']}"
    )
    print(markdown_table(result), end="")
    for lab, e in result["files"].items():
        if e["missing_masked_sites"]:
            print(f"WARNING: {lab}: {e['missing_masked_sites']} masked sites missing from the imputed output")
    if args.out:
        print("wrote " + ", ".join(result["reports"].values()))
    return 0
