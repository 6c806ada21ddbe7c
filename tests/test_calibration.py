"""Calibration of the haplotype ALT probabilities: the fit recovers known parameters, the checkpoint
keeps it (bounds-checked; an older checkpoint without it is the identity), ``calibrate`` applies it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcfbert_fast.calibration import (
    LOGIT_MAX,
    MAF_EDGES,
    LogitHistogram,
    calibrate,
    check_calibration,
    fit_calibration,
    fit_platt,
)
from vcfbert_fast.checkpoint import read_checkpoint, save_checkpoint
from vcfbert_fast.errors import CheckpointError
from vcfbert_fast.vocab import VOCAB


@pytest.fixture()
def rng():
    return np.random.default_rng(np.random.randint(2**31))


def _batch(z: np.ndarray, label: np.ndarray, af: np.ndarray) -> tuple[dict, dict]:
    """A fake validation batch: one 'window' row of n masked sites, hap 2 masked out entirely."""
    n = z.size
    logits = torch.zeros(1, n, 2, dtype=torch.float64)
    logits[0, :, 1] = torch.from_numpy(z)  # ALT logit - REF logit = z
    batch = {
        "mask": torch.ones(1, n, dtype=torch.bool),
        "af": torch.from_numpy(af.astype(np.float32))[None],
        "hap_1_label": torch.from_numpy(label.astype(np.int64))[None],
        "hap_2_label": torch.full((1, n), -100, dtype=torch.int64),  # not labelled: not counted
    }
    return {"hap1_logits": logits, "hap2_logits": torch.zeros(1, n, 2)}, batch


def _draw(rng, n, temperature, bias, scale=4.0):
    z = rng.normal(0.0, scale, size=n)
    p = 1.0 / (1.0 + np.exp(-(z / temperature + bias)))
    return z, (rng.random(n) < p).astype(np.int64)


def _grid_fit(z, y, bias=True):
    """Maximum likelihood (T, b) on the raw (unbinned) alleles by a coarse-to-fine grid search."""
    a0, b0, da, db = 1.0, 0.0, 2.0, 4.0 if bias else 0.0
    for _ in range(6):
        a = np.linspace(max(a0 - da, 0.01), a0 + da, 21)[:, None, None]
        b = np.linspace(b0 - db, b0 + db, 21)[None, :, None]
        u = a * z[None, None, :] + b
        nll = (y * np.logaddexp(0, -u) + (1 - y) * np.logaddexp(0, u)).sum(-1)
        i, j = np.unravel_index(np.argmin(nll), nll.shape)
        a0, b0, da, db = float(a[i, 0, 0]), float(b[0, j, 0]), da / 5, db / 5
    return 1.0 / a0, b0


def test_fit_recovers_known_temperature_per_class(rng):
    # class 4 ([0.05, 0.2)): T 2.5; class 5 ([0.2, 0.5]): T 0.5
    # T 2.5 flattens the logits, so its maximum-likelihood estimate spreads widely: 80k draws
    # keep it within 8 % of the truth (at 20k one seed in ~20 fell 6 % off)
    z1, y1 = _draw(rng, 80_000, 2.5, 0.0)
    z2, y2 = _draw(rng, 20_000, 0.5, 0.0, scale=2.0)
    z, y = np.concatenate([z1, z2]), np.concatenate([y1, y2])
    af = np.concatenate([np.full(z1.size, 0.9), np.full(z2.size, 0.3)])  # MAF 0.1 (ALT the major) and 0.3
    hist = LogitHistogram()
    hist.update(*_batch(z, y, af))
    calib = hist.fit()
    check_calibration("x.pt", calib)
    c4, c5 = calib["classes"][4], calib["classes"][5]
    assert (c4["n_ref"] + c4["n_alt"], c5["n_ref"] + c5["n_alt"]) == (z1.size, z2.size)
    assert c4["n_alt"] == int(y1.sum()) and not c4["pooled"] and not c5["pooled"]
    assert c4["temperature"] == pytest.approx(_grid_fit(z1, y1, bias=False)[0], rel=0.01)
    assert c5["temperature"] == pytest.approx(_grid_fit(z2, y2, bias=False)[0], rel=0.01)
    assert c4["temperature"] == pytest.approx(2.5, rel=0.08) and c5["temperature"] == pytest.approx(
        0.5, rel=0.05
    )
    assert c4["bias"] == 0.0 and c5["bias"] == 0.0  # temperature only (FIT_BIAS)
    # classes without data take the pooled fit, marked so
    assert calib["classes"][0]["pooled"] and calib["classes"][0]["n_ref"] == 0


def test_platt_fit_recovers_known_temperature_and_bias(rng):
    z, y = _draw(rng, 20_000, 1.8, -0.6)
    centres, counts = _hist_of(z, y)
    fit = fit_platt(centres, counts[5, 0], counts[5, 1], fit_bias=True)
    t, b = _grid_fit(z, y)
    assert fit["temperature"] == pytest.approx(t, rel=0.01) and fit["bias"] == pytest.approx(b, abs=0.01)
    assert fit["temperature"] == pytest.approx(1.8, rel=0.05) and fit["bias"] == pytest.approx(-0.6, abs=0.06)


def test_calibrated_model_already_calibrated_is_left_near_identity(rng):
    z, y = _draw(rng, 100_000, 1.0, 0.0)
    calib = fit_calibration(*_hist_of(z, y))
    pooled = calib["classes"][0]
    assert pooled["temperature"] == pytest.approx(1.0, abs=0.03) and abs(pooled["bias"]) < 0.03


def _hist_of(z, y):
    hist = LogitHistogram()
    hist.update(*_batch(z, y, np.full(z.size, 0.3)))
    return hist.centres(), hist.counts.numpy()


def test_calibrate_applies_each_class_and_identity_is_untouched(rng):
    calib = {
        "version": 1,
        "maf_edges": [0.0, 0.01, 0.5],
        "classes": [{"temperature": 2.0, "bias": -1.0}, {"temperature": 0.5, "bias": 0.25}],
    }
    m, s = 7, 5
    hds = rng.uniform(0.0, 1.0, size=(m, s, 2)).astype(np.float32)
    hds[0, 0, 0], hds[1, 0, 1] = 0.0, 1.0  # saturated probabilities are clipped to +-LOGIT_MAX
    af = np.array([0.001, 0.995, 0.3, 0.7, 0.5, 0.0, 0.02])  # MAF classes 0, 0, 1, 1, 1, 0, 1
    out = calibrate(hds, af, calib)
    cls = [0, 0, 1, 1, 1, 0, 1]
    eps = 1 / (1 + math.exp(LOGIT_MAX))
    for i in range(m):
        t, b = (calib["classes"][cls[i]][k] for k in ("temperature", "bias"))
        p = np.clip(hds[i].astype(np.float64), eps, 1 - eps)
        want = 1 / (1 + np.exp(-(np.log(p / (1 - p)) / t + b)))
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-7)
    assert out.dtype == np.float32 and not np.shares_memory(out, hds)
    identity = {**calib, "classes": [{"temperature": 1.0, "bias": 0.0}] * 2}
    assert calibrate(hds, af, identity) is hds and calibrate(hds, af, None) is hds
    # chunking does not change the result
    np.testing.assert_array_equal(calibrate(hds, af, calib, chunk=3), out)
    # in place (impute's way: no second [M, S, 2] array)
    inplace = hds.copy()
    assert calibrate(inplace, af, calib, chunk=3, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, out)


def _plain_state(**extra) -> dict:
    return {"model_state": {}, "model_config": {}, "vocab": dict(VOCAB), **extra}


def test_checkpoint_round_trip_and_old_checkpoint_is_identity(tmp_path, rng):
    z, y = _draw(rng, 20_000, 1.7, -0.3)
    calib = fit_calibration(*_hist_of(z, y))
    save_checkpoint(tmp_path / "new.pt", _plain_state(calibration=calib))
    assert read_checkpoint(tmp_path / "new.pt")["calibration"] == calib
    save_checkpoint(tmp_path / "old.pt", _plain_state())
    old = read_checkpoint(tmp_path / "old.pt")
    assert "calibration" not in old
    hds = rng.uniform(size=(4, 3, 2)).astype(np.float32)
    assert calibrate(hds, np.full(4, 0.3), old.get("calibration")) is hds


GOOD = {"version": 1, "maf_edges": list(MAF_EDGES), "classes": [{"temperature": 1.2, "bias": 0.1}] * 6}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"classes": [{"temperature": float("nan"), "bias": 0.0}] * 6}, "temperature=nan"),
        ({"classes": [{"temperature": 1e9, "bias": 0.0}] * 6}, "temperature=1000000000.0"),
        ({"classes": [{"temperature": -1.0, "bias": 0.0}] * 6}, "temperature=-1.0"),
        ({"classes": [{"temperature": True, "bias": 0.0}] * 6}, "temperature=True"),
        ({"classes": [{"temperature": "1", "bias": 0.0}] * 6}, "temperature='1'"),
        ({"classes": [{"temperature": 1.0, "bias": 1e6}] * 6}, "bias=1000000.0"),
        ({"classes": [{"temperature": 1.0}] * 6}, "bias=None"),
        ({"classes": [{"temperature": 1.0, "bias": 0.0}] * 5}, "5 classes for 6"),
        ({"maf_edges": [0.0, 0.3, 0.2, 0.5]}, "must rise from 0 to 0.5"),
        ({"maf_edges": [0.0, 0.2, 0.7]}, "must rise from 0 to 0.5"),
        ({"maf_edges": [i / 400 for i in range(201)]}, "list of 2 to 65"),
        ({"version": 99}, "version 99"),
        ({"classes": "all"}, "'classes' list"),
    ],
)
def test_hostile_calibration_entry_is_refused_on_load(tmp_path, change, words):
    save_checkpoint(tmp_path / "bad.pt", _plain_state(calibration={**GOOD, **change}))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "calibration" in msg and words in msg and "\n" not in msg
    save_checkpoint(tmp_path / "good.pt", _plain_state(calibration=GOOD))
    read_checkpoint(tmp_path / "good.pt")  # the unchanged entry loads
