"""What `auto` resolves to: precision by the device's native bf16, data workers by cores.

The capability probes (CPU flags, CUDA availability and compute capability) are mocked, so
every branch is checked on this CPU-only machine."""

import pytest
import torch

from leapkd import hardware
from leapkd.hardware import autocast_dtype, device_type, resolve_precision, resolve_workers


@pytest.fixture
def cpu_with(monkeypatch):
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse4_2", "avx2", *flags}))

    return set_flags


@pytest.fixture
def cuda_with(monkeypatch):
    def set_devices(*capabilities: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(capabilities))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capabilities[i])

    return set_devices


@pytest.mark.parametrize("flags", [("avx512_bf16",), ("amx_bf16", "amx_tile"), ("avx512_bf16", "amx_bf16")])
def test_auto_is_bf16_on_a_cpu_that_computes_it(cpu_with, flags):
    cpu_with(*flags)
    precision, why = resolve_precision("auto", "cpu")
    assert precision == "bf16-mixed" and "natively" in why and flags[0] in why


def test_auto_is_full_precision_on_a_cpu_without_bf16(cpu_with):
    cpu_with("avx512f", "avx512bw")  # AVX-512 without its BF16 extension does not count
    assert resolve_precision("auto", "cpu")[0] == "32"


@pytest.mark.parametrize(
    "capabilities,expected",
    [([(8, 0)], "bf16-mixed"), ([(9, 0), (8, 6)], "bf16-mixed"), ([(7, 0)], "32"), ([(8, 0), (7, 5)], "32")],
    ids=["A100", "H100+A6000", "V100", "mixed with a T4"],
)
def test_auto_on_cuda_needs_ampere_on_every_device(cuda_with, capabilities, expected):
    cuda_with(*capabilities)
    assert resolve_precision("auto", "cuda")[0] == expected


def test_explicit_precision_is_kept_and_mps_gets_full_precision(cpu_with):
    cpu_with("avx512_bf16")
    assert resolve_precision("32", "cpu") == ("32", "as configured")
    assert resolve_precision("16-mixed", "cuda") == ("16-mixed", "as configured")
    assert resolve_precision("auto", "mps")[0] == "32"


def test_sixteen_bit_mixed_is_refused_off_cuda():
    from leapkd import LeapkdError

    with pytest.raises(LeapkdError, match="16-mixed"):
        resolve_precision("16-mixed", "cpu")


def test_the_cpu_flags_probe_reads_proc_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 avx2\n\nprocessor\t: 1\nflags\t: fpu\n")
    monkeypatch.setattr(hardware, "CPUINFO", info)
    hardware.cpu_flags.cache_clear()
    try:
        assert hardware.cpu_flags() == {"fpu", "sse", "avx512_bf16", "avx2"}
        assert hardware.cpu_computes_bf16()
    finally:
        hardware.cpu_flags.cache_clear()


def test_device_type_follows_what_is_there(cuda_with, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cuda_with()
    assert device_type("auto") == "cpu" and device_type("cpu") == "cpu"
    cuda_with((8, 0))
    assert device_type("auto") == "cuda" and device_type("gpu") == "cuda"


def test_autocast_dtype():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32") is None


@pytest.mark.parametrize(
    "cores,processes,expected",
    [(2, 1, 1), (1, 1, 0), (16, 1, 15), (16, 4, 3), (64, 8, 7), (4, 8, 0), (32, 1, 31), (128, 1, 32), (128, 2, 32)],
)
def test_auto_workers_leave_each_process_a_core(monkeypatch, cores, processes, expected):
    """Every core of the process's share but one (a 16-core single-GPU machine: 15), at most 32."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(hardware, "cpus_available", lambda: cores)
    assert resolve_workers("auto", processes) == expected
    assert resolve_workers(3, processes) == 3


def test_auto_workers_under_slurm_use_the_tasks_cores(monkeypatch):
    monkeypatch.setattr(hardware, "cpus_available", lambda: 64)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert resolve_workers("auto", processes_per_node=4) == 5  # not 64 / 4 - 1: SLURM gave the task 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "48")
    assert resolve_workers("auto", processes_per_node=1) == 32  # the cap holds under SLURM too


def test_evaluation_device_checks_what_is_here(cuda_with):
    from leapkd import LeapkdError
    from leapkd.hardware import evaluation_device

    cuda_with()
    assert evaluation_device("auto") == "cpu"
    with pytest.raises(LeapkdError, match="has none"):
        evaluation_device("gpu")
    with pytest.raises(LeapkdError, match="needs CUDA GPUs"):
        evaluation_device("cpu", devices=2)
    cuda_with((8, 0), (8, 0))
    assert evaluation_device("auto", devices=2) == "cuda"
    with pytest.raises(LeapkdError, match="has 2 CUDA GPU"):
        evaluation_device("gpu", devices=4)
