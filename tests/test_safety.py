"""Nothing lost or silently changed (issue 12): outputs never replace inputs or a run, bad options are
one-line errors up front, temporaries never look finished, no stale index, bounded checkpoints, --version."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vcfbert_fast
from vcfbert_fast.cli import main
from vcfbert_fast.errors import CheckpointError, InputError

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, rc: int, *words: str) -> str:
    """The CLI's refusal: exit status 2, one line on stderr, no traceback, naming ``words``."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _random_file(path: Path, rng) -> bytes:
    data = rng.integers(0, 256, size=int(rng.integers(64, 512)), dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return data


@pytest.fixture
def inputs(tmp_path, rng):
    """Stand-in input files (random bytes): the path checks run before any of them is read."""
    files = {}
    for name in ("ref.vcf.gz", "ref.vcf.gz.tbi", "target.vcf.gz", "target.vcf.gz.csi", "m.pt", "pops.txt"):
        files[name] = _random_file(tmp_path / name, rng)
    return tmp_path, files


def _impute_argv(d: Path, out: str, *extra: str) -> list[str]:
    return [
        "impute",
        "--ref",
        str(d / "ref.vcf.gz"),
        "--target",
        str(d / "target.vcf.gz"),
        "--model",
        str(d / "m.pt"),
        "--populations",
        str(d / "pops.txt"),
        "--out",
        out,
        "--no-progress",
        *extra,
    ]


# ----------------------------------------------------------------------------- 1. --out is never an input


@pytest.mark.parametrize(
    "how, role",
    [
        ("target", "--target"),
        ("ref", "--ref"),
        ("model", "--model"),
        ("panel", "--populations"),
        ("dotdot", "--target"),
        ("symlink", "--target"),
        ("hardlink", "--ref"),
        ("ref_index", "--ref"),
        ("target_index", "--target"),
    ],
)
def test_impute_out_naming_an_input_is_refused(inputs, capsys, monkeypatch, how, role):
    d, before = inputs
    monkeypatch.chdir(d)
    out = {
        "target": str(d / "target.vcf.gz"),
        "ref": "ref.vcf.gz",  # relative, while --ref is absolute
        "model": str(d / "m.pt"),
        "panel": str(d / "pops.txt"),
        "dotdot": str(d / "sub" / ".." / "target.vcf.gz"),
        "symlink": str(d / "link.vcf.gz"),
        "hardlink": str(d / "hard.vcf.gz"),
        "ref_index": str(d / "ref.vcf.gz.tbi"),
        "target_index": str(d / "target.vcf.gz.csi"),
    }[how]
    (d / "sub").mkdir()
    os.symlink(d / "target.vcf.gz", d / "link.vcf.gz")
    os.link(d / "ref.vcf.gz", d / "hard.vcf.gz")
    line = _one_line_error(capsys, main(_impute_argv(d, out)), out, role, "choose another --out")
    assert "never replaces an input" in line
    for name, data in before.items():  # every input byte for byte as it was
        assert (d / name).read_bytes() == data, name
    assert not [p for p in os.listdir(d) if ".partial-" in p]


def test_qc_file_of_out_naming_an_input_is_refused(inputs, capsys):
    """``OUT.qc.tsv`` (the allele QC file) never replaces an input either."""
    d, before = inputs
    os.replace(d / "pops.txt", d / "imp.vcf.gz.qc.tsv")
    argv = _impute_argv(d, str(d / "imp.vcf.gz"))
    argv[argv.index("--populations") + 1] = str(d / "imp.vcf.gz.qc.tsv")
    line = _one_line_error(capsys, main(argv), "imp.vcf.gz.qc.tsv", "--populations", "its .qc.tsv")
    assert "never replaces an input" in line
    assert (d / "imp.vcf.gz.qc.tsv").read_bytes() == before["pops.txt"]


def test_out_index_beside_an_input_is_refused(inputs):
    """An output whose index would land on an input's (``out.tbi`` is ``--ref``) is refused too."""
    from vcfbert_fast.paths import check_output_file

    d, _ = inputs
    with pytest.raises(InputError, match="would overwrite .*ref.vcf.gz.tbi"):
        check_output_file(d / "ref.vcf.gz", {"--other": d / "ref.vcf.gz.tbi"})
    check_output_file(d / "new.vcf.gz", {"--ref": d / "ref.vcf.gz", "--panel": None})  # a fresh name passes


# ----------------------------------------------------------------------------- 3. bad options, one line each


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--batch-size", "0"], ["--batch-size 0", ">= 1"]),
        (["--batch-size", "-1"], ["--batch-size -1", ">= 1"]),
        (["--device", "tpu"], ["--device 'tpu'", "auto, cpu, cuda"]),
        (["--device", "cuda:x"], ["--device 'cuda:x'", "auto, cpu, cuda"]),
        (["--device", "gpu0"], ["--device 'gpu0'", "auto, cpu, cuda"]),
        (["--overlap", "-3"], ["--overlap -3", ">= 0"]),
        (["--threads", "0"], ["--threads 0", ">= 1"]),
        (["--chunk-mb", "0"], ["--chunk-mb 0", "> 0"]),
        (["--chunk-mb", "nan"], ["--chunk-mb nan", "> 0"]),
        (["--buffer-mb", "-1"], ["--buffer-mb -1.0", ">= 0"]),
        (["--region", "20:9-3"], ["--region '20:9-3'", "START must be"]),
        (["--region", "20:a-b"], ["--region '20:a-b'", "CHR:START-END"]),
        (["--threads", "-2"], ["--threads -2", ">= 1"]),
        (["-f", "GT,XX"], ["-f/--format-fields", "XX", "GT,DS,GP,HDS"]),
        (["-f", "DS,DS"], ["-f/--format-fields DS,DS", "twice"]),
        (["--min-r2", "1.5"], ["--min-r2 1.5", "from 0 to 1"]),
        (["--min-r2", "nan"], ["--min-r2 nan", "from 0 to 1"]),
        (["--settle-by-vote", "0.3"], ["--settle-by-vote 0.3", "from 0.5 to 1", "or off"]),
        (["--settle-by-vote", "nan"], ["--settle-by-vote nan", "from 0.5 to 1"]),
        (["--sites", "{d}/ref.vcf.gz"], ["--sites is the --ref file", "never replaces an input"]),
        (["--sites", "{d}/o.vcf.gz"], ["--sites is the --out file"]),
    ],
)
def test_impute_bad_options_refused_up_front(inputs, capsys, extra, words):
    """Refused before any input is read: the stand-in inputs are not VCFs, and that is never reached."""
    d, before = inputs
    extra = [x.format(d=d) for x in extra]
    _one_line_error(capsys, main(_impute_argv(d, str(d / "o.vcf.gz"), *extra)), *words)
    assert not (d / "o.vcf.gz").exists()
    for name, data in before.items():
        assert (d / name).read_bytes() == data, name


@pytest.mark.parametrize("out", ["o.txt", "o.vcf.gz.tmp", "o"])
def test_impute_output_type_unknown_name_refused_up_front(inputs, capsys, out):
    """A name that says neither .vcf, .vcf.gz nor .bcf is refused (not guessed), unless -O says the type."""
    d, _ = inputs
    _one_line_error(capsys, main(_impute_argv(d, str(d / out))), out, "cannot be told", "-O v|z|b")
    from vcfbert_fast.io.vcf_output import output_type

    assert output_type(d / out, "b") == "b"
    assert [output_type(f"x{s}") for s in (".vcf", ".VCF.GZ", ".vcf.bgz", ".bcf")] == ["v", "z", "z", "b"]


def test_panel_is_a_hidden_alias_of_populations(capsys):
    """``--panel`` (Beagle users read it as the reference panel) still works, says its new name, and is hidden."""
    from vcfbert_fast.cli import build_parser

    for cmd in ("impute", "train"):
        args = build_parser(cmd).parse_args(
            [cmd, "--ref", "r.vcf.gz", "--out", "o.vcf.gz", "--panel", "pops.txt"]
            + (["--target", "t.vcf.gz", "--model", "m.pt"] if cmd == "impute" else [])
        )
        assert args.populations == "pops.txt"
        assert "--panel is now --populations" in capsys.readouterr().err
        sub = build_parser(cmd)._subparsers._group_actions[0].choices[cmd]
        assert "--populations" in sub.format_help() and "--panel" not in sub.format_help()


def test_impute_out_directory_refused_up_front(inputs, capsys):
    d, _ = inputs
    (d / "outdir").mkdir()
    _one_line_error(
        capsys, main(_impute_argv(d, str(d / "outdir"))), "--out is a directory", "imputed.vcf.gz"
    )
    _one_line_error(capsys, main(_impute_argv(d, str(d / "outdir") + os.sep)), "names a directory")
    _one_line_error(
        capsys, main(_impute_argv(d, str(d / "pops.txt" / "x.vcf.gz"))), "is a file, not a directory"
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_impute_unwritable_out_refused_up_front(inputs, capsys):
    d, _ = inputs
    _one_line_error(capsys, main(_impute_argv(d, "/proc/x.vcf.gz")), "/proc/x.vcf.gz", "cannot be written")


def _fresh_checkpoint(path, panel, max_sites: int):
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
            "train_config": {"k": 0},
        },
    )
    return str(path)


def test_impute_overlap_above_the_model_maximum_is_refused(small_sim, tmp_path, capsys, rng):
    """Was: silently clipped to max_sites - 1 (5,853 windows instead of 32). Now the max is named."""
    from vcfbert_fast.imputation import model_tables
    from vcfbert_fast.io import read_panel

    panel = read_panel(small_sim.ref_vcf, progress=False)
    max_sites = int(rng.integers(40, 120))
    ckpt = _fresh_checkpoint(tmp_path / "m.pt", panel, max_sites)
    too_big = int(rng.integers(max_sites, 10 * max_sites))
    argv = ["impute", "--ref", str(small_sim.ref_vcf), "--target", str(small_sim.target_vcf), "--model", ckpt]
    argv += ["--out", str(tmp_path / "o.vcf.gz"), "--overlap", str(too_big), "--no-progress"]
    line = _one_line_error(capsys, main(argv), f"--overlap {too_big}", f"maximum {max_sites - 1}")
    assert f"0..{max_sites - 1}" in line
    assert not (tmp_path / "o.vcf.gz").exists()
    # the step itself refuses too (it clipped before)
    from vcfbert_fast.checkpoint import read_checkpoint

    with pytest.raises(InputError, match="overlap"):
        model_tables(panel, read_checkpoint(ckpt), [], None, too_big)
    assert model_tables(panel, read_checkpoint(ckpt), [], None, max_sites - 1).layout.overlap == max_sites - 1


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--threads", "-1"], ["threads=-1", ">= 1"]),
        (["--threads", "0"], ["threads=0", ">= 1"]),
        (["--device", "tpu"], ["--device 'tpu'", "auto, cpu, cuda"]),
        (["--heads", "3", "--dims", "16"], ["dims=16", "divisible by heads=3"]),
        (["--dims", "8192"], ["dims=8192", "4096"]),
        (["--layers", "0"], ["layers=0"]),
        (["--dims", "4096", "--layers", "64"], ["GiB", "limit"]),
    ],
)
def test_train_bad_options_refused_up_front(tmp_path, capsys, extra, words):
    """Refused before the panel is read (``--ref`` does not even exist) and before anything is written."""
    argv = ["train", "--ref", str(tmp_path / "absent.vcf.gz"), "--out", str(tmp_path / "run"), *extra]
    _one_line_error(capsys, main(argv), *words)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 2. a run is never replaced silently


def _old_run(d: Path, rng) -> dict[str, bytes]:
    d.mkdir(parents=True, exist_ok=True)
    return {name: _random_file(d / name, rng) for name in ("best.pt", "last.pt", "metrics.jsonl")}


def test_train_into_an_existing_run_is_refused(tmp_path, capsys, rng):
    run = tmp_path / "run"
    old = _old_run(run, rng)
    argv = ["train", "--ref", str(tmp_path / "absent.vcf.gz"), "--out", str(run), "--no-progress"]
    _one_line_error(capsys, main(argv), str(run), "already holds a training run", "--resume", "--force")
    assert {n: (run / n).read_bytes() for n in old} == old
    # --force on a run that cannot start (no panel) still loses nothing: removal waits for the panel
    rc = main(argv + ["--force"])
    assert rc == 2 and "absent.vcf.gz" in capsys.readouterr().err
    assert {n: (run / n).read_bytes() for n in old} == old
    _one_line_error(capsys, main(argv + ["--force", "--resume"]), "contradict")
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    _one_line_error(capsys, main(["train", "--ref", "absent.vcf", "--out", str(afile)]), "--out is a file")
    assert afile.read_bytes() == b"x"


def test_train_force_replaces_the_whole_run(small_sim, tmp_path, capsys, rng, one_thread):
    run = tmp_path / "run"
    old = _old_run(run, rng)
    argv = ["train", "--ref", str(small_sim.ref_vcf), "--out", str(run), "--dims", "16", "--layers", "1"]
    argv += ["--heads", "2", "--max-sites", "128", "--batch-size", "16", "--k", "0", "--max-steps", "1"]
    argv += ["--val-max-batches", "1", "--no-progress", "--force"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "removed the old best.pt, last.pt, metrics.jsonl" in capsys.readouterr().err
    from vcfbert_fast.checkpoint import read_checkpoint

    assert read_checkpoint(run / "last.pt")["step"] == 1
    for name, data in old.items():
        assert (run / name).read_bytes() != data, f"{name} of the old run survived"


# ----------------------------------------------------------------------------- 4. temporaries and the index


def _sites(rng, m: int, s: int):
    from vcfbert_fast.vcf_writer import ImputedSites

    positions = np.sort(rng.choice(np.arange(1000, 10**6), size=m, replace=False)).astype(np.int64)
    return ImputedSites(
        contig="20",
        positions=positions,
        ids=np.array([f"rs{i}" for i in range(m)], dtype=object),
        ref=np.array(rng.choice(list("AC"), size=m), dtype=object),
        alt=np.array(rng.choice(list("GT"), size=m), dtype=object),
        hds=rng.random((m, s, 2)).astype(np.float32),
        imputed=rng.random(m) < 0.8,
    )


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_no_partial_and_keeps_the_old_output(tmp_path, rng, monkeypatch, exc):
    from vcfbert_fast import vcf_writer

    out = tmp_path / "out.vcf.gz"
    old = _random_file(out, rng)
    old_idx = _random_file(tmp_path / "out.vcf.gz.tbi", rng)
    m, s, chunk = int(rng.integers(30, 80)), int(rng.integers(2, 6)), 8
    stop_at = int(rng.integers(2, -(-m // chunk) + 1))  # a chunk in the middle of the write
    real = vcf_writer.format_genotypes
    seen = {"calls": 0, "partial": []}

    def interrupted(*a, **k):
        seen["calls"] += 1
        seen["partial"] = [p for p in os.listdir(tmp_path) if p not in ("out.vcf.gz", "out.vcf.gz.tbi")]
        if seen["calls"] == stop_at:
            raise exc("interrupted mid-write")
        return real(*a, **k)

    monkeypatch.setattr(vcf_writer, "format_genotypes", interrupted)
    with pytest.raises(exc):
        vcf_writer.write_imputed_vcf(out, _sites(rng, m, s), [f"S{i}" for i in range(s)], chunk_sites=chunk)
    # while it was written, the temporary was hidden and named so no tool takes it for a VCF
    (partial,) = seen["partial"]
    assert partial == f".out.vcf.gz.partial-{os.getpid()}"
    assert partial.startswith(".") and not partial.endswith((".gz", ".vcf", ".bcf"))
    # afterwards: no temporary left, the old output and its index untouched
    assert sorted(os.listdir(tmp_path)) == ["out.vcf.gz", "out.vcf.gz.tbi"]
    assert out.read_bytes() == old and (tmp_path / "out.vcf.gz.tbi").read_bytes() == old_idx


def test_bgzf_writer_cut_short_has_no_eof_block(tmp_path, rng):
    """Even a temporary someone kept would read as truncated: no EOF block is written on an error."""
    from vcfbert_fast.io.bgzf import BgzfWriter, has_eof_block

    path = tmp_path / "x.gz"
    with pytest.raises(KeyboardInterrupt), BgzfWriter(str(path)) as w:
        w.write(rng.integers(0, 256, size=200_000, dtype=np.uint8).tobytes())
        raise KeyboardInterrupt
    assert path.exists() and not has_eof_block(path)
    with BgzfWriter(str(path)) as w:
        w.write(b"complete\n")
        w.close()  # closing twice is harmless
    assert has_eof_block(path)


def test_no_index_tool_removes_the_stale_index_and_says_so(tmp_path, rng, monkeypatch, capsys):
    """Was: the old .tbi stayed beside the new VCF, and region queries then read the wrong blocks."""
    import cyvcf2

    from vcfbert_fast.vcf_writer import write_imputed_vcf

    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("tabix") is None and shutil.which("bcftools") is None
    out = tmp_path / "out.vcf.gz"
    for suffix in (".tbi", ".csi"):
        _random_file(tmp_path / f"out.vcf.gz{suffix}", rng)
    m, s = int(rng.integers(10, 40)), int(rng.integers(1, 5))
    summary = write_imputed_vcf(out, _sites(rng, m, s), [f"S{i}" for i in range(s)])
    assert summary["index"] is None
    assert sorted(os.listdir(tmp_path)) == ["emptybin", "out.vcf.gz"]
    err = capsys.readouterr().err
    assert "without an index" in err and "stale index" in err and "tabix -p vcf" in err
    assert len(list(cyvcf2.VCF(str(out)))) == m


def test_failing_index_tool_leaves_no_index(tmp_path, rng, monkeypatch, capsys):
    from vcfbert_fast.vcf_writer import write_imputed_vcf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tabix").write_text("#!/bin/sh\necho 'tabix: simulated failure' >&2\n: > \"$4.tbi\"\nexit 1\n")
    (fake / "tabix").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    out = tmp_path / "out.vcf.gz"
    _random_file(tmp_path / "out.vcf.gz.tbi", rng)
    summary = write_imputed_vcf(out, _sites(rng, 12, 2), ["A", "B"])
    assert summary["index"] is None
    assert sorted(os.listdir(tmp_path)) == ["bin", "out.vcf.gz"]
    assert "tabix failed" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("tabix") is None, reason="needs tabix")
def test_index_is_built_beside_and_answers_regions(tmp_path, rng):
    from vcfbert_fast.vcf_writer import write_imputed_vcf

    out = tmp_path / "out.vcf.gz"
    _random_file(tmp_path / "out.vcf.gz.tbi", rng)  # a stale one, replaced
    _random_file(tmp_path / "out.vcf.gz.csi", rng)  # a stale one of the other kind, removed
    sites = _sites(rng, int(rng.integers(20, 60)), 3)
    summary = write_imputed_vcf(out, sites, ["A", "B", "C"])
    assert summary["index"] == str(out) + ".tbi"
    assert sorted(os.listdir(tmp_path)) == ["out.vcf.gz", "out.vcf.gz.tbi"]
    lo, hi = (int(x) for x in np.sort(rng.choice(sites.positions, size=2, replace=False)))
    r = subprocess.run(["tabix", str(out), f"20:{lo}-{hi}"], capture_output=True, text=True, check=True)
    got = [int(line.split("\t")[1]) for line in r.stdout.splitlines()]
    assert got == [int(p) for p in sites.positions if lo <= p <= hi]


# ----------------------------------------------------------------------------- 5. bounded checkpoint configs


def _plain_checkpoint(path: Path, **config) -> str:
    from vcfbert_fast.checkpoint import save_checkpoint
    from vcfbert_fast.vocab import VOCAB

    save_checkpoint(path, {"model_state": {}, "model_config": config, "vocab": dict(VOCAB)})
    return str(path)


def test_huge_checkpoint_config_refused_fast_with_little_memory(tmp_path):
    """Was: the model was built from the config before any check (GBs allocated). Now refused first."""
    import torch

    from vcfbert_fast.imputation import load_model

    path = _plain_checkpoint(tmp_path / "huge.pt", dims=32768, n_layers=64, attn_heads=16)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        load_model(path, None, torch.device("cpu"))
    assert time.perf_counter() - t0 < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 * 1024  # < 100 MiB more
    msg = str(e.value)
    assert msg.startswith(path) and "dims=32768" in msg and "[2, 4096]" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "config, words",
    [
        ({"dims": 512, "n_layers": 65}, ["n_layers=65", "[1, 64]"]),
        ({"dims": 100, "attn_heads": 16}, ["dims=100", "attn_heads=16"]),
        ({"dims": 4096, "n_layers": 64, "attn_heads": 16}, ["GiB", "dims=4096", "n_layers=64"]),
        ({"dims": "512"}, ["dims='512'", "whole number"]),
        ({"dims": True}, ["dims=True"]),
        ({"n_layers": 2, "hidden": 9}, ["unknown key", "hidden"]),
        ({"ffn_mult": 1000}, ["ffn_mult=1000"]),
        ({"max_len": 10**9}, ["max_len=1000000000"]),
        ({"n_match_features": 10**6}, ["n_match_features=1000000"]),
    ],
)
def test_out_of_bounds_configs_name_the_file_and_key(tmp_path, config, words):
    from vcfbert_fast.checkpoint import read_checkpoint

    path = _plain_checkpoint(tmp_path / "bad.pt", **config)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(e.value).startswith(path)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "config, pattern",
    [
        ({"dims": 8}, r"dims \(8\) must be divisible"),  # the default 16 heads
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"k_pool": "sum"}, r"k_pool must be"),
    ],
)
def test_config_modelconfig_refuses_is_a_checkpoint_error_too(tmp_path, config, pattern):
    """A config within the bounds that ModelConfig refuses: a one-line CheckpointError, no traceback."""
    import torch

    from vcfbert_fast.imputation import load_model

    path = _plain_checkpoint(tmp_path / "m.pt", **config)
    with pytest.raises(CheckpointError, match=r"m\.pt: model_config: " + pattern):
        load_model(path, None, torch.device("cpu"))


def test_estimated_model_bytes_is_what_the_model_holds(rng):
    """The bound is counted from the config: it must equal what building the model allocates."""
    from vcfbert_fast.checkpoint import estimated_model_bytes
    from vcfbert_fast.model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig

    for _ in range(8):
        heads = int(rng.choice([1, 2, 4]))
        cfg = ModelConfig(
            dims=heads * 2 * int(rng.integers(1, 9)),
            n_layers=int(rng.integers(1, 4)),
            attn_heads=heads,
            ffn_mult=int(rng.integers(1, 5)),
            n_af_freqs=int(rng.integers(1, 40)),
            max_len=int(rng.integers(3, 300)),
            k_pool=str(rng.choice(["attention", "mean", "max"])),
            copy_head=bool(rng.integers(0, 2)),
            n_match_features=int(rng.integers(1, 9)),
            prior_hidden=int(rng.integers(1, 20)),
            shared_prior=bool(rng.integers(0, 2)),
        )
        model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(cfg))
        held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        assert estimated_model_bytes(cfg.to_dict()) == held, cfg


def test_trained_model_sizes_stay_loadable():
    """TrainConfig refuses what check_model_config would refuse, so no run writes an unloadable model."""
    from vcfbert_fast.training import TrainConfig

    TrainConfig(dims=64, layers=4, heads=4)
    for bad in ({"dims": 8192}, {"layers": 65}, {"dims": 30, "heads": 4}, {"threads": -1}):
        with pytest.raises(InputError, match=next(iter(bad))):
            TrainConfig(**bad)


# ----------------------------------------------------------------------------- 6. --version, one source


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"vcfbert-fast {vcfbert_fast.__version__}\n"
    r = subprocess.run(
        [sys.executable, "-m", "vcfbert_fast", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.stdout == f"vcfbert-fast {vcfbert_fast.__version__}\n"


def test_one_version_source():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vcfbert_fast.__version__"}
    pyproject = pytest.importorskip("setuptools.config.pyprojecttoml")
    assert (
        pyproject.read_configuration(ROOT / "pyproject.toml")["project"]["version"]
        == vcfbert_fast.__version__
    )


def test_ctrl_c_is_one_line_and_exit_130(inputs, capsys, monkeypatch):
    """Ctrl-C anywhere in a subcommand: one line on stderr, no traceback, the shell's 128 + SIGINT."""
    from vcfbert_fast import impute as imp

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(imp, "run", interrupted)
    d, _ = inputs
    rc = main(_impute_argv(d, str(d / "o.vcf.gz")))
    err = capsys.readouterr().err
    assert rc == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "interrupted" in err and "--resume" in err
