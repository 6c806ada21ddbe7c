"""The pieces of vcfbert_fast.training on one process: distributed helpers, batches, metrics counters,
and the names the `train` subcommand module keeps exporting."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from vcfbert_fast.metrics import ImputationMetrics
from vcfbert_fast.training.batches import SkipBatches, batch_to_device
from vcfbert_fast.training.distributed import (
    DistContext,
    any_rank,
    join_process_group,
    leave_process_group,
    sum_across_ranks,
)


def test_one_process_needs_no_process_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = join_process_group("cpu")
    assert ctx == DistContext() and ctx.main and not ctx.enabled and not ctx.owns_group
    assert not torch.distributed.is_initialized()
    assert any_rank(True, ctx, torch.device("cpu")) is True
    assert any_rank(False, ctx, torch.device("cpu")) is False
    t = torch.arange(3.0)
    assert sum_across_ranks(t, ctx) is t and t.tolist() == [0.0, 1.0, 2.0]
    leave_process_group(ctx)  # a no-op: nothing was joined


def test_skip_batches_resumes_mid_epoch_and_caps():
    batches = [[i, i + 1] for i in range(0, 20, 2)]  # 10 batches
    s = SkipBatches(batches, skip=3)
    assert len(s) == 7 and list(s) == batches[3:]
    capped = SkipBatches(batches, skip=1, limit=4)
    assert len(capped) == 3 and list(capped) == batches[1:4]
    assert len(SkipBatches(batches, skip=12)) == 0 and list(SkipBatches(batches, skip=12)) == []


def test_batch_to_device_keeps_window_idx_on_the_host():
    batch = {"hap_1": torch.zeros(2, 3, dtype=torch.long), "window_idx": torch.tensor([4, 4]), "name": "x"}
    out = batch_to_device(batch, torch.device("cpu"))
    assert out["window_idx"] is batch["window_idx"] and out["name"] == "x"
    assert torch.equal(out["hap_1"], batch["hap_1"])


def test_metrics_counter_size_has_one_source():
    m = ImputationMetrics()
    zeros = m.totals("cpu")  # a rank that scored nothing joins the all-reduce with this
    assert zeros.shape == (ImputationMetrics.N_SLOTS,) and zeros.dtype == torch.float64
    assert not zeros.any() and m.totals("cpu") is zeros
    b, length = 2, 5
    batch = {
        "mask": torch.ones(b, length, dtype=torch.bool),
        "af": torch.full((b, length), 0.2),
        "hap_1_label": torch.zeros(b, length, dtype=torch.long),
        "hap_2_label": torch.ones(b, length, dtype=torch.long),
        "gt_label": torch.ones(b, length, dtype=torch.long),
    }
    logits = {
        "hap1_logits": torch.tensor([1.0, 0.0]).expand(b, length, 2),
        "hap2_logits": torch.tensor([0.0, 1.0]).expand(b, length, 2),
        "gt_logits": torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(b, length, 4),
    }
    fresh = ImputationMetrics()
    fresh.update(logits, batch)
    assert fresh.counts.shape == (ImputationMetrics.N_SLOTS,)
    r = fresh.compute()
    assert r["accuracy"] == 1.0 and r["gt_accuracy"] == 1.0 and r["n_sites"] == 2 * b * length


def test_train_module_keeps_its_exports():
    from vcfbert_fast import train, training
    from vcfbert_fast.training import config

    assert train.Trainer is training.Trainer and train.TrainConfig is config.TrainConfig
    assert train.lr_factor is config.lr_factor and train.mask_schedules is config.mask_schedules
    assert callable(train.add_arguments) and callable(train.run) and callable(train.config_from_args)


def test_frozen_on_resume_names_real_fields():
    from vcfbert_fast.training.config import FROZEN_ON_RESUME, TrainConfig

    names = set(TrainConfig().to_dict())
    assert FROZEN_ON_RESUME and set(FROZEN_ON_RESUME) <= names, set(FROZEN_ON_RESUME) - names


def test_training_doc_names_real_modules_and_names():
    """docs/TRAINING.md "Where the code is": every module it lists imports and holds the names it gives."""
    import importlib
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "TRAINING.md").read_text()
    section = doc.split("## Where the code is", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)\.py` \| .*? \| (.*) \|$", section, re.MULTILINE)
    assert {m for m, _ in rows} == {"config", "distributed", "batches", "step", "trainer"}
    for module_name, names in rows:
        module = importlib.import_module(f"vcfbert_fast.training.{module_name}")
        owner = None
        for item in re.findall(r"`([^`]+)`", names):
            name = re.match(r"\.?(\w+)", item).group(1)
            if item.startswith("."):  # a method of the last class named
                assert hasattr(owner, name), f"{module_name}: {owner.__name__}.{name}"
            else:
                assert hasattr(module, name), f"{module_name}.{name}"
                owner = getattr(module, name)
    for step in re.findall(r"`(_\w+)`", section):  # the loop's named steps
        assert hasattr(importlib.import_module("vcfbert_fast.training.trainer").Trainer, step), step


def test_metrics_r2_by_maf_bin_matches_numpy(rng):
    """Pooled dosage r^2 per MAF bin equals numpy's corrcoef over the same masked genotypes,
    accumulated over two batches (the moment sums are additive, as ranks need)."""
    from vcfbert_fast.metrics import MAF_BINS, bin_label

    m = ImputationMetrics()
    xs, ys, mafs = [], [], []
    for _ in range(2):
        b, length = 7, 40
        af = torch.from_numpy(rng.uniform(0.0, 1.0, (b, length))).float()
        l1 = torch.from_numpy(rng.integers(0, 2, (b, length)))
        l2 = torch.from_numpy(rng.integers(0, 2, (b, length)))
        l2[0, :3] = -100  # padding: not scored
        mask = torch.from_numpy(rng.random((b, length)) < 0.7)
        logits = {
            "hap1_logits": torch.from_numpy(rng.normal(size=(b, length, 2))).float(),
            "hap2_logits": torch.from_numpy(rng.normal(size=(b, length, 2))).float(),
            "gt_logits": torch.zeros(b, length, 4),
        }
        batch = {"mask": mask, "af": af, "hap_1_label": l1, "hap_2_label": l2, "gt_label": l1 * 2 + l2.clamp_min(0)}
        m.update(logits, batch)
        p = [torch.softmax(logits[k].double(), -1)[..., 1].numpy() for k in ("hap1_logits", "hap2_logits")]
        keep = (mask & (l1 >= 0) & (l2 >= 0)).numpy()
        xs.append((p[0] + p[1])[keep])
        ys.append((l1 + l2).numpy()[keep].astype(float))
        a = af.double().numpy()[keep]
        mafs.append(np.minimum(a, 1.0 - a))
    x, y, maf = np.concatenate(xs), np.concatenate(ys), np.concatenate(mafs)
    r = m.compute()
    got = []
    for lo, hi in itertools.pairwise(MAF_BINS):
        sel = (maf >= lo) & ((maf <= hi) if hi == MAF_BINS[-1] else (maf < hi))
        want = np.corrcoef(x[sel], y[sel])[0, 1] ** 2 if sel.sum() > 1 else float("nan")
        key = f"r2 {bin_label(lo, hi)}"
        assert (np.isnan(want) and np.isnan(r[key])) or abs(r[key] - want) < 1e-9, key
        if not np.isnan(want):
            got.append(want)
    assert abs(r["r2"] - np.mean(got)) < 1e-9
