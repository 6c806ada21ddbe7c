"""evaluate(): r^2 by MAF bin and concordance against values computed by hand on a tiny truth/imputed pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vcfbert_fast.evaluate import evaluate, maf_bin_index

HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
    '##INFO=<ID=IMP,Number=0,Type=Flag,Description="imputed">\n'
    '##INFO=<ID=DR2,Number=A,Type=Float,Description="estimated r2">\n'
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    '##FORMAT=<ID=DS,Number=1,Type=Float,Description="ALT dosage">\n'
)
SAMPLES = ["a", "b", "c", "d", "e"]


def _vcf(path, samples, records, fmt="GT"):
    with open(path, "w") as fh:
        fh.write(
            HEADER + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n"
        )
        fh.writelines(
            f"1\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t{info}\t{fmt}\t" + "\t".join(cells) + "\n"
            for pos, ref, alt, info, cells in records
        )
    return str(path)


# Panel: 250 samples (500 haplotypes); ALT copies per site chosen to land in each MAF bin.
PANEL_ALT = {100: 250, 200: 1, 300: 497, 400: 10, 500: 50, 600: 150, 700: 200}
# Truth genotypes (ALT copies) of the 5 targets; site 100 is typed (in the target).
TRUTH = {
    100: [0, 1, 2, 1, 0],
    200: [0, 0, 1, 0, 0],
    300: [2, 2, 1, 2, 2],  # ALT is the panel's major allele here
    400: [0, 1, 0, 0, 1],
    500: [1, 0, 2, 0, 1],
    600: [1, 1, 0, 2, 0],
    700: [2, 1, 1, 0, 1],
}
# Imputed ALT dosages at the masked sites.
DS = {
    200: [0.1, 0.0, 0.7, 0.2, 0.0],
    300: [1.9, 2.0, 1.2, 1.6, 2.0],
    400: [0.0, 0.8, 0.3, 0.1, 0.6],
    500: [0.9, 0.2, 1.7, 0.0, 1.4],
    600: [1.0, 0.6, 0.1, 1.9, 0.2],
    700: [1.8, 1.1, 0.7, 0.3, 0.9],
}


def _gt(n: int) -> str:
    return {0: "0|0", 1: "0|1", 2: "1|1"}[n]


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    panel_recs = []
    for pos, k in PANEL_ALT.items():
        haps = np.zeros(500, dtype=int)
        haps[rng.choice(500, size=k, replace=False)] = 1
        panel_recs.append((pos, "A", "C", ".", [f"{haps[2 * s]}|{haps[2 * s + 1]}" for s in range(250)]))
    ref = _vcf(tmp_path / "ref.vcf", [f"p{i}" for i in range(250)], panel_recs)
    truth = _vcf(
        tmp_path / "truth.vcf", SAMPLES, [(p, "A", "C", ".", [_gt(x) for x in g]) for p, g in TRUTH.items()]
    )
    target = _vcf(tmp_path / "target.vcf", SAMPLES, [(100, "A", "C", ".", [_gt(x) for x in TRUTH[100]])])
    recs = [(100, "A", "C", ".", [f"{_gt(x)}:{x}" for x in TRUTH[100]])]
    for p, d in DS.items():
        recs.append((p, "A", "C", "IMP", [f"{_gt(round(x))}:{x}" for x in d]))
    imputed = _vcf(tmp_path / "imp.vcf", SAMPLES, recs, fmt="GT:DS")
    # GT-only file (minimac-like without DS), missing site 700 and with one wrong genotype.
    gt_recs = [(100, "A", "C", ".", [_gt(x) for x in TRUTH[100]])]
    gt_only = {p: list(g) for p, g in TRUTH.items() if p not in (100, 700)}
    gt_only[500][2] = 0  # truth 2 -> called 0
    for p, g in gt_only.items():
        gt_recs.append((p, "A", "C", "IMP", [_gt(x) for x in g]))
    gt_file = _vcf(tmp_path / "gtonly.vcf", SAMPLES, gt_recs)
    return {
        "ref": ref,
        "truth": truth,
        "target": target,
        "imputed": imputed,
        "gt_only": gt_file,
        "dir": tmp_path,
    }


def _r2(x, y):
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1] ** 2)


def test_bins_of_maf():
    maf = np.array([0.0005, 0.001, 0.0049, 0.005, 0.01, 0.049, 0.05, 0.2, 0.5])
    assert maf_bin_index(maf).tolist() == [-1, 0, 0, 1, 2, 2, 3, 4, 4]


def test_r2_and_concordance_by_hand(files):
    res = evaluate(
        files["truth"], [files["imputed"]], ref_path=files["ref"], out_prefix=str(files["dir"] / "ev")
    )
    assert res["masked_sites"] == 6
    e = res["files"]["imp"]
    assert e["missing_masked_sites"] == 0
    # Minor-allele coding: at site 300 the panel's minor allele is REF, so truth and dosage are 2 - ALT.
    t300 = [0, 0, 1, 0, 0]
    d300 = [0.1, 0.0, 0.8, 0.4, 0.0]
    by_bin = e["bins"]
    assert by_bin["[0.001,0.005)"]["aggregate_r2"] == pytest.approx(_r2(TRUTH[200], DS[200]))
    assert by_bin["[0.005,0.01)"]["aggregate_r2"] == pytest.approx(_r2(t300, d300))
    assert by_bin["[0.01,0.05)"]["aggregate_r2"] == pytest.approx(_r2(TRUTH[400], DS[400]))
    assert by_bin["[0.05,0.2)"]["aggregate_r2"] == pytest.approx(_r2(TRUTH[500], DS[500]))
    # Last bin: two sites pooled (aggregate) and averaged (per-site).
    pooled_t = TRUTH[600] + TRUTH[700]
    pooled_d = DS[600] + DS[700]
    b = by_bin["[0.2,0.5]"]
    assert b["n_sites"] == 2
    assert b["aggregate_r2"] == pytest.approx(_r2(pooled_t, pooled_d))
    assert b["mean_site_r2"] == pytest.approx((_r2(TRUTH[600], DS[600]) + _r2(TRUTH[700], DS[700])) / 2)
    # All bins pooled, minor-coded.
    all_t = TRUTH[200] + t300 + TRUTH[400] + TRUTH[500] + pooled_t
    all_d = DS[200] + d300 + DS[400] + DS[500] + pooled_d
    assert e["all_binned"]["aggregate_r2"] == pytest.approx(_r2(all_t, all_d))
    # Concordance of the rounded genotypes written as GT (ALT coding), counted by hand.
    truth_all = [x for p in DS for x in TRUTH[p]]
    guess_all = [round(x) for p in DS for x in DS[p]]
    agree = sum(t == g for t, g in zip(truth_all, guess_all))
    assert e["all_binned"]["concordance"] == pytest.approx(agree / 30)
    nonref = [(t, g) for t, g in zip(truth_all, guess_all) if t > 0 or g > 0]
    assert e["all_binned"]["nonref_concordance"] == pytest.approx(
        sum(t == g for t, g in nonref) / len(nonref)
    )
    # AF baseline: dosage 2 * panel minor-allele frequency, constant per site.
    maf = {200: 1 / 500, 300: 3 / 500, 400: 10 / 500, 500: 50 / 500, 600: 150 / 500, 700: 200 / 500}
    base_t = TRUTH[600] + TRUTH[700]
    base_d = [2 * maf[600]] * 5 + [2 * maf[700]] * 5
    assert res["af_baseline"]["bins"]["[0.2,0.5]"]["aggregate_r2"] == pytest.approx(_r2(base_t, base_d))
    # Reports written.
    saved = json.loads((files["dir"] / "ev.json").read_text())
    assert saved["files"]["imp"]["bins"]["[0.2,0.5]"]["aggregate_r2"] == pytest.approx(b["aggregate_r2"])
    assert (files["dir"] / "ev.png").stat().st_size > 1000
    assert "imp r2 agg / site" in (files["dir"] / "ev.md").read_text()


def test_gt_only_file_missing_site_and_target_option(files):
    res = evaluate(
        files["truth"],
        [files["imputed"], files["gt_only"]],
        target_path=files["target"],
        labels=["ds", "gt"],
        plot=False,
    )
    assert res["masked_sites"] == 6
    g = res["files"]["gt"]
    assert g["missing_masked_sites"] == 1  # site 700 absent: reported, not hidden
    # MAF from the truth now (no --ref): sites 400 (2/10), 500 (4/10), 600 (4/10) fall in the last bin;
    # 700 (5/10) too, but it is missing from this file and so scores nothing.
    b = g["bins"]["[0.2,0.5]"]
    assert b["n_sites"] == 4
    called = [1, 0, 0, 0, 1]  # GT-only dosage at 500 with the wrong call
    assert b["aggregate_r2"] == pytest.approx(
        _r2(TRUTH[400] + TRUTH[500] + TRUTH[600], TRUTH[400] + called + TRUTH[600])
    )
    assert b["concordance"] == pytest.approx(14 / 15)


def test_cli_runs(files, capsys):
    from vcfbert_fast.cli import main

    rc = main(
        [
            "evaluate",
            "--truth",
            files["truth"],
            "--imputed",
            files["imputed"],
            "--ref",
            files["ref"],
            "--no-plot",
        ]
    )
    assert rc == 0
    assert "6 masked sites" in capsys.readouterr().out


# Estimated r^2 written at the masked sites (the threshold values themselves pass: DR2 >= t).
DR2 = {200: 0.25, 300: 0.3, 400: 0.95, 500: 0.8, 600: 0.79, 700: 0.1}


def test_dr2_calibration_and_pass_counts_match_numpy(files):
    recs = [(100, "A", "C", ".", [f"{_gt(x)}:{x}" for x in TRUTH[100]])]
    recs += [(p, "A", "C", f"DR2={DR2[p]};IMP", [f"{_gt(round(x))}:{x}" for x in d]) for p, d in DS.items()]
    path = _vcf(files["dir"] / "dr2.vcf", SAMPLES, recs, fmt="GT:DS")
    res = evaluate(
        files["truth"], [path, files["imputed"]], ref_path=files["ref"], out_prefix=str(files["dir"] / "cal")
    )
    assert res["files"]["imp"]["dr2"] is None  # writes no DR2: no calibration entry, not zeros
    d = res["files"]["dr2"]["dr2"]
    dr2 = np.array([DR2[p] for p in DS])
    true = np.array([_r2(TRUTH[p], DS[p]) for p in DS])  # every masked site is polymorphic here
    for group in ("all_binned", "all_masked"):
        g = d[group]
        assert g["pass_0.3"] == int((dr2 >= 0.3).sum()) and g["pass_0.8"] == int((dr2 >= 0.8).sum())
        assert g["mean_dr2"] == pytest.approx(dr2.mean()) and g["mean_true_r2"] == pytest.approx(true.mean())
        assert g["true_r2_pass_0.8"] == pytest.approx(true[dr2 >= 0.8].mean())
    last = d["bins"]["[0.2,0.5]"]  # sites 600 and 700
    assert last["mean_dr2"] == pytest.approx((DR2[600] + DR2[700]) / 2)
    assert last["gap"] == pytest.approx(last["mean_dr2"] - (true[4] + true[5]) / 2)
    assert (last["pass_0.3"], last["pass_0.8"]) == (1, 0)
    by = {b["dr2_bin"]: b for b in d["by_dr2"]}
    assert by["[0.8,0.9)"]["n_polymorphic"] == 1 and by["[0.8,0.9)"]["mean_true_r2"] == pytest.approx(true[3])
    assert by["[0.9,1]"]["mean_dr2"] == pytest.approx(0.95) and by["[0.7,0.8)"]["n_polymorphic"] == 1
    assert sum(b["n_polymorphic"] for b in d["by_dr2"]) == 6
    png = res["calibration_png"]
    assert (
        png == str(files["dir"] / "cal_dr2_calibration.png")
        and (files["dir"] / "cal_dr2_calibration.png").stat().st_size > 1000
    )
    saved = json.loads((files["dir"] / "cal.json").read_text())
    assert saved["calibration_png"] == png and saved["files"]["dr2"]["dr2"]["all_masked"]["pass_0.3"] == 4
    md = (files["dir"] / "cal.md").read_text()
    assert "| dr2 | all masked | 6 | " in md and "DR2 >= 0.8" in md
