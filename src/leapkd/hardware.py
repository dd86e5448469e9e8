"""What this machine computes well: the device `auto` means, the precision `auto` picks,
and the data workers `auto` starts. Capabilities are detected, never assumed.

- CUDA computes bf16 natively from compute capability 8.0 (Ampere) on;
- a CPU does with the AVX512-BF16 or AMX-BF16 instructions (`avx512_bf16` / `amx_bf16` in
  /proc/cpuinfo's flags; on a CPU without them bf16 autocast was measured ~2x slower than
  fp32, with them 1.7x faster: docs/method.md, section 4).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from leapkd.errors import LeapkdError

Precision = Literal["auto", "32", "bf16-mixed", "16-mixed"]
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# `auto` data workers per training process: every core of its share but one, at most this many.
# The cap only guards very large shares (a 128-core node and one process): a loader's start-up
# and the batches its workers hold in shared memory grow with every worker, while 32 JPEG
# decoders (~340 images/s each at 224 px, docs/benchmarks.md "Input pipeline alone") feed ~10k images/s.
MAX_AUTO_WORKERS = 32
CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: /proc/cpuinfo; elsewhere: none known)."""
    if not CPUINFO.is_file():
        return frozenset()
    for line in CPUINFO.read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_computes_bf16() -> bool:
    return bool(CPU_BF16_FLAGS & cpu_flags())


def cuda_computes_bf16() -> bool:
    """Every visible CUDA device is Ampere (compute capability 8.0) or newer."""
    if not torch.cuda.is_available():
        return False
    return all(torch.cuda.get_device_capability(i) >= (8, 0) for i in range(torch.cuda.device_count()))


def device_type(accelerator: str) -> str:
    """The device kind an accelerator setting trains on: cuda, mps or cpu."""
    if accelerator in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu" if accelerator == "auto" else "cuda"  # "gpu" without one: the trainer says so
    return accelerator


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """(the Lightning precision to train in, why). `auto`: bf16-mixed where the device computes
    bf16 natively, else full precision; any other choice is taken as given."""
    if requested == "16-mixed" and device != "cuda":
        raise LeapkdError(
            f"precision 16-mixed (fp16 with loss scaling) is for CUDA GPUs, and this run trains on {device}",
            "use `precision` auto (bf16-mixed where the device computes it natively, else 32)",
        )
    if requested != "auto":
        return requested, "as configured"
    if device == "cuda":
        if cuda_computes_bf16():
            return "bf16-mixed", "auto: CUDA compute capability 8.0 or newer computes bf16 natively"
        return "32", "auto: a CUDA device before Ampere (16-mixed with loss scaling is a choice)"
    if device == "cpu" and cpu_computes_bf16():
        found = ", ".join(sorted(CPU_BF16_FLAGS & cpu_flags()))
        return "bf16-mixed", f"auto: the CPU computes bf16 natively ({found})"
    return "32", f"auto: {device} without native bf16"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision (None: full precision)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def cpus_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores_per_process(processes_per_node: int = 1) -> int:
    """The cores one training process may use: SLURM's `--cpus-per-task` when SLURM set it
    (each task already has its own cores), else this process's cores shared by the node's
    training processes."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit():
        return int(slurm)
    return cpus_available() // max(1, processes_per_node)


def resolve_workers(requested: int | str, processes_per_node: int = 1) -> int:
    """Data workers per training process: `auto` leaves one core of each process's share to
    the process itself and uses all the others (at most `MAX_AUTO_WORKERS`, 32: a 16-core
    single-GPU machine gets 15); a number is taken as given."""
    if requested != "auto":
        return int(requested)
    return max(0, min(MAX_AUTO_WORKERS, cores_per_process(processes_per_node) - 1))


def evaluation_device(accelerator: str, devices: int = 1) -> str:
    """The device kind an evaluation runs on, checked against what this machine has: a GPU
    asked for must be here, and several devices must be that many CUDA GPUs."""
    device = device_type(accelerator)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and gpus == 0:
        raise LeapkdError(
            f"`accelerator` {accelerator} asks for a CUDA GPU and this machine has none",
            "use `accelerator` cpu, or auto to use a GPU when there is one",
        )
    if devices < 1:
        raise LeapkdError(f"`devices` {devices} is not a number of devices", "give 1 or more")
    if devices > 1 and device != "cuda":
        raise LeapkdError(
            f"`devices` {devices}: splitting the batches over several devices needs CUDA GPUs, "
            f"and this evaluation runs on {device}",
            "drop `devices` (one device)",
        )
    if devices > gpus > 0:
        raise LeapkdError(f"`devices` {devices}: this machine has {gpus} CUDA GPU(s)", f"use `devices` {gpus} or fewer")
    return device
