"""impute(): every panel and target site in a sorted, indexed VCF; typed calls kept; wrong panels refused."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pytest
import torch


def _has_retrieval_ops() -> bool:
    try:
        from vcfbert_fast.ops import hamming_topk, pack_bits  # noqa: F401
    except ImportError:
        return False
    return True


def _fresh_checkpoint(path, panel, k: int, max_sites: int = 96, engine: str = "hamming", **state):
    """A freshly initialised model saved with the checkpoint module (no training needed for the I/O contract);
    ``state``: more checkpoint keys (e.g. ``sample_names``, ``train_samples`` as ``train`` writes them)."""
    from vcfbert_fast.checkpoint import model_state_dict, panel_fingerprint, save_checkpoint
    from vcfbert_fast.model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig
    from vcfbert_fast.vocab import VOCAB
    from vcfbert_fast.windows import make_windows

    cfg = ModelConfig(dims=16, n_layers=1, attn_heads=2, dropout=0.0, max_len=max_sites + 2)
    model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(cfg))
    save_checkpoint(
        path,
        {
            "model_state": model_state_dict(model),
            "model_config": cfg.to_dict(),
            "vocab": dict(VOCAB),
            "panel_fingerprint": panel_fingerprint(panel),
            "window_layout": make_windows(panel.n_sites, max_sites, 0).to_dict(),
            "train_config": {"k": k, "engine": engine},
            **state,
        },
    )
    return str(path)


def _edit_target(src, dst, panel, rng, unphase: bool = False):
    """Copy the target, adding a site absent from the panel, an allele mismatch and missing calls."""
    with gzip.open(src, "rt") as fh:
        lines = fh.read().splitlines()
    head = [x for x in lines if x.startswith("#")]
    body = [x.split("\t") for x in lines if not x.startswith("#")]
    n_s = len(body[0]) - 9
    panel_pos = set(panel.positions.tolist())
    absent = next(p for p in range(int(panel.positions[5]) + 1, 10**9) if p not in panel_pos)
    extra = [["20", str(absent), "new1", "A", "G", ".", "PASS", ".", "GT"] + ["0|1"] * n_s]
    mpos = int(panel.positions[7])
    mref = panel.ref[7]
    malt = next(b for b in "ACGT" if b not in (mref, panel.alt[7]))
    extra.append(["20", str(mpos), "mis1", mref, malt, ".", "PASS", ".", "GT"] + ["0|0"] * n_s)
    # missing calls at a typed site
    body[3][9] = ".|."
    if unphase:
        for rec in body:
            for j in range(9, 9 + n_s):
                if rec[j] in ("0|1", "1|0") and rng.random() < 0.5:
                    rec[j] = "0/1"
    recs = sorted(body + extra, key=lambda r: int(r[1]))
    plain = str(dst).removesuffix(".gz")
    with open(plain, "w") as fh:
        fh.write("\n".join(head) + "\n" + "\n".join("\t".join(r) for r in recs) + "\n")
    subprocess.run(["bgzip", "-f", plain], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(dst)], check=True)
    return str(dst), {(absent, "A", "G"), (mpos, mref, malt)}


def _records(path):
    import cyvcf2

    vcf = cyvcf2.VCF(path)
    recs = list(vcf)
    return vcf.samples, recs


@pytest.mark.parametrize(("k", "engine"), [(0, "hamming"), (2, "hamming"), (4, "pbwt"), (32, "vote")])
def test_impute_output_contract(small_sim, tmp_path, k, engine):
    import cyvcf2

    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    if k and not _has_retrieval_ops():
        pytest.skip("retrieval ops (vcfbert_fast.ops.hamming_topk) not available in this checkout")
    rng = np.random.default_rng(np.random.randint(2**31))
    panel = read_panel(small_sim.ref_vcf, progress=False)
    ckpt = "vote" if engine == "vote" else _fresh_checkpoint(tmp_path / "m.pt", panel, k, engine=engine)
    target, extra_keys = _edit_target(small_sim.target_vcf, tmp_path / "t.vcf.gz", panel, rng)
    out = str(tmp_path / "imp.vcf.gz")
    summary = impute(small_sim.ref_vcf, target, ckpt, out, batch_size=5, progress=False)
    assert summary["index"] and (tmp_path / "imp.vcf.gz.tbi").exists()

    samples, recs = _records(out)
    tv = cyvcf2.VCF(target)
    assert samples == list(tv.samples)
    tin = {(v.POS, v.REF, v.ALT[0]): (v.genotype.array().copy(), str(v)) for v in tv}
    pos = [r.POS for r in recs]
    assert pos == sorted(pos)
    keys = [(r.POS, r.REF, r.ALT[0]) for r in recs]
    # every panel site once, every target record present but the allele mismatch at a panel position
    panel_keys = {(int(p), r, a) for p, r, a in zip(panel.positions, panel.ref, panel.alt)}
    excluded = {k for k in extra_keys if k[0] in set(panel.positions.tolist())}
    assert len(excluded) == 1 and not excluded & set(keys)
    assert len(set(pos)) == len(pos)  # never two records at one position
    assert panel_keys <= set(keys)
    assert set(tin) - excluded <= set(keys)
    assert len(keys) == len(panel_keys) + len(extra_keys) - 1
    (p, ref, alt), = excluded
    with open(summary["qc_file"]) as fh:
        qc = [line.rstrip("\n").split("\t") for line in fh]
    assert summary["qc_file"] == out + ".qc.tsv" and qc[0][0] == "#CHROM"
    j = int(np.searchsorted(panel.positions, p))
    assert qc[1:] == [["20", str(p), "mis1", ref, alt, panel.ref[j], panel.alt[j], "excluded_allele_mismatch"]]
    assert summary["qc"] == {"excluded_allele_mismatch": 1}
    n_typed = 0
    for r, key in zip(recs, keys):
        if key in extra_keys:  # passed through untouched
            assert str(r) == tin[key][1]
            continue
        ds = r.format("DS")[:, 0]
        gp = r.format("GP")
        hds = r.format("HDS")
        g = np.array([x[:2] for x in r.genotypes])
        assert np.allclose(gp.sum(1), 1.0, atol=1e-6)
        assert np.allclose(ds, gp[:, 1] + 2 * gp[:, 2], atol=1e-6)
        clear = np.abs(hds - 0.5) > 0.001
        assert (g[clear] == np.rint(hds[clear])).all()
        if key in tin:
            n_typed += 1
            assert r.INFO.get("TYPED") and r.INFO.get("IMP") is None
            src = tin[key][0]
            called = src[:, :2] >= 0
            assert (g[called] == src[:, :2][called]).all()  # typed genotypes unchanged
            assert (
                np.array([x[2] for x in r.genotypes])[called.all(1)] == src[called.all(1), 2].astype(bool)
            ).all()
            assert ((g >= 0) & (g <= 1)).all()  # missing calls filled from the model
        else:
            assert r.INFO.get("IMP") and r.INFO.get("TYPED") is None
            assert 0.0 <= r.INFO["DR2"] <= 1.0
    assert n_typed == summary["typed_sites"] > 0
    if shutil.which("bcftools"):
        n = subprocess.run(["bcftools", "index", "-n", out], capture_output=True, text=True, check=True)
        assert int(n.stdout) == len(recs)


def test_checkpoint_of_other_panel_refused(small_sim, tmp_path):
    from vcfbert_fast.errors import CheckpointError
    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    other = read_panel(small_sim.ref_vcf, progress=False)
    keep = np.arange(1, panel.n_sites)  # a panel with its first site dropped
    other.positions, other.ref, other.alt = other.positions[keep], other.ref[keep], other.alt[keep]
    other.haplotypes = other.haplotypes[:, keep]
    ckpt = _fresh_checkpoint(tmp_path / "other.pt", other, 0)
    with pytest.raises(CheckpointError, match="different panel layout"):
        impute(small_sim.ref_vcf, small_sim.target_vcf, ckpt, str(tmp_path / "x.vcf.gz"), progress=False)
    assert not (tmp_path / "x.vcf.gz").exists()


@pytest.mark.parametrize("change", ["reordered", "fewer"])
def test_panel_with_other_samples_refused(small_sim, tmp_path, change):
    """Same sites, samples reordered or fewer: the checkpoint's sample indices would pick other samples
    (or index past the end); refused as one line naming the checkpoint, before any work."""
    from vcfbert_fast.cli import main
    from vcfbert_fast.errors import CheckpointError
    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    n = panel.n_samples
    ckpt = _fresh_checkpoint(
        tmp_path / "m.pt", panel, 0, sample_names=list(panel.samples), train_samples=list(range(n // 2, n))
    )
    names = panel.samples[::-1] if change == "reordered" else panel.samples[: n // 3]
    other = str(tmp_path / "other.vcf.gz")
    subprocess.run(["bcftools", "view", "-s", ",".join(names), "-Oz", "-o", other, small_sim.ref_vcf], check=True)
    assert read_panel(other, progress=False).positions.tolist() == panel.positions.tolist()  # same sites
    out = tmp_path / "x.vcf.gz"
    with pytest.raises(CheckpointError) as exc:
        impute(other, small_sim.target_vcf, ckpt, str(out), progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(ckpt) and "panel the model was trained on" in msg
    assert ("reordered" if change == "reordered" else f"{n // 3} samples") in msg
    assert not out.exists()
    argv = ["impute", "--ref", other, "--target", str(small_sim.target_vcf), "--model", ckpt, "--out", str(out)]
    assert main(argv) != 0  # the CLI reports it as an error, not a traceback


def test_unphased_target_refused_then_allowed(small_sim, tmp_path):
    import cyvcf2

    from vcfbert_fast.errors import InputError
    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    rng = np.random.default_rng(np.random.randint(2**31))
    panel = read_panel(small_sim.ref_vcf, progress=False)
    ckpt = _fresh_checkpoint(tmp_path / "m.pt", panel, 0)
    target, _ = _edit_target(small_sim.target_vcf, tmp_path / "u.vcf.gz", panel, rng, unphase=True)
    with pytest.raises(InputError, match="unphased.*--prephase beagle"):
        impute(small_sim.ref_vcf, target, ckpt, str(tmp_path / "x.vcf.gz"), progress=False)
    out = str(tmp_path / "u_imp.vcf.gz")
    s = impute(small_sim.ref_vcf, target, ckpt, out, allow_unphased=True, progress=False)
    assert s["unphased_hets"] > 0
    tin = {(v.POS, v.REF): v.genotype.array().copy() for v in cyvcf2.VCF(target)}
    seen = 0
    for r in cyvcf2.VCF(out):
        src = tin.get((r.POS, r.REF))
        if src is None or not r.INFO.get("TYPED"):
            continue
        ga = r.genotype.array()
        unph = (src[:, 0] != src[:, 1]) & (src[:, :2] >= 0).all(1) & (src[:, 2] == 0)
        seen += int(unph.sum())
        assert (ga[unph, 2] == 0).all()  # still written unphased: no phase invented
        assert np.allclose(r.format("HDS")[unph], 0.5)
        assert np.allclose(r.format("GP")[unph], [0.0, 1.0, 0.0])
    assert seen == s["unphased_hets"]


needs_beagle = pytest.mark.skipif(
    shutil.which("java") is None or not __import__("os").path.exists("/usr/share/beagle/beagle.jar"),
    reason="java or Beagle not installed",
)


@needs_beagle
def test_prephase_beagle(small_sim, tmp_path):
    import cyvcf2

    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    ckpt = _fresh_checkpoint(tmp_path / "m.pt", panel, 0)
    with gzip.open(small_sim.target_vcf, "rt") as fh:
        text = "".join(x if x.startswith("#") else x.replace("|", "/") for x in fh)
    plain = tmp_path / "unph.vcf"
    plain.write_text(text)
    subprocess.run(["bgzip", "-f", str(plain)], check=True)
    target = str(plain) + ".gz"
    out = str(tmp_path / "pp.vcf.gz")
    s = impute(small_sim.ref_vcf, target, ckpt, out, prephase="beagle", progress=False)
    assert s["prephased"] and s["unphased_hets"] == 0
    import resource  # the peaks reported: this process's so far, and Java's (a child's) when it ended

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert 0.05 < s["peak_rss_gib"] <= own + 1e-3
    assert 0.02 < s["prephase_peak_rss_gib"] <= resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20 + 1e-3
    tin = {(v.POS, v.REF): v.genotype.array().copy() for v in cyvcf2.VCF(target)}
    n = 0
    for r in cyvcf2.VCF(out):
        src = tin.get((r.POS, r.REF))
        if src is None:
            continue
        ga = r.genotype.array()
        assert (np.sort(ga[:, :2], 1) == np.sort(src[:, :2], 1)).all()  # same genotypes, now phased
        assert ga[:, 2].all()
        n += 1
    assert n == s["typed_sites"]


def test_write_panel_at_is_the_panel_at_those_sites(small_sim, tmp_path, rng):
    """The reference the pre-phase hands Beagle: read back by cyvcf2 (not our reader), it holds
    the panel's samples and, at exactly the sites asked for, their sites and phased haplotypes."""
    import cyvcf2

    from vcfbert_fast.imputation.prephase import write_panel_at
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    sites = np.sort(rng.choice(panel.n_sites, size=int(rng.integers(1, panel.n_sites + 1)), replace=False))
    path = str(tmp_path / "at.vcf.gz")
    assert write_panel_at(path, panel, sites) == sites.size
    v = cyvcf2.VCF(path)
    assert list(v.samples) == list(panel.samples)
    recs = list(v)
    assert [r.POS for r in recs] == [int(panel.positions[j]) for j in sites]
    for r, j in zip(recs, sites):
        assert (r.ID or ".", r.REF, r.ALT) == (panel.ids[j], panel.ref[j], [panel.alt[j]])
        ga = r.genotype.array()
        assert ga[:, 2].all()  # phased
        np.testing.assert_array_equal(ga[:, :2].reshape(-1), panel.haplotypes[:, j])


@needs_beagle
def test_prephase_against_the_panel_at_the_target_sites_equals_the_whole_panel(small_sim, tmp_path):
    """Beagle phases at the target's markers only, so the subset reference the pre-phase writes
    (``write_panel_at``) gives the same phased calls as the whole panel, at a fraction of the parse."""
    from vcfbert_fast.imputation.prephase import prephase_with_beagle, write_panel_at, write_panel_coded
    from vcfbert_fast.io import align_target, read_panel, read_target

    panel = read_panel(small_sim.ref_vcf, progress=False)
    target_path = _rewrite_target(small_sim.target_vcf, tmp_path / "u.vcf.gz", lambda h, b: (h, _unphased(b)))
    target = read_target(target_path, progress=False)
    alignment = align_target(target, panel)
    write_panel_coded(str(tmp_path / "t.vcf.gz"), target, alignment, panel)
    write_panel_at(str(tmp_path / "r.vcf.gz"), panel, np.unique(alignment.panel_index[alignment.panel_index >= 0]))
    calls = []
    for name, ref in (("whole", small_sim.ref_vcf), ("subset", str(tmp_path / "r.vcf.gz"))):
        out = prephase_with_beagle(str(ref), str(tmp_path / "t.vcf.gz"), str(tmp_path / name), "2g", 1)
        q = subprocess.run(["bcftools", "query", "-f", "%POS[\t%GT]\n", out], check=True, capture_output=True, text=True)
        calls.append(q.stdout)
    assert calls[0].count("|") > 0 and calls[0] == calls[1]


def test_prephase_without_beagle_is_one_line_naming_the_target(small_sim, tmp_path, monkeypatch):
    """No Beagle jar (or no java): --prephase beagle fails up front, naming the user's target (not
    the recoded copy Beagle would read) and the fix; no output and no temporary is left."""
    from vcfbert_fast.errors import InputError
    from vcfbert_fast.impute import impute

    target = _rewrite_target(small_sim.target_vcf, tmp_path / "u.vcf.gz", lambda h, b: (h, _unphased(b)))
    out = tmp_path / "o" / "x.vcf.gz"
    for env in ({"BEAGLE_JAR": str(tmp_path / "none.jar")}, {"PATH": str(tmp_path)}):
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            with pytest.raises(InputError) as exc:
                impute(small_sim.ref_vcf, target, "vote", str(out), prephase="beagle", progress=False)
        msg = str(exc.value)
        assert msg.startswith(target + ": --prephase beagle needs Java and Beagle 5.4") and "\n" not in msg
        assert ("none.jar" if "BEAGLE_JAR" in env else "(java not found)") in msg
        assert not out.parent.exists() or not list(out.parent.iterdir())


def test_vote_is_the_oracle_donors_weighted_vote(small_sim, tmp_path, rng):
    """`impute --model vote`: HDS at imputed sites equals the vote computed from the brute-force
    donors (pbwt_donors_reference at the site's segment point, runs by loops)."""
    import cyvcf2

    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import align_target, read_panel, read_target
    from vcfbert_fast.ops.pbwt import pack_markers, pbwt_donors_reference

    out = str(tmp_path / "vote.vcf.gz")
    impute(small_sim.ref_vcf, small_sim.target_vcf, "vote", out, batch_size=3, progress=False)
    panel = read_panel(small_sim.ref_vcf, progress=False)
    target = read_target(str(small_sim.target_vcf))
    al = align_target(target, panel)
    typed = np.sort(al.panel_index[al.panel_index >= 0])
    assert typed.size > 0
    ref_bits = pack_markers(panel.haplotypes[:, typed])
    hds = {r.POS: r.format("HDS") for r in cyvcf2.VCF(out) if r.INFO.get("IMP")}
    untyped = np.setdiff1d(np.arange(panel.n_sites), typed)
    n_hap = panel.haplotypes.shape[0]
    k, group = min(32, n_hap), 4
    for site in rng.choice(untyped, size=5, replace=False):
        s, h = int(rng.integers(len(target.samples))), int(rng.integers(2))
        t_idx = np.flatnonzero(al.panel_index >= 0)
        q = np.full(panel.n_sites, -1, dtype=np.int8)
        q[al.panel_index[t_idx]] = target.alleles[s, h, t_idx]
        q = q[typed]
        bnd = int(np.searchsorted(typed, site))
        point = min(bnd // group * group + group // 2, typed.size)
        rows, _, _ = pbwt_donors_reference(
            ref_bits, torch.from_numpy(q[None]), torch.full((1, 0), -1), torch.tensor([2 * s + h]),
            torch.tensor([point]), k, 0,
        )
        scores = []
        for row in rows[0, 0].tolist():
            ra = panel.haplotypes[row, typed]
            left = 0
            while bnd - 1 - left >= 0 and (q[bnd - 1 - left] < 0 or q[bnd - 1 - left] == ra[bnd - 1 - left]):
                left += 1
            right = 0
            while bnd + right < typed.size and (q[bnd + right] < 0 or q[bnd + right] == ra[bnd + right]):
                right += 1
            scores.append(left + right)
        w = np.exp(0.1 * (np.array(scores) - max(scores)))
        want = (w * panel.haplotypes[rows[0, 0].numpy(), site]).sum() / w.sum()
        got = hds[int(panel.positions[site])][s, h]
        assert abs(got - want) <= 0.0005 + 1e-6, (site, s, h, got, want)  # HDS is written to 3 decimals


def _with_contig_line(src, dst, line: str) -> str:
    """A copy of ``src`` (bgzipped VCF) whose ##contig line is ``line``, bgzipped and indexed."""
    with gzip.open(src, "rt") as fh:
        text = fh.read()
    text = "".join(line + "\n" if x.startswith("##contig") else x for x in text.splitlines(keepends=True))
    plain = str(dst).removesuffix(".gz")
    with open(plain, "w") as fh:
        fh.write(text)
    subprocess.run(["bgzip", "-f", plain], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(dst)], check=True)
    return str(dst)


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools not installed")
def test_impute_cli_bcf_fields_min_r2_sites_and_contig(small_sim, tmp_path, capsys):
    """`impute --out x.bcf -f GT,DS --min-r2 X --sites T`: a BCF bcftools reads, with the panel's ##contig
    line (length, assembly) as it was, only GT:DS, no imputed site below X, and the sites table."""
    import cyvcf2

    from vcfbert_fast.cli import main
    from vcfbert_fast.io import align_target, read_panel, read_target

    contig = "##contig=<ID=20,length=64444167,assembly=GRCh37>"
    ref = _with_contig_line(small_sim.ref_vcf, tmp_path / "ref.vcf.gz", contig)
    out, table = tmp_path / "imp.bcf", tmp_path / "imp.sites.tsv"
    argv = ["impute", "--ref", ref, "--target", str(small_sim.target_vcf), "--model", "vote", "--out", str(out)]
    rc = main([*argv, "-f", "DS,GT", "--min-r2", "0.3", "--sites", str(table), "--no-progress", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "imp.bcf.csi").exists()
    head = subprocess.run(["bcftools", "view", "-h", str(out)], capture_output=True, text=True, check=True)
    assert [x for x in head.stdout.splitlines() if x.startswith("##contig")] == [contig]
    body = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True, check=True)
    rows = [x.split("\t") for x in body.stdout.splitlines()]
    assert rows and {r[8] for r in rows} == {"GT:DS"}
    # independently: the typed panel sites, all written; imputed ones only with DR2 >= 0.3
    panel = read_panel(ref, progress=False)
    al = align_target(read_target(str(small_sim.target_vcf)), panel)
    typed = set(panel.positions[al.panel_index[al.panel_index >= 0]].tolist())
    recs = list(cyvcf2.VCF(str(out)))
    assert typed <= {r.POS for r in recs if r.INFO.get("TYPED")}
    imp = [r for r in recs if r.INFO.get("IMP")]
    assert all(r.INFO["DR2"] >= 0.3 for r in imp)
    tab = [x.split("\t") for x in table.read_text().splitlines()[1:]]
    assert len(tab) == panel.n_sites
    low = [r for r in tab if r[8] == "MIN_R2"]
    assert low and all(r[7] == "IMPUTED" and float(r[6]) < 0.3 for r in low)
    assert len(imp) == sum(r[7] == "IMPUTED" for r in tab) - len(low)
    assert f"{len(low)} imputed with DR2 < 0.3 left out" in capsys.readouterr().err


def test_impute_keeps_the_target_contig_line_when_the_panel_has_none(small_sim, tmp_path):
    from vcfbert_fast.impute import impute

    contig = "##contig=<ID=20,length=63025520,assembly=b37,md5=0dec9660ec1efaaf33281c0d5ea2560f>"
    target = _with_contig_line(small_sim.target_vcf, tmp_path / "t.vcf.gz", contig)
    out = tmp_path / "imp.vcf"
    s = impute(small_sim.ref_vcf, target, "vote", str(out), progress=False, threads=1)
    assert s["index"] is None and s["output_type"] == "v"
    text = out.read_text()  # plain text, no gzip
    assert [x for x in text.splitlines() if x.startswith("##contig")] == [contig]


def _rewrite_target(src, dst, edit) -> str:
    """Copy a bgzipped target VCF, ``edit(header_lines, records)`` -> (header, records) as split lines."""
    with gzip.open(src, "rt") as fh:
        lines = fh.read().splitlines()
    head = [x for x in lines if x.startswith("#")]
    body = [x.split("\t") for x in lines if not x.startswith("#")]
    head, body = edit(head, body)
    plain = str(dst).removesuffix(".gz")
    with open(plain, "w") as fh:
        fh.write("\n".join(head) + "\n" + "\n".join("\t".join(r) for r in body) + "\n")
    subprocess.run(["bgzip", "-f", plain], check=True)
    return plain + ".gz"


def _unphased(body: list[list[str]]) -> list[list[str]]:
    """VCF records (split lines) with every genotype unphased ('|' -> '/')."""
    return [x[:9] + [g.replace("|", "/") for g in x[9:]] for x in body]


def test_typed_sites_with_filled_calls_say_so(small_sim, tmp_path, rng):
    """A typed site whose missing input calls the model filled carries IMPFILL=<samples filled>
    (declared in the header); sites of input calls only keep a bare TYPED, and a target with no
    missing call writes no IMPFILL at all."""
    import cyvcf2

    from vcfbert_fast.impute import impute

    miss = {}  # record index -> samples made (partly) missing

    def edit(head, body):
        n_s = len(body[0]) - 9
        for i in rng.choice(len(body), size=4, replace=False).tolist():
            who = rng.choice(n_s, size=int(rng.integers(1, n_s + 1)), replace=False).tolist()
            for s in who:
                body[i][9 + s] = [".|.", ".|1", "0|."][int(rng.integers(3))]
            miss[int(body[i][1])] = len(who)
        return head, body

    target = _rewrite_target(small_sim.target_vcf, tmp_path / "m.vcf.gz", edit)
    out = str(tmp_path / "f.vcf.gz")
    impute(small_sim.ref_vcf, target, "vote", out, progress=False)
    vcf = cyvcf2.VCF(out)
    assert "IMPFILL" in vcf.raw_header and 'ID=IMPFILL,Number=1,Type=Integer' in vcf.raw_header
    seen = {}
    for r in vcf:
        fill = r.INFO.get("IMPFILL")
        if r.INFO.get("TYPED") and r.POS in miss:
            seen[r.POS] = fill
        else:
            assert fill is None, r.POS
    assert seen == miss
    clean = str(tmp_path / "c.vcf.gz")
    impute(small_sim.ref_vcf, small_sim.target_vcf, "vote", clean, progress=False)
    with gzip.open(clean, "rt") as fh:
        assert "IMPFILL" not in fh.read()


COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


@pytest.mark.parametrize("prephase", [None, pytest.param("beagle", marks=needs_beagle)])
def test_allele_qc_recodes_swaps_and_flips_and_never_writes_a_conflicting_record(
    small_sim, tmp_path, rng, capsys, prephase
):
    """Target records at panel positions the target did not type: REF/ALT swapped, strand-flipped and
    both are recoded and typed; a swapped A/T or C/G site, a multi-allelic, split multi-allelic, ALT '.'
    or indel record is excluded (the site imputed, the record not written); lowercase bases match.
    Each recoded or excluded record is one QC row; the output has one record per position.
    ``prephase="beagle"``: the same target unphased and pre-phased with Beagle, which drops markers
    whose alleles differ from the panel's: the recoded sites must still be typed with their calls."""
    import cyvcf2

    from vcfbert_fast.impute import impute
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    typed = {int(v.POS) for v in cyvcf2.VCF(str(small_sim.target_vcf))}
    free = [j for j in rng.permutation(panel.n_sites).tolist() if int(panel.positions[j]) not in typed]
    ambiguous = [j for j in free if COMPLEMENT[panel.ref[j]] == panel.alt[j]]
    plain = [j for j in free if COMPLEMENT[panel.ref[j]] != panel.alt[j]]
    u = {"swap": plain[0], "flip": plain[1], "flip_swap": plain[2], "ambiguous": ambiguous[0]}
    u.update(multi=plain[3], no_alt=plain[4], split=plain[5], indel=plain[6], lower=plain[7])
    want_gt = {}  # position -> [S, 2] alleles in the panel's coding
    rows = []  # expected QC rows

    def edit(head, body):
        n_s = len(body[0]) - 9
        add = []

        def rec(j, ref, alt, calls, vid="q"):
            p = str(int(panel.positions[j]))
            add.append(["20", p, vid, ref, alt, ".", "PASS", ".", "GT"] + [f"{a}|{b}" for a, b in calls])

        def row(j, ref, alt, action, vid="q"):
            rows.append(["20", str(int(panel.positions[j])), vid, ref, alt, panel.ref[j], panel.alt[j], action])

        for name, j in u.items():
            r, a = panel.ref[j], panel.alt[j]
            c = rng.integers(0, 2, size=(n_s, 2))
            if name in ("swap", "flip", "flip_swap", "ambiguous", "lower"):
                tr, ta = {
                    "swap": (a, r), "flip": (COMPLEMENT[r], COMPLEMENT[a]), "flip_swap": (COMPLEMENT[a], COMPLEMENT[r]),
                    "ambiguous": (a, r), "lower": (r.lower(), a.lower()),
                }[name]
                rec(j, tr, ta, c)
                if name != "ambiguous":
                    want_gt[int(panel.positions[j])] = 1 - c if name in ("swap", "flip_swap") else c
                if name != "lower":
                    action = "excluded_ambiguous_strand" if name == "ambiguous" else f"recoded_{name}"
                    row(j, tr, ta, action)
            elif name == "multi":
                other = next(b for b in "ACGT" if b not in (r, a))
                rec(j, r, f"{a},{other}", c * 2), row(j, r, f"{a},{other}", "excluded_multiallelic")
            elif name == "no_alt":
                rec(j, r, ".", 0 * c), row(j, r, ".", "excluded_no_alt")
            elif name == "split":
                other = next(b for b in "ACGT" if b not in (r, a))
                for alt in (a, other):
                    rec(j, r, alt, c, vid=f"s{alt}"), row(j, r, alt, "excluded_multiallelic", vid=f"s{alt}")
            else:
                rec(j, r, r + "A", c), row(j, r, r + "A", "excluded_not_snp")
        # an indel beside a typed SNP: the SNP stays typed, the indel is excluded
        snp = body[0]
        j0 = int(np.searchsorted(panel.positions, int(snp[1])))
        add.append(snp[:3] + [snp[3], snp[3] + "G"] + snp[5:])
        row(j0, snp[3], snp[3] + "G", "excluded_not_snp", vid=snp[2])
        body = sorted(body + add, key=lambda x: int(x[1]))
        if prephase:  # unphased, as array data arrives: the pre-phase runs
            body = _unphased(body)
        return head, body

    target = _rewrite_target(small_sim.target_vcf, tmp_path / "qc.vcf.gz", edit)
    out = str(tmp_path / "qc_imp.vcf.gz")
    capsys.readouterr()
    summary = impute(small_sim.ref_vcf, target, "vote", out, prephase=prephase, progress=False)
    assert bool(summary["prephased"]) == bool(prephase)
    assert not [p.name for p in tmp_path.iterdir() if ".prephase-" in p.name]  # Beagle's copies are removed
    recs = list(cyvcf2.VCF(out))
    pos = [r.POS for r in recs]
    assert len(pos) == len(set(pos)) == panel.n_sites  # one record per position: nothing beside a panel site
    by_pos = {r.POS: r for r in recs}
    for p, gt in want_gt.items():
        r = by_pos[p]
        assert r.INFO.get("TYPED") and r.INFO.get("IMPFILL") is None
        got = np.array([x[:2] for x in r.genotypes])
        if prephase:  # Beagle picks the phase: the same genotypes, each sample's alleles in any order
            got, gt = np.sort(got, axis=1), np.sort(gt, axis=1)
        np.testing.assert_array_equal(got, gt)
    for name in ("ambiguous", "multi", "no_alt", "split", "indel"):
        assert by_pos[int(panel.positions[u[name]])].INFO.get("IMP"), name
    assert by_pos[int(rows[-1][1])].INFO.get("TYPED")  # the SNP beside the excluded indel
    with open(summary["qc_file"]) as fh:
        got = [line.rstrip("\n").split("\t") for line in fh]
    key = lambda x: (int(x[1]), x[4])
    assert sorted(got[1:], key=key) == sorted(rows, key=key)
    counts = {}
    for x in rows:
        counts[x[-1]] = counts.get(x[-1], 0) + 1
    assert summary["qc"] == dict(sorted(counts.items()))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("allele QC:")]
    assert len(err) == 1 and all(f"{n} {a}" in err[0] for a, n in counts.items()) and summary["qc_file"] in err[0]


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed (apt install plink2)")
def test_plink2_reads_the_bcf_output(small_sim, tmp_path):
    """`plink2 --bcf out.bcf dosage=DS` reads our BCF; its ALT frequencies are the mean DS / 2 that
    cyvcf2 reads from the same file."""
    import cyvcf2

    from vcfbert_fast.impute import impute

    out = tmp_path / "imp.bcf"
    impute(small_sim.ref_vcf, small_sim.target_vcf, "vote", str(out), progress=False, threads=1)
    proc = subprocess.run(
        ["plink2", "--bcf", str(out), "dosage=DS", "--freq", "--out", str(tmp_path / "pl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    rows = [x.split("\t") for x in (tmp_path / "pl.afreq").read_text().splitlines()[1:]]
    want = [float(np.mean(r.format("DS")[:, 0])) / 2 for r in cyvcf2.VCF(str(out))]
    assert len(rows) == len(want)
    np.testing.assert_allclose([float(r[4]) for r in rows], want, atol=2e-3)
