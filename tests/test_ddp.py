"""Two gloo processes on CPU train a tiny model through the torchrun code path (RANK/WORLD_SIZE env)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, ref_vcf: str, panel_txt: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from vcfbert_fast.io import read_panel
    from vcfbert_fast.train import TrainConfig, Trainer

    panel = read_panel(ref_vcf, panel_txt, progress=False)
    cfg = TrainConfig(
        dims=16,
        layers=1,
        heads=2,
        max_sites=128,
        batch_size=8,
        k=2,
        max_steps=STEPS,
        epochs=10,
        val_every_steps=0,
        val_max_batches=2,
        log_every=2,
        progress=False,
        device="cpu",
        time_budget_min=None,
    )
    tr = Trainer(cfg, panel, None, out)
    assert tr.dist.enabled and tr.dist.rank == rank and tr.dist.world == world
    seen = []
    retrieve = tr._retrieve

    def recording(batch, training):
        if training:
            seen.append((tr.epoch, int(batch["window_idx"][0]), batch["sample_idx"].tolist()))
        return retrieve(batch, training)

    tr._retrieve = recording
    summary = tr.train()
    from vcfbert_fast.training.distributed import any_rank, sum_across_ranks

    agreed = [any_rank(rank == 1, tr.dist, tr.device), any_rank(False, tr.dist, tr.device)]
    summed = sum_across_ranks(torch.tensor([1.0, float(rank)], dtype=torch.float64), tr.dist).tolist()
    torch.save(
        {
            "seen": seen,
            "state": {k: v.clone() for k, v in tr.model.state_dict().items()},
            "summary": summary,
            "agreed": agreed,
            "summed": summed,
        },
        os.path.join(out, f"rank{rank}.pt"),
    )
    tr.close()


def test_two_gloo_ranks_disjoint_samples_identical_weights(small_sim, tmp_path):
    world = 2
    mp.spawn(
        _worker,
        args=(world, _free_port(), str(small_sim.ref_vcf), str(small_sim.panel_txt), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world))
    assert len(r0["seen"]) == len(r1["seen"]) == STEPS
    for (e0, w0, s0), (e1, w1, s1) in zip(r0["seen"], r1["seen"]):
        assert (e0, w0) == (e1, w1), "ranks must process the same window at the same step"
        assert set(s0).isdisjoint(s1), f"ranks shared samples {set(s0) & set(s1)} in window {w0}"
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), f"{k} differs between ranks"
    # the weights moved, and rank 0's checkpoint holds them
    from vcfbert_fast.checkpoint import read_checkpoint

    ck = read_checkpoint(tmp_path / "last.pt")
    assert ck["step"] == STEPS and ck["world_size"] == world
    for k, v in r0["state"].items():
        assert torch.equal(ck["model_state"][k], v), k
    assert r0["summary"]["stop_reason"] == "max_steps"
    # the collectives: an OR of flags (one rank's True stops all), a sum of counters
    assert r0["agreed"] == r1["agreed"] == [True, False]
    assert r0["summed"] == r1["summed"] == [2.0, 1.0]
    assert r0["summary"]["validation"] == r1["summary"]["validation"], (
        "validation metrics must be all-reduced"
    )


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
