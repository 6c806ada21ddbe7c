"""Trainer, metrics and the ``train`` subcommand on the small simulated panel (tiny models, seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vcfbert_fast.checkpoint import read_checkpoint
from vcfbert_fast.errors import CheckpointError
from vcfbert_fast.metrics import ImputationMetrics
from vcfbert_fast.train import TrainConfig, Trainer, lr_factor

TINY = {
    "dims": 16,
    "layers": 1,
    "heads": 2,
    "dropout": 0.1,
    "max_sites": 128,
    "batch_size": 8,
    "k": 2,
    "warmup_steps": 5,
    "lr": 3e-3,
    "val_every_steps": 0,
    "log_every": 1,
    "progress": False,
    "val_max_batches": 4,
    "time_budget_min": None,
}


@pytest.fixture(scope="module")
def panel(small_sim):
    from vcfbert_fast.io import read_panel

    return read_panel(small_sim.ref_vcf, small_sim.panel_txt, progress=False)


@pytest.fixture
def one_thread():
    """One intra-op thread: deterministic reductions, and no spin-waiting on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


# ----------------------------------------------------------------------------- metrics


def _metrics_reference(batches):
    """Independent numpy computation of the masked-site metrics over a list of (logits, batch)."""
    rows = {"y": [], "p": [], "af": [], "gy": [], "gp": []}
    for logits, b in batches:
        m = b["mask"].numpy()
        af = b["af"].numpy()
        for h in ("1", "2"):
            y = b[f"hap_{h}_label"].numpy()
            p = logits[f"hap{h}_logits"].numpy().argmax(-1)
            sel = m & (y >= 0)
            rows["y"].append(y[sel])
            rows["p"].append(p[sel])
            rows["af"].append(af[sel])
        g = b["gt_label"].numpy()
        sel = m & (g >= 0)
        rows["gy"].append(g[sel])
        rows["gp"].append(logits["gt_logits"].numpy().argmax(-1)[sel])
    y, p, af = (np.concatenate(rows[k]) for k in ("y", "p", "af"))
    gy, gp = np.concatenate(rows["gy"]), np.concatenate(rows["gp"])
    base = (af > 0.5).astype(int)

    def f1(pred):
        tp = np.sum((pred == 1) & (y == 1))
        fp = np.sum((pred == 1) & (y == 0))
        fn = np.sum((pred == 0) & (y == 1))
        return 2 * tp / (2 * tp + fp + fn)

    rare = af < 0.05
    return {
        "accuracy": np.mean(p == y),
        "alt_f1": f1(p),
        "rare_accuracy": np.mean(p[rare] == y[rare]),
        "common_accuracy": np.mean(p[~rare] == y[~rare]),
        "gt_accuracy": np.mean(gp == gy),
        "af_baseline_accuracy": np.mean(base == y),
        "af_baseline_alt_f1": f1(base),
        "af_baseline_rare_accuracy": np.mean(base[rare] == y[rare]),
        "af_baseline_common_accuracy": np.mean(base[~rare] == y[~rare]),
        "n_sites": y.size,
    }


def _random_batch(rng, b, length):
    h1 = rng.integers(0, 2, size=(b, length))
    h2 = rng.integers(0, 2, size=(b, length))
    gt = 2 * h1 + h2
    for a in (h1, h2, gt):
        a[:, 0] = a[:, -1] = -100  # SOS / EOS
    h1[0, 3] = -100  # a missing label inside the window is not scored
    mask = np.zeros(length, dtype=bool)
    mask[1:-1] = rng.random(length - 2) < 0.5
    af = rng.choice([0.001, 0.01, 0.04, 0.2, 0.6, 0.9], size=length).astype(np.float32)
    batch = {
        "hap_1_label": torch.from_numpy(h1),
        "hap_2_label": torch.from_numpy(h2),
        "gt_label": torch.from_numpy(gt),
        "mask": torch.from_numpy(np.broadcast_to(mask, (b, length)).copy()),
        "af": torch.from_numpy(np.broadcast_to(af, (b, length)).copy()),
    }
    logits = {
        "hap1_logits": torch.randn(b, length, 2, generator=None),
        "hap2_logits": torch.randn(b, length, 2),
        "gt_logits": torch.randn(b, length, 4),
    }
    return logits, batch


def test_metrics_match_numpy_reference():
    rng = np.random.default_rng(np.random.randint(2**31))
    batches = [_random_batch(rng, int(rng.integers(1, 6)), int(rng.integers(10, 40))) for _ in range(4)]
    m = ImputationMetrics()
    for logits, b in batches:
        m.update(logits, b, loss=torch.tensor(2.0))
    got = m.compute()
    want = _metrics_reference(batches)
    for k, v in want.items():
        assert got[k] == pytest.approx(float(v), abs=1e-12), k
    assert got["loss"] == pytest.approx(2.0)
    # perfect predictions score 1.0
    logits, b = batches[0]
    perfect = {
        f"hap{h}_logits": torch.nn.functional.one_hot(b[f"hap_{h}_label"].clamp_min(0), 2).float()
        for h in ("1", "2")
    }
    perfect["gt_logits"] = torch.nn.functional.one_hot(b["gt_label"].clamp_min(0), 4).float()
    m2 = ImputationMetrics()
    m2.update(perfect, b)
    r = m2.compute()
    assert r["accuracy"] == 1.0 and r["gt_accuracy"] == 1.0


def test_lr_factor():
    assert lr_factor(0.0, 0, 10, "cosine", 0.1) == pytest.approx(0.1)  # first warmup step: 1/10
    assert lr_factor(0.0, 9, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(0.0, 10, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(0.5, 50, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(1.0, 99, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(0.25, 50, 0, "linear", 0.0) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- trainer


def test_loss_decreases_and_max_steps(panel, tmp_path, one_thread):
    cfg = TrainConfig(**TINY, max_steps=30, epochs=50, checkpoint_every_steps=10)
    tr = Trainer(cfg, panel, None, tmp_path)
    assert set(tr.train_samples).isdisjoint(tr.val_samples)
    assert tr.train_samples.size + tr.val_samples.size == panel.n_samples
    summary = tr.train()
    assert summary["stop_reason"] == "max_steps" and summary["step"] == 30
    recs = _jsonl(tmp_path / "metrics.jsonl")
    losses = [r["loss"] for r in recs if r["kind"] == "train"]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.9 * first, f"loss did not decrease: first {first:.4f}, last {last:.4f}"
    val = [r for r in recs if r["kind"] == "val"]
    assert val and val[-1]["step"] == 30 and 0.0 <= val[-1]["accuracy"] <= 1.0
    last_state = read_checkpoint(tmp_path / "last.pt")
    assert last_state["step"] == 30
    assert (tmp_path / "best.pt").exists()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["train_config"]["max_steps"] == 30


def test_checkpoint_calibration_is_the_fit_of_its_own_weights(panel, tmp_path, one_thread):
    """best.pt and last.pt carry the calibration fitted on the validation masks with their own
    weights: re-validating those weights fits it again, to the same numbers."""
    from vcfbert_fast.checkpoint import load_checkpoint

    cfg = TrainConfig(**dict(TINY, max_steps=12, epochs=50, val_every_steps=4))
    tr = Trainer(cfg, panel, None, tmp_path)
    tr.train()
    for name in ("best.pt", "last.pt"):
        saved = read_checkpoint(tmp_path / name)["calibration"]
        assert len(saved["classes"]) == len(saved["maf_edges"]) - 1
        assert sum(c["n_ref"] + c["n_alt"] for c in saved["classes"]) > 0
        load_checkpoint(tmp_path / name, model=tr.model, panel=panel)
        tr.validate()
        for got, want in zip(tr.calibration["classes"], saved["classes"]):
            assert got["temperature"] == pytest.approx(want["temperature"], rel=1e-6)
            assert (got["n_ref"], got["n_alt"]) == (want["n_ref"], want["n_alt"])


class _Kill(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(panel, tmp_path, one_thread):
    """Kill after step 10 (last checkpoint at 8); resume continues from 8 and reaches the same weights."""
    base = dict(TINY, max_steps=14, epochs=50, checkpoint_every_steps=4)
    a = Trainer(TrainConfig(**base), panel, None, tmp_path / "a")
    a.train()
    assert a.steps_per_epoch > 14, "the kill must land mid-epoch for this test"

    b = Trainer(TrainConfig(**base), panel, None, tmp_path / "b")

    def kill(tr):
        if tr.step == 10:
            raise _Kill

    with pytest.raises(_Kill):
        b.train(on_step=kill)
    saved = read_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["step"] == 8 and saved["batch_in_epoch"] == 8

    c = Trainer(TrainConfig(**base), panel, None, tmp_path / "b", resume=True)
    assert c.step == 8 and c.batch_in_epoch == 8
    for k, v in c.model.state_dict().items():  # resumed state == saved state, exactly
        assert torch.equal(v, saved["model_state"][k]), k
    summary = c.train()
    assert summary["step"] == 14
    sa, sc = a.model.state_dict(), c.model.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), f"{k} differs between the resumed and the uninterrupted run"
    kinds = [r["kind"] for r in _jsonl(tmp_path / "b" / "metrics.jsonl")]
    assert "resume" in kinds


def test_resume_refuses_changed_model(panel, tmp_path, one_thread):
    Trainer(TrainConfig(**dict(TINY, max_steps=2)), panel, None, tmp_path).train()
    with pytest.raises(CheckpointError, match="dims"):
        Trainer(TrainConfig(**dict(TINY, max_steps=4, dims=32)), panel, None, tmp_path, resume=True)


def test_time_budget_and_epochs(panel, tmp_path, one_thread):
    cfg = TrainConfig(**dict(TINY, k=0, epochs=50, time_budget_min=1e-4))
    s = Trainer(cfg, panel, None, tmp_path / "t").train()
    assert s["stop_reason"] == "time_budget" and s["step"] >= 1 and s["validation"] is not None
    cfg = TrainConfig(**dict(TINY, k=0, max_sites=512, batch_size=32, epochs=2))
    tr = Trainer(cfg, panel, None, tmp_path / "e")
    s = tr.train()
    assert s["stop_reason"] == "epochs" and s["epoch"] == 2 and s["step"] == 2 * tr.steps_per_epoch


def test_bar_measures_what_ends_the_run(panel, tmp_path, monkeypatch):
    """--time-budget: a bar of the budget's seconds (not epochs x steps with an ETA of days);
    --max-steps without a budget: steps; neither: epochs x steps per epoch."""
    from tqdm import tqdm

    from vcfbert_fast import progress

    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)  # as on a terminal: tqdm

    def trainer(name, **kw):
        return Trainer(TrainConfig(**dict(TINY, k=0, progress=True, **kw)), panel, None, tmp_path / name)

    budget = trainer("budget", time_budget_min=3.0, epochs=10_000)
    steps = trainer("steps", max_steps=7, epochs=50)
    epochs = trainer("epochs", epochs=3)
    bars = [tr._make_bar() for tr in (budget, steps, epochs)]
    try:
        assert all(isinstance(b, tqdm) for b in bars)
        assert budget.total_steps == 10_000 * budget.steps_per_epoch  # what the bar used to count
        assert bars[0].total == 180.0 and bars[0].unit == "s" and "0/180 s" in str(bars[0])
        assert bars[1].total == 7 and bars[1].unit == "step"
        assert bars[2].total == 3 * epochs.steps_per_epoch and bars[2].unit == "step"
    finally:
        for b in bars:
            b.close()


def test_training_off_a_terminal_writes_plain_lines(panel, tmp_path, capsys, one_thread):
    """stderr is not a TTY under capsys (as in a log file or CI): no carriage-return redraws."""
    Trainer(
        TrainConfig(**dict(TINY, k=0, progress=True), max_steps=3, epochs=50), panel, None, tmp_path / "s"
    ).train()
    err = capsys.readouterr().err
    assert "\r" not in err and "train: 3/3 step (100%)" in err, err
    cfg = TrainConfig(**dict(TINY, k=0, progress=True, time_budget_min=1e-4, epochs=50))
    Trainer(cfg, panel, None, tmp_path / "t").train()
    err = capsys.readouterr().err
    assert "\r" not in err and "/0.006 s (100%)" in err and "step=" in err, err


def test_cli_end_to_end(small_sim, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    common = [
        sys.executable,
        "-m",
        "vcfbert_fast",
        "train",
        "--ref",
        str(small_sim.ref_vcf),
        "--populations",
        str(small_sim.panel_txt),
        "--out",
        str(out),
        "--dims",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-sites",
        "128",
        "--batch-size",
        "16",
        "--k",
        "2",
        "--val-max-batches",
        "2",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        common + ["--max-steps", "3"], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped (max_steps) at step 3" in r.stderr
    assert read_checkpoint(out / "last.pt")["step"] == 3
    # resume and the "nothing to resume" error in-process (same entry point, no second interpreter start)
    from vcfbert_fast.cli import main

    assert main(common[3:] + ["--resume", "--max-steps", "5"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 5
    nothing = [a if a != str(out) else str(tmp_path / "none") for a in common[3:]] + ["--resume"]
    assert main(nothing) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_store_references_are_the_frozen_refresh_snapshot(panel, tmp_path, one_thread):
    """--reference store: ReferenceEmbeddings without a host store, frozen at the last refresh, bf16."""
    from vcfbert_fast.model import HaplotypeEmbedding, ModelConfig
    from vcfbert_fast.windows import frame_tokens

    cfg = TrainConfig(**dict(TINY, reference="store", engine="hamming"), max_steps=3, epochs=50)
    tr = Trainer(cfg, panel, None, tmp_path)
    tr.train()
    refs = tr.reference_embeddings
    assert refs.mode == "store" and not refs.host_store and refs.nbytes == 0
    frozen = HaplotypeEmbedding(ModelConfig.from_dict(tr.model_config.to_dict())).eval()
    frozen.load_state_dict(tr.refresh_state)
    live = tr.model.bert.embedding
    assert any(not torch.equal(v, frozen.state_dict()[k]) for k, v in live.state_dict().items())  # trained on
    w = 0
    ds = tr.train_ds
    item = ds[w * len(tr.train_samples)]
    pos, af = item["pos"][None], item["af"][None]
    rows = torch.from_numpy(np.random.default_rng(np.random.randint(2**31)).choice(2 * tr.train_samples, size=(2, 2)))
    got = tr.references(w, rows, live, pos, af)
    assert got.dtype == torch.bfloat16 and not got.requires_grad
    tok = torch.from_numpy(frame_tokens(panel.haplotypes[rows.reshape(-1).numpy(), tr.layout.sites(w)]))
    with torch.no_grad():
        want = frozen(tok, pos.expand(4, -1), af.expand(4, -1)).view(2, 2, tok.shape[1], -1)
    torch.testing.assert_close(got.float(), want, rtol=2**-8, atol=1e-4)


def test_live_reference_encoding_equals_full_embedding(panel):
    """The per-site table shortcut (the trainer's ReferenceEmbeddings, checked and unchecked rows)
    gives exactly what running the layer on every retrieved row gives."""
    from vcfbert_fast.model import HaplotypeEmbedding, ModelConfig
    from vcfbert_fast.store import ReferenceEmbeddings
    from vcfbert_fast.windows import frame_features, frame_tokens, make_windows, scaled_positions

    rng = np.random.default_rng(np.random.randint(2**31))
    layout = make_windows(panel.n_sites, int(rng.integers(50, 200)))
    w = int(rng.integers(len(layout)))
    sl = layout.sites(w)
    # float64: the gradients cancel heavily through the LayerNorm, so float32 summation order shows
    layer = HaplotypeEmbedding(ModelConfig(dims=16, n_layers=1, attn_heads=2, dropout=0.0)).double()
    b, k = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    pos = torch.from_numpy(frame_features(scaled_positions(panel.positions[sl])))[None].expand(b, -1).double()
    af = (
        torch.from_numpy(frame_features(rng.random(sl.stop - sl.start).astype(np.float32)))[None]
        .expand(b, -1)
        .double()
    )
    rows = torch.from_numpy(rng.integers(0, panel.n_haplotypes, size=(b, k)))
    refs = ReferenceEmbeddings(panel, layout, mode="live", device="cpu")
    tokens = torch.from_numpy(frame_tokens(panel.haplotypes[rows.reshape(-1).numpy(), sl]))
    want = layer(tokens, pos[:1].expand(b * k, -1), af[:1].expand(b * k, -1)).view(b, k, tokens.shape[1], -1)
    g2 = torch.autograd.grad(want.square().sum(), layer.token.weight, retain_graph=True)[0]
    for check in (True, False):  # host-validated rows, and the trainer's unchecked device path
        got = refs.encode(w, rows, layer, pos, af, check=check)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        # gradients reach the layer through the shortcut as through the full encoding
        g1 = torch.autograd.grad(got.square().sum(), layer.token.weight)[0]
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)
