"""`leapkd plan`: what a distillation will cost on GPUs, estimated on the CPU before it runs.

For a teacher, a student, an image size, a batch per GPU, a number of training images,
epochs, a method and a GPU kind and count, `estimate_plan` counts (random weights: only
shapes matter):

- FLOPs per image of one training step, with leapkd's own counter and the run's own step:
  the teacher's early-exit forward for every depth (`teacher_flops_by_depth`) and the
  student's forward and backward through the method's loss (projector included), as a
  run's `FlopAccounting` measures them. The teacher is counted on PyTorch's meta device (no
  memory, no arithmetic; the counts equal a real pass's), the student for real, at batch 1
  and 2 (FLOPs are linear in the batch);
- memory per GPU: the student's and the method's trainable parameters at 16 bytes each
  (fp32 weights, gradients and AdamW's two moments), the frozen teacher in the compute
  dtype (bf16: 2 bytes a parameter, as `distill` casts it), and the tensors the student's
  backward keeps, measured with `saved_tensors_hooks` under the run's autocast: the part
  that grows with the batch (per image) and the part that does not (the autocast copies of
  the weights);
- throughput: images/s per GPU = MFU x the GPU's dense peak / FLOPs per image; the job's
  rate is that times the GPUs (data parallel, the input pipeline keeping up) and the run's
  hours are images x epochs / that rate;
- LEAP's largest FLOP saving: every block uses its whole epoch cap from block 1.

The MFU (model-FLOPs utilisation) of every GPU is ASSUMED, not measured: 35% of the dense
peak, as `bench/estimate.py` assumed. When `bench/gpu.py` has measured an H200 step
(docs/benchmarks/gpu.json, `mfu`), edit `H200_MFU` and `H200_MFU_BASIS` below; a user's
own figure goes in `estimate_plan(..., mfu=)` or `leapkd plan --mfu`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor

from leapkd.accounting import student_step_flops, teacher_flops_by_depth
from leapkd.config import StrictKeys
from leapkd.data import build_dataset
from leapkd.errors import LeapkdError, closest_names
from leapkd.methods import build_method, load_config
from leapkd.models import PRESETS, Backbone, check_image_size, freeze, load_backbone

__all__ = [
    "GPUS",
    "GpuSpec",
    "Measured",
    "Plan",
    "PlanRequest",
    "estimate_plan",
    "leap_largest_saving",
    "make_plan",
    "measure",
    "saved_activation_bytes",
    "training_images",
]

PlanPrecision = Literal["bf16-mixed", "32"]
PLAN_METHODS = ("leap", "fixed", "spectralkd")
BYTES_PER_TRAINED_PARAM = 16  # fp32 weight + gradient + AdamW's exp_avg and exp_avg_sq
TEACHER_BYTES = {"bf16-mixed": 2, "32": 4}  # the teacher is cast to the compute dtype
USABLE_MEMORY = 0.9  # assumed: the rest goes to the CUDA context, library workspaces, fragmentation

ASSUMED_MFU = 0.35
ASSUMED_BASIS = "assumed, not measured: 35% of the dense peak (no leapkd step has been timed on a GPU yet)"
# The one place to put a measured H200 figure (bench/gpu.py -> docs/benchmarks/gpu.json `mfu`).
H200_MFU = ASSUMED_MFU
H200_MFU_BASIS = ASSUMED_BASIS
USER_BASIS = "given by the user (--mfu)"

# Well-known training splits that leapkd does not ship (their sizes, for --data).
KNOWN_SIZES = {"imagenet-1k": 1_281_167, "imagenet-100": 126_689}


@dataclass(frozen=True)
class GpuSpec:
    """A GPU kind: memory, published dense peaks (TFLOP/s, no sparsity) and the MFU the plan uses."""

    name: str
    label: str
    memory_gib: float  # the board's total, as nvidia-smi reports it
    bf16_peak_tflops: float
    tf32_peak_tflops: float  # precision 32 runs fp32 matrix products in TF32 (matmul_precision: high)
    measured_matmul_tflops: float | None  # a bf16 matrix-product rate measured on the GPU, where known
    mfu: float  # fraction of the dense peak a leapkd step sustains
    basis: str  # where `mfu` comes from

    def peak_tflops(self, precision: PlanPrecision) -> float:
        return self.bf16_peak_tflops if precision == "bf16-mixed" else self.tf32_peak_tflops


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("h200", "H200 SXM 141GB", 143_771 / 1024, 989.4, 494.7, 790.0, H200_MFU, H200_MFU_BASIS),
        GpuSpec("h100", "H100 SXM 80GB", 81_559 / 1024, 989.4, 494.7, None, ASSUMED_MFU, ASSUMED_BASIS),
        GpuSpec("a100", "A100 SXM 80GB", 81_920 / 1024, 312.0, 156.0, None, ASSUMED_MFU, ASSUMED_BASIS),
        GpuSpec("l4", "L4 24GB", 23_034 / 1024, 121.0, 60.0, None, ASSUMED_MFU, ASSUMED_BASIS),
    )
}
MATMUL_SOURCE = "large bf16 matrix products, the figure in issue 23; not a leapkd step"


class PlanRequest(StrictKeys):
    """What a run would be: the options of `leapkd plan`, checked on construction (LeapkdError with a fix)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str = Field("vit_large_patch14_dinov2", description="teacher model name")
    student: str = Field("vit-small", description="student model name")
    image_size: int = Field(224, description="input resolution in pixels")
    batch_size: int = Field(128, description="images per batch per GPU")
    images: int = Field(KNOWN_SIZES["imagenet-1k"], description="training images per epoch (default: data's size)")
    data: str = Field(
        "imagenet-1k",
        description="what images counts: a built-in dataset, an image folder, imagenet-1k or imagenet-100 (the "
        "size of its training split when images is not given)",
    )
    epochs: int = Field(100, description="training epochs")
    method: str = Field("leap", description=f"one of {', '.join(PLAN_METHODS)}")
    max_epochs_per_block: int | None = Field(None, description="leap: the epoch cap of one level (default: leap's)")
    gpu: str = Field("h200", description=f"GPU kind: {', '.join(GPUS)}")
    gpus: int = Field(1, description="number of GPUs, data parallel")
    precision: PlanPrecision = Field("bf16-mixed", description="the run's precision")

    @model_validator(mode="after")
    def _check(self) -> PlanRequest:
        gpu_spec(self.gpu)
        if self.method not in PLAN_METHODS:
            raise LeapkdError(
                f"leapkd plan knows methods {', '.join(PLAN_METHODS)}, not '{self.method}'",
                f"use method {' or '.join(PLAN_METHODS)}",
            )
        for key in ("image_size", "batch_size", "images", "epochs", "gpus", "max_epochs_per_block"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise LeapkdError(f"{key} must be a whole number >= 1, got {value!r}", f"give {key} 1 or more")
        return self


def gpu_spec(name: str) -> GpuSpec:
    """The GPU kind `name` (case-insensitive), or a LeapkdError listing the known ones."""
    spec = GPUS.get(name.lower())
    if spec is None:
        close = closest_names(name.lower(), GPUS)
        raise LeapkdError(
            f"unknown GPU '{name}'" + (f"; did you mean {close[0]}?" if close else ""),
            f"use `gpu` {', '.join(GPUS)} (or the nearest kind and `mfu` with your own measured figure)",
        )
    return spec


def training_images(data: str) -> int:
    """The training-split size of a built-in dataset, an image folder or a well-known set."""
    if data.lower() in KNOWN_SIZES:
        return KNOWN_SIZES[data.lower()]
    return len(build_dataset(data, "train", image_size=32, augment=False))  # lists files, decodes none


@dataclass(frozen=True)
class Measured:
    """What counting found; FLOPs and activation bytes per image (one training step)."""

    teacher_flops_by_depth: tuple[int, ...]  # entry b-1: the teacher's forward up to level b
    student_step_flops: int  # student forward + backward through the method's loss
    teacher_params: int
    student_params: int  # trainable: the student's and the method's (projector, heads)
    activation_bytes_per_image: int  # what the student's backward keeps, per image of the batch
    activation_bytes_per_step: int  # ... and what it keeps whatever the batch (autocast weight copies)
    max_epochs_per_block: int | None  # leap's epoch cap (None for other methods)
    calibrate: bool  # leap's calibration pass on the first batch

    @property
    def teacher_blocks(self) -> int:
        return len(self.teacher_flops_by_depth)


def saved_activation_bytes(step: Callable[[], Tensor]) -> int:
    """Bytes autograd keeps for the backward of `step()` (each storage counted once); runs the backward."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(seen.values())


def _models(request: PlanRequest) -> tuple[Backbone, Backbone]:
    """The teacher on the meta device in the compute dtype, and the student on the CPU (as
    `distill` builds them: a preset student takes the teacher's patch size)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying stored weights into meta tensors is a no-op, and says so
        teacher = freeze(load_backbone(request.teacher, request.image_size))
    if request.precision == "bf16-mixed":
        teacher.to(torch.bfloat16)
    patch = teacher.patch_size if request.student in PRESETS else None
    student = load_backbone(request.student, request.image_size, patch_size=patch)
    check_image_size(request.image_size, teacher=teacher, student=student)
    return teacher, student


def _on_cpu(value: Any) -> Any:
    """Meta tensors (inside dataclasses, dicts and tuples) replaced by CPU zeros of the same shape and dtype."""
    if isinstance(value, Tensor):
        return torch.zeros(value.shape, dtype=value.dtype)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _on_cpu(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **fields)
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_on_cpu(v) for v in value)
    return value


def measure(request: PlanRequest) -> Measured:
    """Count FLOPs, parameters and saved activations of one training step of `request` (CPU, seconds)."""
    overrides: dict[str, Any] = {
        "method": request.method,
        "teacher": request.teacher,
        "student": request.student,
        "image_size": request.image_size,
        "allow_random_teacher": True,
    }
    if request.max_epochs_per_block is not None:
        overrides["max_epochs_per_block"] = request.max_epochs_per_block
    cfg = load_config(None, overrides)
    teacher, student = _models(request)
    method = build_method(cfg, teacher, student, num_classes=None)
    size, dtype = request.image_size, next(teacher.parameters()).dtype
    by_depth = teacher_flops_by_depth(teacher, torch.zeros(1, 3, size, size, device="meta", dtype=dtype))
    mixed = request.precision == "bf16-mixed"

    def step_of(batch: int) -> Callable[[], Tensor]:
        meta_images = torch.zeros(batch, 3, size, size, device="meta", dtype=dtype)
        targets = _on_cpu(method.targets(teacher, meta_images))
        images = torch.randn(batch, 3, size, size)
        return lambda: method.loss(student, images, targets).loss

    saved, flops = [], 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
        for batch in (1, 2):
            step = step_of(batch)
            flops = student_step_flops(step) if batch == 1 else flops
            saved.append(saved_activation_bytes(step))
    per_image = max(0, saved[1] - saved[0])
    trainable = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    return Measured(
        teacher_flops_by_depth=tuple(by_depth),
        student_step_flops=flops,
        teacher_params=sum(p.numel() for p in teacher.parameters()),
        student_params=sum(p.numel() for p in trainable),
        activation_bytes_per_image=per_image,
        activation_bytes_per_step=max(0, saved[0] - per_image),
        max_epochs_per_block=getattr(cfg, "max_epochs_per_block", None) if request.method == "leap" else None,
        calibrate=bool(getattr(cfg, "calibrate", False)) and request.method == "leap",
    )


def leap_largest_saving(
    teacher_by_depth: Sequence[int],
    student_step: int,
    epochs: int,
    cap: int,
    images: int = 1,
    calibration_images: int = 0,
) -> float:
    """LEAP's FLOP saving against the fixed last-block target when every block uses its whole
    epoch cap, from block 1: epoch e (0-based) runs the teacher to block min(1 + e // cap, L).

    This is the curriculum's slowest climb, hence the largest saving its rules give (without
    `snap_to_last`): a threshold level-up, or calibration starting deeper, makes it smaller
    (calibration at the last block: about 0). `calibration_images` (the first batch of every
    GPU) pay one extra teacher pass at full depth, as the run's ledger charges it.
    """
    L = len(teacher_by_depth)
    full = teacher_by_depth[-1] + student_step
    per_image = sum(teacher_by_depth[min(1 + e // cap, L) - 1] + student_step for e in range(epochs))
    run = images * per_image + calibration_images * teacher_by_depth[-1]
    return 1.0 - run / (images * epochs * full)


@dataclass(frozen=True)
class Plan:
    """The estimate for one request, on one GPU kind (see the module docstring)."""

    request: PlanRequest
    measured: Measured
    gpu: GpuSpec
    mfu: float
    mfu_basis: str
    flops_per_image: int  # one step, the teacher at its last block (fixed, spectralkd; leap at its end)
    teacher_share: float
    fixed_memory_bytes: int  # weights, gradients, moments, the teacher, batch-independent activations
    memory_bytes: int  # per GPU at the request's batch
    largest_batch: int  # that fits in USABLE_MEMORY of the GPU
    images_per_second_per_gpu: float
    images_per_second: float  # the job's
    hours: float  # images x epochs at that rate (the teacher at its last block every step)
    leap_saving: float  # largest FLOP saving (0 for fixed and spectralkd)
    hours_at_largest_saving: float  # hours x (1 - leap_saving): time taken as proportional to FLOPs

    def rows(self) -> list[dict[str, str]]:
        """(figure, value) rows for a table."""
        r, m, gib = self.request, self.measured, 2**30
        teacher = m.teacher_flops_by_depth[-1]
        rows = [
            (
                "teacher -> student",
                f"{r.teacher} ({m.teacher_params / 1e6:.1f} M params, {m.teacher_blocks} levels)"
                f" -> {r.student} ({m.student_params / 1e6:.1f} M trained: student + method)",
            ),
            (
                "run",
                f"{r.method}, {r.images:,} images ({r.data}) x {r.epochs} epochs, {r.image_size} px, "
                f"batch {r.batch_size} per GPU, {r.precision}",
            ),
            (
                "GFLOP per image per step",
                f"{_num(self.flops_per_image / 1e9)} (teacher {_num(teacher / 1e9)} to level "
                f"{m.teacher_blocks}, student fwd+bwd {_num(m.student_step_flops / 1e9)})",
            ),
            ("teacher share", f"{100 * self.teacher_share:.0f}%"),
            (
                "memory per GPU",
                f"{self.memory_bytes / gib:.1f} GiB at batch {r.batch_size} (fixed "
                f"{self.fixed_memory_bytes / gib:.2f} GiB + {m.activation_bytes_per_image / 2**20:.1f}"
                f" MiB per image) of {self.gpu.memory_gib:.0f} GiB",
            ),
            ("largest batch per GPU", f"{self.largest_batch:,} ({100 * USABLE_MEMORY:.0f}% of the GPU's memory)"),
            (
                "images/s per GPU",
                f"{self.images_per_second_per_gpu:,.0f} ({self.gpu.label}, MFU {100 * self.mfu:.0f}%"
                f" {self._mfu_kind()} of {self.gpu.peak_tflops(r.precision):.0f} TFLOP/s)",
            ),
            ("images/s for the job", f"{self.images_per_second:,.0f} on {r.gpus} GPU{'s' if r.gpus > 1 else ''}"),
            ("training time", f"{_duration(self.hours)} (teacher at its last level every step)"),
        ]
        if r.method == "leap":
            cap = m.max_epochs_per_block
            pace = f"every level for its cap of {cap} epoch{'s' if cap != 1 else ''}, from level 1"
            saved = f"{100 * self.leap_saving:.1f}% -> {_duration(self.hours_at_largest_saving)} ({pace})"
            rows.append(("LEAP: largest FLOP saving", saved))
        else:
            rows.append(("FLOP saving", f"none: {r.method} runs the teacher to its last level every step"))
        return [{"figure": k, "value": v} for k, v in rows]

    def _mfu_kind(self) -> str:
        if self.mfu_basis == USER_BASIS:
            return "yours"
        return "assumed" if self.mfu_basis == ASSUMED_BASIS else "measured"

    def assumptions(self) -> list[str]:
        """Plain lines saying what the figures assume."""
        peak = "bf16" if self.request.precision == "bf16-mixed" else "TF32"
        yours = "" if self.mfu_basis == USER_BASIS else f" Give yours with --mfu (a step's FLOP/s / the {peak} peak)."
        lines = [
            f"MFU {100 * self.mfu:.0f}%: {self.mfu_basis}.{yours}",
            "Memory: the student's trainable parameters at 16 B (fp32 weights, gradients, AdamW moments), the teacher"
            f" at {TEACHER_BYTES[self.request.precision]} B a parameter, the activations the student's backward "
            "keeps (measured under CPU autocast); CUDA's context, workspaces and the loader add to it.",
            "Images/s for the job assume data-parallel scaling and an input pipeline that keeps up.",
        ]
        gpu, rate = self.gpu, self.gpu.measured_matmul_tflops
        if rate is not None and self.request.precision == "bf16-mixed":
            lines.insert(
                1,
                f"{gpu.label}: about {rate:.0f} TFLOP/s measured ({MATMUL_SOURCE}), "
                f"{100 * rate / gpu.bf16_peak_tflops:.0f}% of the {gpu.bf16_peak_tflops:.0f} datasheet "
                "peak; a training step sustains less than that, hence the MFU.",
            )
        if self.request.method == "leap":
            lines.append(
                "LEAP's saving is the largest its rules give: every level uses its whole epoch cap, starting at "
                "level 1. Calibration starting deeper and threshold level-ups make it smaller (0 if calibration "
                "starts at the last level); time is taken as proportional to FLOPs."
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        out = dataclasses.asdict(self)
        return {**out, "request": self.request.model_dump(), "assumptions": self.assumptions()}


def _num(value: float) -> str:
    """1,234.5 / 12.3 / 0.0456: one decimal from 10 up, else three significant digits."""
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:,.1f} hours"
    return f"{60 * hours:.1f} minutes" if hours >= 1 / 60 else f"{3600 * hours:.1f} seconds"


def _check_mfu(mfu: float | None) -> None:
    if mfu is not None and not 0 < mfu <= 1:
        raise LeapkdError(f"MFU must be a fraction in (0, 1], got {mfu}", "give e.g. `mfu` 0.4 for 40%")


def make_plan(request: PlanRequest, measured: Measured, mfu: float | None = None) -> Plan:
    """The plan from counts already made (one `measure` serves every GPU kind); `mfu` overrides the GPU's."""
    gpu = gpu_spec(request.gpu)
    _check_mfu(mfu)
    used, basis = (gpu.mfu, gpu.basis) if mfu is None else (mfu, USER_BASIS)
    m = measured
    teacher, student = m.teacher_flops_by_depth[-1], m.student_step_flops
    fixed = (
        BYTES_PER_TRAINED_PARAM * m.student_params
        + TEACHER_BYTES[request.precision] * m.teacher_params
        + m.activation_bytes_per_step
    )
    usable = USABLE_MEMORY * gpu.memory_gib * 2**30
    largest = int((usable - fixed) // max(1, m.activation_bytes_per_image))
    rate = used * gpu.peak_tflops(request.precision) * 1e12 / (teacher + student)
    hours = request.images * request.epochs / (rate * request.gpus) / 3600
    saving = 0.0
    if request.method == "leap" and m.max_epochs_per_block is not None:
        calibration = request.gpus * request.batch_size if m.calibrate else 0
        saving = leap_largest_saving(
            m.teacher_flops_by_depth, student, request.epochs, m.max_epochs_per_block, request.images, calibration
        )
    return Plan(
        request=request,
        measured=m,
        gpu=gpu,
        mfu=used,
        mfu_basis=basis,
        flops_per_image=teacher + student,
        teacher_share=teacher / (teacher + student),
        fixed_memory_bytes=fixed,
        memory_bytes=fixed + request.batch_size * m.activation_bytes_per_image,
        largest_batch=max(0, largest),
        images_per_second_per_gpu=rate,
        images_per_second=rate * request.gpus,
        hours=hours,
        leap_saving=saving,
        hours_at_largest_saving=hours * (1.0 - saving),
    )


def check_fits(plan: Plan) -> None:
    """A LeapkdError when the batch does not fit in the GPU's usable memory, with the largest that does."""
    if plan.request.batch_size <= plan.largest_batch:
        return
    gib = 2**30
    raise LeapkdError(
        f"a batch of {plan.request.batch_size} per GPU needs about {plan.memory_bytes / gib:.1f} GiB, more than "
        f"{100 * USABLE_MEMORY:.0f}% of the {plan.gpu.label}'s {plan.gpu.memory_gib:.0f} GiB",
        f"use `batch_size` {plan.largest_batch} or less"
        if plan.largest_batch
        else "the model alone does not fit: use a GPU with more memory or a smaller student",
    )


def estimate_plan(request: PlanRequest, *, mfu: float | None = None) -> Plan:
    """Count `request` on the CPU and estimate it on its GPU (LeapkdError if its batch does not fit)."""
    _check_mfu(mfu)
    plan = make_plan(request, measure(request), mfu)
    check_fits(plan)
    return plan
