"""resolve_device: one rule for every subcommand, one-line errors for devices that cannot run."""

from __future__ import annotations

import os

import pytest
import torch

from vcfbert_fast.devices import available_cpus, resolve_device, set_threads
from vcfbert_fast.errors import InputError


def test_auto_and_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x", "", "mps:0"])
def test_unknown_devices_are_one_line_errors(bad):
    with pytest.raises(InputError) as e:
        resolve_device(bad)
    assert "\n" not in str(e.value) and "auto, cpu, cuda" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.gpu
def test_cuda_index_checked():
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(InputError, match="visible"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity (Linux)")
def test_threads_default_to_the_affinity_mask():
    """``--threads`` defaults to the CPUs this process may use (a taskset/Slurm allocation), not the box's."""
    allowed = os.sched_getaffinity(0)
    before = torch.get_num_threads()
    try:
        assert available_cpus() == len(allowed)
        os.sched_setaffinity(0, {min(allowed)})  # as `taskset -c N` would
        assert available_cpus() == 1
        assert set_threads(None) == 1 and torch.get_num_threads() == 1
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(before)
    assert available_cpus() == len(allowed)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_thread_counts_are_one_line_errors(bad):
    with pytest.raises(InputError, match=">= 1"):
        set_threads(bad)


def test_inference_precision_choice():
    from vcfbert_fast.devices import cpu_has_bf16_matmul, inference_dtype

    cpu = torch.device("cpu")
    assert inference_dtype(cpu, "fp32") is None
    assert inference_dtype(cpu, "bf16") is torch.bfloat16
    assert inference_dtype(cpu, "auto") is None  # an informative model: fp32 on any CPU
    assert (inference_dtype(cpu, "auto", encode="all") is torch.bfloat16) == cpu_has_bf16_matmul()
    assert inference_dtype(cpu, "bf16", encode="informative") is torch.bfloat16
    with pytest.raises(InputError, match="--precision 'fp16'"):
        inference_dtype(cpu, "fp16")
