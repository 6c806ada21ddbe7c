"""AF-guided curriculum masks: determinism across processes, rates, degenerate-mask repair."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vcfbert_fast.errors import InputError
from vcfbert_fast.masking import MaskSchedule, curriculum_rate, window_mask

rng = np.random.default_rng()


def test_curriculum_rate_levels():
    expected = [0.3, 0.3, 0.4, 0.4, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.8, 0.8]
    assert [curriculum_rate(e) for e in range(len(expected))] == expected
    assert curriculum_rate(100) == 0.8
    assert curriculum_rate(3, start=0.1, step=0.2, every=1, max_rate=0.9) == 0.7
    with pytest.raises(InputError):
        curriculum_rate(-1)


def test_mask_matches_independent_draw():
    n = int(rng.integers(50, 500))
    af = rng.random(n) * 0.2
    seed, epoch, w = (int(x) for x in rng.integers(0, 1000, size=3))
    m = window_mask(af, epoch, w, seed)
    u = np.random.default_rng([seed, epoch, w]).random(n)
    exp = u < np.where(af < 0.05, 0.7, curriculum_rate(epoch))
    if exp.any() and not exp.all():
        assert np.array_equal(m, exp)
    assert m.dtype == bool and m.shape == (n,)


def test_mask_deterministic_in_another_process():
    n = 300
    af = rng.random(n)
    seed = int(rng.integers(0, 2**31))
    keys = [(e, w) for e in range(3) for w in range(3)]
    code = (
        "import json,sys,numpy as np\n"
        "from vcfbert_fast.masking import window_mask\n"
        "d=json.load(sys.stdin); af=np.array(d['af'])\n"
        "print(json.dumps([window_mask(af,e,w,d['seed']).tolist() for e,w in d['keys']]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps({"af": af.tolist(), "seed": seed, "keys": keys}),
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(res.stdout)
    for (e, w), t in zip(keys, theirs):
        assert window_mask(af, e, w, seed).tolist() == t
    # And the masks differ between epochs and between windows.
    assert theirs[0] != theirs[3] and theirs[0] != theirs[1]


def test_rates_statistics():
    n = 200_000
    rare = rng.random(n) < 0.3
    af = np.where(rare, rng.random(n) * 0.0499, 0.05 + rng.random(n) * 0.95)
    for epoch in (0, 2, 5, 11):
        m = window_mask(af, epoch, int(rng.integers(0, 100)), int(rng.integers(0, 10**6)))
        rate = curriculum_rate(epoch)
        # Binomial standard error at n ~ 6e4..1.4e5 is < 0.002; 0.01 is > 5 sigma.
        assert abs(m[rare].mean() - 0.7) < 0.01
        assert abs(m[~rare].mean() - rate) < 0.01


def test_af_threshold_is_strict():
    # AF exactly 0.05 is common: with rate 0 it is never masked, whereas AF just below is rare.
    n = 20_000
    af = np.where(np.arange(n) % 2 == 0, 0.05, 0.0499)
    m = window_mask(af, 0, 0, 1, rate=0.0)
    common = af == 0.05
    assert m[common].sum() == 0
    assert abs(m[~common].mean() - 0.7) < 0.03


def test_changes_with_epoch_window_seed():
    af = rng.random(1000)
    base = window_mask(af, 4, 7, 3)
    assert not np.array_equal(base, window_mask(af, 5, 7, 3))
    assert not np.array_equal(base, window_mask(af, 4, 8, 3))
    assert not np.array_equal(base, window_mask(af, 4, 7, 4))
    assert np.array_equal(base, window_mask(af.copy(), 4, 7, 3))


def test_degenerate_masks_repaired():
    # Rate 0, no rare sites: nothing would be masked -> exactly one site masked.
    for _ in range(20):
        n = int(rng.integers(1, 30))
        af = 0.1 + 0.9 * rng.random(n)
        seed = int(rng.integers(0, 10**6))
        m = window_mask(af, 0, 0, seed, rate=0.0)
        assert m.sum() == 1
        u = np.random.default_rng([seed, 0, 0]).random(n)
        assert m[np.argmin(u)]
        # Rate 1: everything would be masked -> all but one site (one site if n == 1).
        m = window_mask(af, 0, 0, seed, rate=1.0)
        assert m.sum() == max(n - 1, 1)
        if n > 1:
            assert not m[np.argmax(u)]
    assert window_mask(np.zeros(0), 0, 0, 0).shape == (0,)


def test_mask_schedule_cache_and_dict():
    sched = MaskSchedule(seed=int(rng.integers(0, 1000)), cache_size=2)
    af1, af2 = rng.random(100), rng.random(100)
    m = sched.mask(3, 1, af1)
    assert np.array_equal(m, window_mask(af1, 3, 1, sched.seed))
    assert sched.mask(3, 1, af1) is m  # cached
    assert not m.flags.writeable
    # Same (epoch, window) but other AF: not served from the cache.
    assert np.array_equal(sched.mask(3, 1, af2), window_mask(af2, 3, 1, sched.seed))
    sched.mask(0, 0, af1)
    assert len(sched._cache) == 2
    back = MaskSchedule.from_dict(sched.to_dict())
    assert back.to_dict() == sched.to_dict()
    assert np.array_equal(back.mask(3, 1, af1), m)
    other = MaskSchedule(seed=1, start=0.5, every=1, rare_p=0.9)
    assert np.array_equal(
        other.mask(2, 0, af1), window_mask(af1, 2, 0, 1, rare_p=0.9, rate=curriculum_rate(2, 0.5, every=1))
    )
