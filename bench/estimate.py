"""Paper estimates of what a distillation needs on a GPU: FLOPs, memory, throughput.

Usage:
  python bench/estimate.py          # writes docs/estimates.md, a few minutes on 2 CPU cores

Nothing here ran on a GPU. For each (teacher, student) pair at 224 px this counts, on the
CPU with random weights (the shapes are what matter):
- FLOPs per image of one training step: the teacher's forward at full depth and the
  student's forward and backward with a linear projector (leapkd's FLOP counter);
- memory: the student's fp32 weights, gradients and AdamW's two moments (16 bytes per
  parameter), the teacher stored in bf16 (2 bytes per parameter, `precision: auto` on an
  Ampere GPU), and the activations the student's backward keeps per image, measured as
  the bytes autograd saves under bf16 autocast;
- throughput: images/s = an assumed sustained rate / FLOPs per image, for the assumptions
  listed (fractions of the GPUs' published dense bf16 peaks). Real figures depend on the
  kernels, the input pipeline and the batch; measure yours with `summary.json`'s
  `images_per_second`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from leapkd.accounting import student_step_flops, teacher_flops_by_depth
from leapkd.models import freeze, load_backbone

IMAGE_SIZE = 224
PAIRS = (
    ("vit_base_patch14_dinov2", "vit-small"),
    ("vit_large_patch14_dinov2", "vit-small"),
    ("vit_large_patch14_dinov2", "vit_base_patch14_dinov2"),
    ("vit_base_patch14_dinov2", "mobilenetv4_conv_medium"),
)
# (GPU, published dense bf16 peak TFLOP/s); the sustained rate assumed is 35% of it
GPUS = (("A100", 312.0), ("H100 SXM", 989.0), ("L4", 121.0))
SUSTAINED = 0.35
BATCH = 128  # per GPU, for the memory column


def saved_activation_bytes(step) -> int:
    """Bytes autograd keeps for the backward of `step()` (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(seen.values())


def estimate(teacher_name: str, student_name: str) -> dict[str, float]:
    teacher = freeze(load_backbone(teacher_name, IMAGE_SIZE))
    student = load_backbone(student_name, IMAGE_SIZE, patch_size=teacher.patch_size if "-" in student_name else None)
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    teacher_flops = teacher_flops_by_depth(teacher, image)[-1]
    with torch.no_grad():
        target = teacher.forward_to(image, teacher.num_levels).patches
    projector = torch.nn.Linear(student.width, teacher.width)

    def step() -> torch.Tensor:
        tokens = student.forward_to(image, student.num_levels).patches
        if tokens.shape[1] != target.shape[1]:  # another grid: compare pooled features
            return torch.nn.functional.mse_loss(projector(tokens.mean(1)), target.mean(1))
        return torch.nn.functional.mse_loss(projector(tokens), target)

    student_flops = student_step_flops(step)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        activations = saved_activation_bytes(step)
    n_student = sum(p.numel() for p in student.parameters()) + sum(p.numel() for p in projector.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    return {
        "teacher_params_m": n_teacher / 1e6,
        "student_params_m": n_student / 1e6,
        "gflops_per_image": (teacher_flops + student_flops) / 1e9,
        "teacher_share": teacher_flops / (teacher_flops + student_flops),
        "fixed_gib": (16 * n_student + 2 * n_teacher) / 2**30,
        "activation_mib_per_image": activations / 2**20,
    }


def page(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    gpu_cols = " | ".join(f"{g} images/s" for g, _ in GPUS)
    lines = [
        "# Estimates: memory and throughput on GPUs",
        "",
        "**Estimates on paper, not measurements**: no GPU was used. Written by `python bench/estimate.py`; "
        "see its docstring for what is counted and how.",
        "",
        f"- {IMAGE_SIZE} px, teacher at full depth (the `fixed` method; `leap` runs the teacher shallower for "
        "part of the run and needs less), bf16-mixed, AdamW.",
        f"- Memory per GPU = fixed part (student weights, gradients and AdamW moments in fp32, teacher in bf16) "
        f"+ batch x activations per image; the column is for a batch of {BATCH} per GPU. CUDA's allocator, "
        "kernels' workspaces and the data loader's pinned memory add to it.",
        f"- images/s per GPU = {int(SUSTAINED * 100)}% of the GPU's published dense bf16 peak / FLOPs per "
        "image. Multiply by the number of GPUs for data-parallel training, if the input pipeline keeps "
        "up: decoding and cropping ImageNet-sized JPEGs ran at about 450 images/s on one core of this "
        "machine (docs/benchmarks.md, input pipeline), so a rate R needs about R / 450 such cores per GPU.",
        "",
        f"| teacher | student | params T / S (M) | GFLOP / image / step | teacher share | fixed GiB "
        f"| activations MiB / image | GiB at batch {BATCH} | {gpu_cols} |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(GPUS),
    ]
    for teacher, student, r in rows:
        total = r["fixed_gib"] + BATCH * r["activation_mib_per_image"] / 1024
        speeds = " | ".join(f"{SUSTAINED * peak * 1e12 / (r['gflops_per_image'] * 1e9):,.0f}" for _, peak in GPUS)
        lines.append(
            f"| `{teacher}` | `{student}` | {r['teacher_params_m']:.0f} / {r['student_params_m']:.0f} "
            f"| {r['gflops_per_image']:.1f} | {100 * r['teacher_share']:.0f}% | {r['fixed_gib']:.2f} "
            f"| {r['activation_mib_per_image']:.1f} | {total:.1f} | {speeds} |"
        )
    lines += [
        "",
        "An epoch of ImageNet-100 (126,689 training images) at a rate of R images/s takes 126,689 / R seconds; "
        "ImageNet-1k (1,281,167 images) ten times as long.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs") / "estimates.md")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for teacher, student in PAIRS:
        print(f"counting {teacher} -> {student}", flush=True)
        rows.append((teacher, student, estimate(teacher, student)))
    args.out.write_text(page(rows))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
