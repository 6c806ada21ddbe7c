"""Checkpoints: atomic round trip, weights_only loading, and a clear refusal for every mismatch."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch

from vcfbert_fast.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    model_state_dict,
    panel_fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from vcfbert_fast.errors import CheckpointError
from vcfbert_fast.io import Panel
from vcfbert_fast.vocab import VOCAB


@dataclass
class _Cfg:
    dims: int = 8
    n_layers: int = 2

    def to_dict(self):
        return asdict(self)


class _Net(torch.nn.Module):
    def __init__(self, dims=8, n_layers=2):
        super().__init__()
        self.config = _Cfg(dims, n_layers)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(dims, dims) for _ in range(n_layers))


class _NotPlain:
    pass


def _panel(rng, n=50, contig="chr1"):
    pos = np.sort(rng.choice(10**6, size=n, replace=False)).astype(np.int64) + 1
    ref = np.array([rng.choice(list("ACGT")) for _ in range(n)], dtype=object)
    alt = np.array(["T" if r != "T" else "A" for r in ref], dtype=object)
    return Panel(
        path="p.vcf",
        contig=contig,
        positions=pos,
        ref=ref,
        alt=alt,
        ids=np.array(["."] * n, dtype=object),
        samples=["a", "b"],
        haplotypes=rng.integers(0, 2, size=(4, n), dtype=np.uint8),
    )


def _state(net, panel, opt=None):
    return {
        "model_state": model_state_dict(net),
        "model_config": net.config.to_dict(),
        "vocab": dict(VOCAB),
        "panel_fingerprint": panel_fingerprint(panel),
        "window_layout": {"starts": [0], "ends": [panel.n_sites], "max_sites": 1028, "overlap": 0},
        "optimizer_state": opt.state_dict() if opt is not None else None,
        "epoch": 3,
        "step": 17,
        "best_metric": 0.75,
        "rng": capture_rng_state(),
        "train_config": {"lr": 1e-3, "engine": "hamming"},
    }


def test_round_trip_weights_only(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    torch.manual_seed(int(rng.integers(1 << 30)))
    net, panel = _Net(), _panel(rng)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss = sum(layer(torch.randn(3, 8)).square().sum() for layer in net.layers)
    loss.backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ck.pt", _state(net, panel, opt))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], "temp file left behind"

    raw = torch.load(path, weights_only=True)  # plain torch, safe loader: must work
    assert raw["step"] == 17 and raw["epoch"] == 3 and raw["format"] == "vcfbert-fast-checkpoint"

    other = _Net()
    assert not torch.equal(other.layers[0].weight, net.layers[0].weight)
    state = load_checkpoint(path, model=other, panel=panel)
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer_state"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(random.randrange(1 << 30))
    np.random.seed(random.randrange(1 << 30))
    saved = capture_rng_state()
    path = save_checkpoint(
        tmp_path / "rng.pt", {"model_state": {}, "model_config": {}, "vocab": dict(VOCAB), "rng": saved}
    )
    expect = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1])
    assert expect[2] == got[2]


def test_save_refuses_non_plain_objects(tmp_path):
    with pytest.raises(TypeError, match="plain Python types"):
        save_checkpoint(tmp_path / "x.pt", {"model_state": {}, "obj": _NotPlain()})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", {"arr": np.zeros(3)})
    assert not os.path.exists(tmp_path / "x.pt")


def test_pickled_object_refused(tmp_path):
    net, panel = _Net(), _panel(np.random.default_rng(np.random.randint(2**31)))
    state = _state(net, panel)
    state["format"] = "vcfbert-fast-checkpoint"
    state["evil"] = _NotPlain()
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "evil.pt", model=net)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a vcfbert-fast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.pt")


def test_config_mismatch_names_keys(tmp_path):
    net, panel = _Net(dims=8, n_layers=2), _panel(np.random.default_rng(np.random.randint(2**31)))
    save_checkpoint(tmp_path / "ck.pt", _state(net, panel))
    with pytest.raises(CheckpointError, match=r"model config mismatch.*n_layers=2 vs 3") as ei:
        load_checkpoint(tmp_path / "ck.pt", model=_Net(dims=8, n_layers=3))
    assert "dims" not in str(ei.value)


def test_missing_and_unexpected_weights(tmp_path):
    net, panel = _Net(), _panel(np.random.default_rng(np.random.randint(2**31)))
    state = _state(net, panel)
    state["model_state"]["extra.weight"] = torch.zeros(1)
    del state["model_state"]["layers.1.bias"]
    save_checkpoint(tmp_path / "ck.pt", state)
    target = _Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"missing 1 weight\(s\): layers.1.bias.*unexpected 1 weight\(s\): extra"
    ):
        load_checkpoint(tmp_path / "ck.pt", model=target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()), "partially loaded"
    # strict=False loads what matches, but never "nothing"
    load_checkpoint(tmp_path / "ck.pt", model=target, strict=False)
    assert torch.equal(target.layers[0].weight, net.layers[0].weight)
    state["model_state"] = {"unrelated.weight": torch.zeros(1)}
    save_checkpoint(tmp_path / "none.pt", state)
    with pytest.raises(CheckpointError, match="would load nothing"):
        load_checkpoint(tmp_path / "none.pt", model=_Net(), strict=False)


def test_shape_mismatch(tmp_path):
    net, panel = _Net(), _panel(np.random.default_rng(np.random.randint(2**31)))
    state = _state(net, panel)
    state["model_state"]["layers.0.weight"] = torch.zeros(4, 8)
    save_checkpoint(tmp_path / "ck.pt", state)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*layers.0.weight"):
        load_checkpoint(tmp_path / "ck.pt", model=_Net())


def test_vocab_mismatch(tmp_path):
    net, panel = _Net(), _panel(np.random.default_rng(np.random.randint(2**31)))
    state = _state(net, panel)
    state["vocab"] = {**VOCAB, "MASK": 9}
    save_checkpoint(tmp_path / "ck.pt", state)
    with pytest.raises(CheckpointError, match=r"vocabulary differs.*MASK"):
        load_checkpoint(tmp_path / "ck.pt", model=net)


def test_panel_layout_mismatch(tmp_path):
    rng = np.random.default_rng(np.random.randint(2**31))
    net, panel = _Net(), _panel(rng)
    save_checkpoint(tmp_path / "ck.pt", _state(net, panel))
    load_checkpoint(tmp_path / "ck.pt", model=net, panel=panel)  # same panel: fine
    # same sites, different samples: still the same layout
    same_sites = Panel(**{**panel.__dict__, "samples": ["x"], "haplotypes": panel.haplotypes[:2]})
    load_checkpoint(tmp_path / "ck.pt", panel=same_sites)
    # one allele changed: different layout even though count and ends agree
    alt = panel.alt.copy()
    alt[len(alt) // 2] = "G" if alt[len(alt) // 2] != "G" else "C"
    changed = Panel(**{**panel.__dict__, "alt": alt})
    with pytest.raises(CheckpointError, match="trained on a different panel layout.*sites_sha256"):
        load_checkpoint(tmp_path / "ck.pt", model=net, panel=changed)
    with pytest.raises(CheckpointError, match="different panel layout.*contig"):
        load_checkpoint(tmp_path / "ck.pt", panel=Panel(**{**panel.__dict__, "contig": "chr2"}))


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    net, panel = _Net(), _panel(np.random.default_rng(np.random.randint(2**31)))
    path = save_checkpoint(tmp_path / "ck.pt", _state(net, panel))
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {**_state(net, panel), "step": 99})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
