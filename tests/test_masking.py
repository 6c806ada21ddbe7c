"""AF-guided curriculum masks: determinism across processes, rates, degenerate-mask repair."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vcfbert_fast.errors import InputError
from vcfbert_fast.masking import MaskSchedule, array_keep_weights, array_mask, curriculum_rate, window_mask

rng = np.random.default_rng()  # reseeded from the test seed by _reseed


@pytest.fixture(autouse=True)
def _reseed(seed):
    """The module's generator draws from this test's printed seed (root conftest), so failures replay."""
    global rng
    rng = np.random.default_rng(seed)


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


# ------------------------------------------------------------ imputation-matched modes


def test_fixed_random_rates_on_large_window():
    """mode="random": common sites at `rate` in every epoch (no curriculum), rare at max(0.7, rate)."""
    n = 40_000
    af = np.where(np.arange(n) % 2 == 0, 0.01, 0.3)  # half rare, half common
    seed = int(rng.integers(0, 10_000))
    for rate in (float(rng.uniform(0.85, 0.97)), float(rng.uniform(0.2, 0.6))):
        sched = MaskSchedule.fixed(rate, "random", seed=seed)
        for epoch in (0, int(rng.integers(5, 50))):
            m = sched.mask(epoch, 3, af)
            for frac, p in ((m[1::2].mean(), rate), (m[0::2].mean(), max(0.7, rate))):
                sd = np.sqrt(p * (1 - p) / (n // 2))
                assert abs(frac - p) < 5 * sd
            # exactly the DESIGN draw with the fixed probabilities
            u = np.random.default_rng([seed, epoch, 3]).random(n)
            assert np.array_equal(m, u < np.where(af < 0.05, max(0.7, rate), rate))


def test_array_mask_exact_count_determinism_and_bounds():
    for _ in range(20):
        n = int(rng.integers(2, 600))
        af = rng.random(n) * rng.choice([0.02, 0.5, 1.0])
        rate = float(rng.uniform(0.01, 0.99))
        seed, epoch, w = (int(x) for x in rng.integers(0, 1000, size=3))
        m = array_mask(af, rate, epoch, w, seed)
        keep = min(max(round((1 - rate) * n), 1), n - 1)
        assert m.dtype == bool and m.shape == (n,)
        assert int((~m).sum()) == keep
        assert np.array_equal(m, array_mask(af.copy(), rate, epoch, w, seed))
        sched = MaskSchedule.fixed(rate, "array", seed=seed)
        assert np.array_equal(sched.mask(epoch, w, af), m)
    assert array_mask(np.array([0.3]), 0.5, 0, 0, 0).tolist() == [True]
    assert array_mask(np.zeros(0), 0.5, 0, 0, 0).shape == (0,)
    n = 500
    af = rng.random(n) * 0.5
    masks = {array_mask(af, 0.9, e, 0, 1).tobytes() for e in range(5)}
    assert len(masks) == 5  # a new mask every epoch


def test_array_mask_favours_common_sites_like_the_simulator():
    # Kept (typed) sites are drawn with weight sqrt(MAF), x0.02 below MAF 1%: with half the window at
    # MAF 0.005 (weight 0.0014) and half at 0.3 (0.548), a 10% keep is ~99.7% common.
    n = 4000
    af = np.where(np.arange(n) % 2 == 0, 0.005, 0.7)  # ALT-coded: 0.7 -> MAF 0.3
    w = array_keep_weights(af)
    assert np.allclose(w[0::2], np.sqrt(0.005) * 0.02) and np.allclose(w[1::2], np.sqrt(0.3))
    seed = int(rng.integers(0, 10_000))
    m = array_mask(af, 0.9, 0, 0, seed)
    kept_rare = int((~m[0::2]).sum())
    assert (~m).sum() == 400
    # expected rare picks ~ 400 * 0.00129 = 0.5; P(>= 6) is negligible
    assert kept_rare <= 5
    # monomorphic sites (weight 0) are kept only when the polymorphic ones run out
    af2 = np.zeros(100)
    af2[:5] = 0.2
    m2 = array_mask(af2, 0.9, 0, 0, seed)
    assert (~m2).sum() == 10 and not m2[:5].any()
    m3 = array_mask(np.zeros(50), 0.9, 0, 0, seed)  # all weights 0: uniform fill
    assert (~m3).sum() == 5


def test_fixed_modes_validate_and_round_trip():
    with pytest.raises(InputError):
        MaskSchedule(mode="bogus")
    with pytest.raises(InputError):
        MaskSchedule.fixed(1.0, "random")
    with pytest.raises(InputError):
        MaskSchedule(mode="array")  # needs a rate
    with pytest.raises(InputError):
        array_mask(rng.random(10), 0.0, 0, 0, 0)
    af = rng.random(300)
    for mode in ("random", "array"):
        s = MaskSchedule.fixed(float(rng.uniform(0.5, 0.95)), mode, seed=int(rng.integers(0, 100)))
        back = MaskSchedule.from_dict(s.to_dict())
        assert back.to_dict() == s.to_dict() and back.mode == mode
        assert np.array_equal(back.mask(2, 5, af), s.mask(2, 5, af))
    # old checkpoints (no mode/rate keys) load as the curriculum
    old = {k: v for k, v in MaskSchedule(seed=3).to_dict().items() if k not in ("mode", "rate")}
    assert MaskSchedule.from_dict(old).mode == "curriculum"


def test_design_default_unchanged():
    """Option off: the schedule is DESIGN's curriculum, mask for mask."""
    sched = MaskSchedule(seed=int(rng.integers(0, 1000)))
    assert sched.mode == "curriculum"
    af = rng.random(257) * 0.3
    for epoch in range(12):
        assert sched.common_rate(epoch) == curriculum_rate(epoch)
        assert np.array_equal(sched.mask(epoch, 4, af), window_mask(af, epoch, 4, sched.seed))


def test_train_mask_schedules_follow_config():
    from vcfbert_fast.train import TrainConfig, mask_schedules

    af = rng.random(400) * 0.5
    # the default engine (pbwt): chromosome-wide array-like masks, 1 in 15 sites typed, validation too
    tr, va = mask_schedules(TrainConfig(seed=5))
    assert (tr.mode, va.mode) == ("chromosome", "chromosome") and abs(tr.rate - (1 - 1 / 15)) < 1e-12
    assert va.seed != tr.seed
    with pytest.raises(InputError, match="chromosome"):
        TrainConfig(mask_rate=0.9, mask_mode="array")  # pbwt matches over chromosome-wide markers
    tr, va = mask_schedules(TrainConfig(seed=5, engine="hamming"))
    assert tr.mode == "curriculum" and tr.seed == 5
    # default validation mask: the pre-option fixed 0.5 common / 0.7 rare draw
    assert np.array_equal(va.mask(0, 2, af), window_mask(af, 0, 2, 5 + 1_000_003, rate=0.5))
    tr, va = mask_schedules(TrainConfig(seed=5, mask_rate=0.93, mask_mode="array", engine="hamming"))
    assert (tr.mode, tr.rate, va.mode, va.rate) == ("array", 0.93, "array", 0.93)
    assert va.seed != tr.seed
    tr, va = mask_schedules(
        TrainConfig(mask_rate=0.9, mask_mode="random", val_mask_rate=0.8, val_mask_mode="random", engine="hamming")
    )
    assert (tr.mode, tr.rate, va.mode, va.rate) == ("random", 0.9, "random", 0.8)
    tr, va = mask_schedules(TrainConfig(val_mask_rate=0.93, val_mask_mode="array", engine="hamming"))
    assert (tr.mode, va.mode, va.rate) == ("curriculum", "array", 0.93)
    for bad in ({"mask_rate": 1.0}, {"mask_rate": 0.0}, {"mask_mode": "x"}, {"val_mask_mode": "y"}):
        with pytest.raises(InputError):
            TrainConfig(**bad)


def test_train_cli_mask_flags():
    from vcfbert_fast.cli import build_parser
    from vcfbert_fast.train import config_from_args

    base = ["train", "--ref", "r.vcf.gz", "--out", "o"]
    cfg = config_from_args(build_parser("train").parse_args(base))  # pbwt: chromosome, 1 - 1/15
    assert (cfg.engine, cfg.mask_mode, cfg.val_mask_rate, cfg.val_mask_mode) == ("pbwt", "chromosome", None, None)
    assert abs(cfg.mask_rate - (1 - 1 / 15)) < 1e-12 and cfg.k == 32
    cfg = config_from_args(build_parser("train").parse_args(base + ["--engine", "hamming"]))
    assert (cfg.mask_rate, cfg.mask_mode, cfg.k) == (None, "random", 4)  # hamming's own defaults
    flags = [
        "--engine",
        "hamming",
        "--mask-rate",
        "0.93",
        "--mask-mode",
        "array",
        "--val-mask-rate",
        "0.9",
        "--val-mask-mode",
        "random",
    ]
    cfg = config_from_args(build_parser("train").parse_args(base + flags))
    assert (cfg.mask_rate, cfg.mask_mode, cfg.val_mask_rate, cfg.val_mask_mode) == (
        0.93,
        "array",
        0.9,
        "random",
    )


def test_chromosome_mask_is_one_array_draw_over_every_site():
    from vcfbert_fast.masking import MaskSchedule, array_mask

    af = rng.random(3000) * 0.5
    sched = MaskSchedule.fixed(0.9, "chromosome", seed=3)
    m = sched.chromosome_mask(2, af)
    assert np.array_equal(m, array_mask(af, 0.9, 2, 0, 3))  # independently: the array draw, window 0
    assert (~m).sum() == round(0.1 * af.size)
    assert not np.array_equal(m, sched.chromosome_mask(3, af))  # reseeded per epoch
    assert sched.chromosome_mask(2, af) is m  # cached, read-only
    assert not m.flags.writeable
    with pytest.raises(InputError, match="per chromosome"):
        sched.mask(0, 0, af[:100])
