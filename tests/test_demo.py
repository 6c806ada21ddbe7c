"""demo(): simulate -> train -> impute -> evaluate end to end at a tiny size, with and without Beagle."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import shutil

import pytest

TINY = {"dims": 16, "layers": 1, "heads": 2, "max_sites": 64, "val_max_batches": 1, "k": 2}
HAS_BEAGLE = shutil.which("java") is not None and os.path.exists(
    os.environ.get("BEAGLE_JAR", "/usr/share/beagle/beagle.jar")
)


def _needs_ops():
    try:
        from vcfbert_fast.ops import hamming_topk  # noqa: F401
    except ImportError:
        pytest.skip("retrieval ops not available in this checkout (the trainer needs them for K > 0)")


def _run_demo(out, monkeypatch):
    """The tiny demo, recording what impute and Beagle were given."""
    import vcfbert_fast.imputation.prephase as prephase_mod
    import vcfbert_fast.impute as impute_mod
    from vcfbert_fast.demo import demo

    calls = {"impute": [], "beagle": []}
    real_impute, real_beagle = impute_mod.impute, prephase_mod.run_beagle

    def spy_impute(ref, target, model, dst, **kw):
        calls["impute"].append({"target": target, **kw})
        return real_impute(ref, target, model, dst, **kw)

    def spy_beagle(*a, **kw):
        given = inspect.signature(real_beagle).bind(*a, **kw).arguments
        calls["beagle"].append({"gt": given["gt_path"], "args": given["args"], "nthreads": given.get("nthreads")})
        return real_beagle(*a, **kw)

    monkeypatch.setattr(impute_mod, "impute", spy_impute)
    monkeypatch.setattr(prephase_mod, "run_beagle", spy_beagle)
    res = demo(out, n_ref=40, n_target=6, length_bp=100_000, max_steps=2, progress=False, train_overrides=TINY, threads=1)
    return res, calls


def _genotype_separators(path) -> set[str]:
    with gzip.open(path, "rt") as fh:
        return {c for line in fh if not line.startswith("#") for g in line.split("\t")[9:] for c in g if c in "|/"}


def test_demo_without_beagle_says_it_used_the_phased_copy(tmp_path, capsys, monkeypatch):
    _needs_ops()
    import vcfbert_fast.evaluate as evaluate_mod
    from vcfbert_fast.cli import build_parser

    args = build_parser("demo").parse_args(["demo", "--out", "x", "--minutes", "0.5"])
    assert args.minutes == 0.5 and args.n_ref == 400  # the CLI's CPU-sized defaults
    monkeypatch.setenv("BEAGLE_JAR", str(tmp_path / "no-beagle.jar"))
    d = tmp_path / "d"
    real_evaluate = evaluate_mod.evaluate

    def with_calibration(*a, **kw):  # as evaluate will once it draws the DR2 calibration plot
        result = real_evaluate(*a, **kw)
        (d / "eval.calibration.png").write_bytes(b"png")
        return {**result, "calibration_png": str(d / "eval.calibration.png")}

    monkeypatch.setattr(evaluate_mod, "evaluate", with_calibration)
    res, calls = _run_demo(d, monkeypatch)
    out = capsys.readouterr().out
    assert "vcfbert-fast r2 agg / site" in out and "AF baseline" in out
    assert "target: the PHASED copy" in out and "no-beagle.jar was not found" in out
    assert (d / "imputed.vcf.gz.tbi").exists()
    assert len(calls["impute"]) == 1 and not calls["beagle"]
    given = calls["impute"][0]
    assert given["target"] == str(d / "sim" / "target.vcf.gz") and given["prephase"] is None
    assert given["threads"] == 1
    assert _genotype_separators(given["target"]) == {"|"}
    report = (d / "report.md").read_text()
    assert "PHASED copy" in report and "hides phasing error" in report
    assert "](eval.calibration.png)" in report and "](eval.png)" in report
    ev = json.loads((d / "eval.json").read_text())
    assert list(ev["files"]) == ["vcfbert-fast"] and res["beagle"] is None
    e = ev["files"]["vcfbert-fast"]
    assert e["missing_masked_sites"] == 0
    assert ev["masked_sites"] > 0
    # at least one bin was scored (non-empty), whatever a 2-step model achieves
    assert any(b["n_genotypes"] > 0 for b in e["bins"].values())
    assert (d / "eval.png").stat().st_size > 1000
    c = res["site_counts"]["vcfbert-fast"]
    assert (c["imputed"], c["typed"]) == (res["impute"]["imputed_sites"], res["impute"]["typed_sites"])
    row = f"| vcfbert-fast | {c['records']} | {c['imputed']} | {c['typed']} |"
    assert row in report


@pytest.mark.skipif(not HAS_BEAGLE, reason="java or Beagle not installed")
def test_demo_with_beagle_prephases_an_unphased_target_and_scores_beagle(tmp_path, capsys, monkeypatch):
    _needs_ops()
    d = tmp_path / "d"
    res, calls = _run_demo(d, monkeypatch)
    out = capsys.readouterr().out
    given = calls["impute"][0]
    assert given["prephase"] == "beagle" and given["threads"] == 1
    assert given["target"] == str(d / "sim" / "target.unphased.vcf.gz")
    assert _genotype_separators(given["target"]) == {"/"}  # unphased, as array data arrives
    # Beagle ran twice on that unphased data: impute's pre-phase (on its panel-coded copy) and the demo's own run
    assert [(c["args"], c["nthreads"]) for c in calls["beagle"]] == [(["impute=false"], 1), (["gp=true"], 1)]
    assert calls["beagle"][1]["gt"] == given["target"] and res["impute"]["prephased"]
    ev = json.loads((d / "eval.json").read_text())
    assert list(ev["files"]) == ["vcfbert-fast", "Beagle 5.4"]
    b = ev["files"]["Beagle 5.4"]
    assert b["missing_masked_sites"] == 0 and b["all_binned"]["n_genotypes"] > 0
    assert "Beagle 5.4 r2 agg / site" in out and "Beagle 5.4 r2 agg / site" in (d / "eval.md").read_text()
    assert "target: unphased" in out and "pre-phased with Beagle" in (d / "report.md").read_text()
    # site counts of Beagle's output, counted here from its text
    with gzip.open(d / "beagle.vcf.gz", "rt") as fh:
        info = [line.split("\t")[7].split(";") for line in fh if not line.startswith("#")]
    n_imp = sum("IMP" in x for x in info)
    c = res["site_counts"]["Beagle 5.4"]
    assert (c["records"], c["imputed"], c["typed"]) == (len(info), n_imp, len(info) - n_imp)
    strong = sum("IMP" in x and float(next(f for f in x if f.startswith("DR2="))[4:]) >= 0.8 for x in info)
    assert c["imputed_dr2_ge_0.8"] == strong
    assert f"| Beagle 5.4 | {len(info)} | {n_imp} | {len(info) - n_imp} |" in (d / "report.md").read_text()
