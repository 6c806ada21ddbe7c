"""Chunked, region-limited, resumable and sharded ``impute`` (imputation/chunks.py, imputation/parts.py)."""

from __future__ import annotations

import gzip
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vcfbert_fast.errors import InputError
from vcfbert_fast.imputation.chunks import parse_region, plan_chunks


def _body(path) -> list[str]:
    """The records of a bgzipped VCF as text lines (the header holds the date and the command)."""
    with gzip.open(path, "rt") as fh:
        return [line for line in fh if not line.startswith("#")]


def _checkpoint(tmp_path, small_sim):
    from test_impute import _fresh_checkpoint

    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    return panel, _fresh_checkpoint(tmp_path / "m.pt", panel, 4, max_sites=64, engine="pbwt")


# ------------------------------------------------------------------------------------------ planning


def test_chunks_partition_the_sites_and_buffers_hold_the_cores(rng):
    pos = np.unique(rng.integers(1, 3_000_000, size=int(rng.integers(50, 400))))
    chunk_mb, buffer_mb = float(rng.uniform(0.1, 0.9)), float(rng.uniform(0, 0.5))
    chunks = plan_chunks(pos, "20", None, chunk_mb, buffer_mb)
    cores = np.concatenate([np.arange(*c.core) for c in chunks])
    np.testing.assert_array_equal(cores, np.arange(pos.size))  # every site in exactly one core, in order
    for c in chunks:
        assert c.span[0] <= c.core[0] < c.core[1] <= c.span[1]
        assert c.bp[1] - c.bp[0] <= round(chunk_mb * 1e6)
        assert np.all((pos[c.core[0] : c.core[1]] >= c.bp[0]) & (pos[c.core[0] : c.core[1]] < c.bp[1]))
        inside = (pos >= c.bp[0] - buffer_mb * 1e6) & (pos < c.bp[1] + buffer_mb * 1e6)
        np.testing.assert_array_equal(np.flatnonzero(inside), np.arange(*c.span))
    one = plan_chunks(pos, "20")
    assert len(one) == 1 and one[0].core == one[0].span == (0, pos.size)


def test_auto_chunks_keep_each_span_within_the_genotype_budget(rng):
    """``--chunk-mb auto``: one chunk while sites x targets fit the budget; else equal cores, as few
    as keep every span's genotypes (at an even site density) within it, never under the floor."""
    from vcfbert_fast.imputation.chunks import MIN_AUTO_CHUNK_MB, auto_chunk_mb

    length = int(rng.integers(5, 40)) * 1_000_000
    pos = np.unique(rng.integers(1, length, size=int(rng.integers(2_000, 20_000))))
    n_sites, buffer_mb = pos.size, float(rng.uniform(0.1, 2.0))
    assert auto_chunk_mb(pos, 10, None, buffer_mb, budget=n_sites * 10) is None  # fits exactly: one chunk
    for n_targets in (int(rng.integers(11, 200)), int(rng.integers(200, 5_000))):
        budget = n_sites * 10
        mb = auto_chunk_mb(pos, n_targets, None, buffer_mb, budget=budget)
        chunks = plan_chunks(pos, "20", None, mb, buffer_mb)
        cores = [(c.bp[1] - c.bp[0]) / 1e6 for c in chunks]
        assert max(cores) - min(cores) <= 1e-6 + 1 / 1e6 * len(chunks) or len(chunks) == 1  # equal cores
        per_mb = n_sites / ((pos[-1] + 1 - pos[0]) / 1e6)
        if budget / n_targets / per_mb - 2 * buffer_mb >= MIN_AUTO_CHUNK_MB:  # above the floor, a span holds at most the budget...
            assert (mb + 2 * buffer_mb) * per_mb * n_targets <= budget * (1 + 1e-6)
            # ...and one chunk fewer would not
            fewer = (pos[-1] + 1 - pos[0]) / 1e6 / (len(chunks) - 1) if len(chunks) > 1 else None
            assert fewer is None or (fewer + 2 * buffer_mb) * per_mb * n_targets > budget
        else:  # at the floor: cores of at least the floor, as many as fit
            assert mb >= MIN_AUTO_CHUNK_MB - 1e-6
            assert len(chunks) <= max(1, int((pos[-1] + 1 - pos[0]) // 1e6))


def test_region_parsing_and_limits(rng):
    assert parse_region("20:1,000-2,000") == ("20", 1000, 2000)
    assert parse_region("chr20") == ("chr20", 1, 2**62)
    assert parse_region("20:500-")[1:] == (500, 2**62)
    for bad in ("20:5-1", "20:x-y", "", "20:0-5"):
        with pytest.raises(InputError, match="--region"):
            parse_region(bad)
    pos = np.arange(100, 10_000, 37)
    start, end = int(rng.integers(100, 5000)), int(rng.integers(5000, 9000))
    chunks = plan_chunks(pos, "chr20", ("20", start, end), 0.001, 0.0)  # "20" matches "chr20"
    got = np.concatenate([np.arange(*c.core) for c in chunks])
    np.testing.assert_array_equal(got, np.flatnonzero((pos >= start) & (pos <= end)))
    with pytest.raises(InputError, match="not the panel's contig"):
        plan_chunks(pos, "20", ("21", 1, 10), None)
    with pytest.raises(InputError, match="holds no panel site"):
        plan_chunks(pos, "20", ("20", 20_000, 30_000), None)


# ------------------------------------------------------------------------------------------ impute


def test_chunks_with_buffers_over_everything_give_the_unchunked_vote(small_sim, tmp_path):
    """A chunk whose buffer spans the chromosome sees what the whole run sees: the vote's records
    are then the unchunked run's, byte for byte, whatever the chunk size."""
    from vcfbert_fast.impute import impute

    whole = str(tmp_path / "whole.vcf.gz")
    impute(small_sim.ref_vcf, small_sim.target_vcf, "vote", whole, progress=False, threads=1)
    out = str(tmp_path / "chunked.vcf.gz")
    s = impute(
        small_sim.ref_vcf, small_sim.target_vcf, "vote", out, progress=False, threads=1, chunk_mb=0.04, buffer_mb=1
    )
    assert s["chunks"] >= 3 and s["chunks_run"] == s["chunks"] and os.path.exists(out + ".tbi")
    assert _body(out) == _body(whole)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # the chunk directory is gone


def test_chunked_model_run_writes_every_site_once_and_the_region_only(small_sim, tmp_path):
    """Model chunks (buffers shorter than the chromosome): one record per panel site in the region,
    typed sites keep their input calls, and the QC and sites tables are joined."""
    import cyvcf2

    from vcfbert_fast.impute import impute

    panel, ckpt = _checkpoint(tmp_path, small_sim)
    lo, hi = int(panel.positions[20]), int(panel.positions[-20])
    out, sites = str(tmp_path / "r.vcf.gz"), str(tmp_path / "r.sites.tsv")
    s = impute(
        small_sim.ref_vcf, small_sim.target_vcf, ckpt, out, progress=False, threads=1,
        region=f"20:{lo}-{hi}", chunk_mb=0.03, buffer_mb=0.01, sites_path=sites,
    )  # fmt: skip
    want = panel.positions[(panel.positions >= lo) & (panel.positions <= hi)]
    recs = list(cyvcf2.VCF(out))
    np.testing.assert_array_equal([r.POS for r in recs], want)
    truth = {int(v.POS): v.genotypes for v in cyvcf2.VCF(str(small_sim.target_vcf)) if lo <= v.POS <= hi}
    for r in recs:
        if r.INFO.get("TYPED"):
            assert r.genotypes == truth[r.POS]
    rows = Path(sites).read_text().splitlines()
    assert rows[0].startswith("#CHROM") and [int(x.split("\t")[1]) for x in rows[1:]] == want.tolist()
    assert s["chunks"] > 1 and s["typed_sites"] == sum(1 for r in recs if r.INFO.get("TYPED"))


def test_killed_then_resumed_run_gives_the_uninterrupted_file(small_sim, tmp_path, monkeypatch):
    """Ctrl-C after two chunks leaves them in the chunk directory and no output; ``resume`` runs only the
    rest, and the joined file equals an uninterrupted run's. Other options are refused on resume."""
    from vcfbert_fast import impute as imp

    _, ckpt = _checkpoint(tmp_path, small_sim)
    args = (small_sim.ref_vcf, small_sim.target_vcf, ckpt)
    opts = {"progress": False, "threads": 1, "chunk_mb": 0.03, "buffer_mb": 0.02, "command": "test"}
    full = str(tmp_path / "full.vcf.gz")
    n = imp.impute(*args, full, **opts)["chunks"]
    assert n >= 4
    real, calls = imp._Run.chunk, []

    def flaky(self, chunk, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(chunk.index)
        return real(self, chunk, *a, **k)

    out = str(tmp_path / "out.vcf.gz")
    monkeypatch.setattr(imp._Run, "chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        imp.impute(*args, out, **opts)
    parts = tmp_path / ".out.vcf.gz.chunks"
    assert not os.path.exists(out) and sorted(p.name for p in parts.glob("chunk-*.vcf.gz")) == [
        f"chunk-{i:05d}-of-{n:05d}.vcf.gz" for i in (1, 2)
    ]
    with pytest.raises(InputError, match="other inputs or options"):
        imp.impute(*args, out, **{**opts, "batch_size": 3}, resume=True)
    calls.clear()
    monkeypatch.setattr(imp._Run, "chunk", lambda self, c, *a, **k: (calls.append(c.index), real(self, c, *a, **k))[1])
    s = imp.impute(*args, out, **opts, resume=True)
    assert calls == list(range(2, n)) and s["chunks_resumed"] == 2
    with gzip.open(full, "rt") as a, gzip.open(out, "rt") as b:
        assert [x for x in a if not x.startswith("##filedate")] == [x for x in b if not x.startswith("##filedate")]
    assert Path(full + ".qc.tsv").read_text() == Path(out + ".qc.tsv").read_text()
    assert not parts.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, ref: str, target: str, ckpt: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from vcfbert_fast.impute import impute

    s = impute(ref, target, ckpt, out, progress=False, threads=1, chunk_mb=0.03, buffer_mb=0.02, command="t")
    assert s["world"] == world and s["rank"] == rank


def test_two_gloo_ranks_give_the_records_of_one(small_sim, tmp_path):
    """torchrun's code path (RANK/WORLD_SIZE): the ranks share the chunks, rank 0 joins them into
    the file one process writes."""
    from vcfbert_fast.impute import impute

    _, ckpt = _checkpoint(tmp_path, small_sim)
    one = str(tmp_path / "one.vcf.gz")
    impute(small_sim.ref_vcf, small_sim.target_vcf, ckpt, one, progress=False, threads=1, chunk_mb=0.03,
           buffer_mb=0.02, command="t")  # fmt: skip
    two = str(tmp_path / "two.vcf.gz")
    torch.set_num_threads(1)
    mp.spawn(
        _rank, args=(2, _free_port(), str(small_sim.ref_vcf), str(small_sim.target_vcf), ckpt, two), nprocs=2
    )
    assert _body(two) == _body(one)
    assert Path(two + ".qc.tsv").read_text() == Path(one + ".qc.tsv").read_text()


def test_bf16_inference_stays_close_to_fp32(small_sim, tmp_path):
    """``--precision bf16`` changes the arithmetic, not the answer: dosages within 0.02 on average of
    fp32's, and the same best guess at nearly every genotype."""
    import cyvcf2

    from vcfbert_fast.impute import impute

    _, ckpt = _checkpoint(tmp_path, small_sim)
    ds = {}
    for prec in ("fp32", "bf16"):
        out = str(tmp_path / f"{prec}.vcf.gz")
        s = impute(small_sim.ref_vcf, small_sim.target_vcf, ckpt, out, progress=False, threads=1, precision=prec)
        assert s["precision"] == prec
        ds[prec] = np.array([r.format("DS")[:, 0] for r in cyvcf2.VCF(out)])
    diff = np.abs(ds["fp32"] - ds["bf16"])
    assert diff.mean() < 0.02 and np.mean(np.round(ds["fp32"]) != np.round(ds["bf16"])) < 0.01


def test_target_calls_of_a_span_equal_the_slice_of_the_whole(rng):
    """impute builds TargetCalls per chunk (memory by the chunk); they must equal the whole
    chromosome's calls sliced to the span, swapped alleles and unphased hets included."""
    from types import SimpleNamespace

    from vcfbert_fast.imputation.calls import TargetCalls
    from vcfbert_fast.imputation.chunks import slice_calls

    n_sites, n_rec, n_samp = 60, 25, 4
    panel_index = np.full(n_rec, -1, dtype=np.int64)
    hit = rng.random(n_rec) < 0.8
    panel_index[hit] = np.sort(rng.choice(n_sites, size=int(hit.sum()), replace=False))
    alleles = rng.integers(-1, 2, size=(n_samp, 2, n_rec)).astype(np.int8)
    target = SimpleNamespace(samples=[f"s{i}" for i in range(n_samp)], alleles=alleles,
                             phased=rng.random((n_samp, n_rec)) < 0.7)
    alignment = SimpleNamespace(panel_index=panel_index, swap=rng.random(n_rec) < 0.3)
    unph = (~target.phased) & (alleles[:, 0] != alleles[:, 1]) & (alleles.min(1) >= 0)
    whole = TargetCalls.from_alignment(target, alignment, n_sites, unph)
    for lo, hi in [(0, n_sites), (0, 1), (7, 31), (int(rng.integers(0, 59)), 60), (20, 20)]:
        part = TargetCalls.from_alignment(target, alignment, n_sites, unph, span=(lo, hi))
        want = slice_calls(whole, lo, hi)
        for name in ("typed", "typed_sites", "typed_calls", "typed_phased", "typed_unphased"):
            np.testing.assert_array_equal(getattr(part, name), getattr(want, name), err_msg=f"{name} [{lo}, {hi})")
        for view in ("calls", "model_calls", "unphased"):
            got = getattr(part, view)(slice(None))
            np.testing.assert_array_equal(got, getattr(whole, view)(slice(lo, hi)), err_msg=f"{view} [{lo}, {hi})")
    # the dense views against the target's records, by loops: input alleles (swapped where the
    # alignment says) at the panel site each record types, -1 elsewhere; the model's calls with
    # both alleles of an unphased het unknown
    calls, mc, un = whole.calls(slice(None)), whole.model_calls(np.arange(n_sites)), whole.unphased(slice(None))
    at = {int(p): t for t, p in enumerate(panel_index) if p >= 0}
    for s in range(n_samp):
        for m in range(n_sites):
            t = at.get(m)
            given = [-1, -1] if t is None else [
                (1 - a if alignment.swap[t] and a >= 0 else a) for a in alleles[s, :, t].tolist()
            ]
            assert list(calls[s, :, m]) == given, (s, m)
            assert bool(un[s, m]) == (t is not None and bool(unph[s, t])), (s, m)
            assert list(mc[s, :, m]) == ([-1, -1] if un[s, m] else given), (s, m)
    idx = np.sort(rng.choice(n_sites, size=9, replace=False))  # index arrays give the same columns
    np.testing.assert_array_equal(whole.calls(idx), calls[:, :, idx])


def test_chunk_mb_argument_takes_auto_or_a_number(capsys):
    """``--chunk-mb auto`` (the default) or megabases; anything else is argparse's one-line usage error."""
    import argparse

    from vcfbert_fast.impute import add_arguments, chunk_argument

    assert chunk_argument("auto") == "auto" and chunk_argument(" AUTO ") == "auto"
    assert chunk_argument("7.5") == 7.5
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--ref", "r", "--target", "t", "--model", "m", "--out", "o.vcf.gz"]
    assert parser.parse_args(base).chunk_mb == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--chunk-mb", "big"])
    assert "'big' is not a number of megabases or 'auto'" in capsys.readouterr().err
