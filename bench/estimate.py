"""Paper estimates of what a distillation needs on a GPU: FLOPs, memory, throughput.

Usage:
  python bench/estimate.py          # writes docs/estimates.md, a minute or two on 2 CPU cores

Nothing here ran on a GPU. The counting is `leapkd.plan`'s (the same as `leapkd plan`): for
each (teacher, student) pair at 224 px, with random weights (the shapes are what matter),
- FLOPs per image of one `fixed` training step: the teacher's forward at full depth and the
  student's forward and backward through the method's loss and projector (leapkd's FLOP
  counter, as a run's ledger counts them);
- memory: the student's and the projector's fp32 weights, gradients and AdamW's two moments
  (16 bytes per parameter), the teacher stored in bf16 (2 bytes per parameter, what
  `distill` does under bf16-mixed), and the tensors the student's backward keeps, measured
  under bf16 autocast: per image, plus the once-per-step autocast copies of the weights;
- throughput: images/s = MFU x the GPU's published dense bf16 peak / FLOPs per image, with
  the MFU of `leapkd.plan.GPUS` (assumed 35% until a GPU run measures it). Real figures
  depend on the kernels, the input pipeline and the batch; measure yours with
  `summary.json`'s `images_per_second`.
The page ends with the output of `leapkd plan` for its defaults, run by this script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from leapkd.plan import (
    ASSUMED_MFU,
    GPUS,
    KNOWN_SIZES,
    Measured,
    Plan,
    PlanRequest,
    leap_largest_saving,
    make_plan,
    measure,
)

IMAGE_SIZE = 224
PAIRS = (
    ("vit_base_patch14_dinov2", "vit-small"),
    ("vit_large_patch14_dinov2", "vit-small"),
    ("vit_large_patch14_dinov2", "vit_base_patch14_dinov2"),
    ("vit_base_patch14_dinov2", "mobilenetv4_conv_medium"),
)
BATCH = 128  # per GPU, for the memory column
EPOCHS, CAP = 100, 1  # LEAP's column: ImageNet-1k for 100 epochs, leap's default cap of 1 epoch per block


def plans(teacher: str, student: str) -> tuple[Measured, dict[str, Plan]]:
    """One count of a `fixed` step, and its plan on every GPU kind leapkd.plan knows."""
    request = PlanRequest(teacher=teacher, student=student, image_size=IMAGE_SIZE, batch_size=BATCH, method="fixed")
    measured = measure(request)
    return measured, {g: make_plan(request.model_copy(update={"gpu": g}), measured) for g in GPUS}


def leap_column(m: Measured) -> float:
    """LEAP's largest saving for the same counts (ViT levels share a width, so the student step is the same)."""
    images = KNOWN_SIZES["imagenet-1k"]
    return leap_largest_saving(m.teacher_flops_by_depth, m.student_step_flops, EPOCHS, CAP, images, BATCH)


def default_plan_output() -> str:
    """What `leapkd plan` prints for its defaults (run as a user would)."""
    done = subprocess.run([sys.executable, "-m", "leapkd", "plan"], capture_output=True, text=True, check=True)
    return done.stdout.rstrip()


def page(rows: list[tuple[str, str, Measured, dict[str, Plan]]], example: str) -> str:
    gpu_cols = " | ".join(f"{g.label.split()[0]} images/s" for g in GPUS.values())
    mfu_note = "assumed, not measured" if all(g.mfu == ASSUMED_MFU for g in GPUS.values()) else "see leapkd/plan.py"
    lines = [
        "# Estimates: memory and throughput on GPUs",
        "",
        "**Estimates on paper, not measurements**: no GPU was used. Written by `python bench/estimate.py` with "
        "`leapkd.plan` (what `leapkd plan` runs); see its docstring for what is counted and how.",
        "",
        f"- {IMAGE_SIZE} px, the `fixed` method (teacher at full depth every step), bf16-mixed, AdamW.",
        f"- Memory per GPU = fixed part (student and projector weights, gradients and AdamW moments in fp32, "
        f"teacher in bf16, autocast's bf16 copies of the student's weights) + batch x activations per image; the "
        f"column is for a batch of {BATCH} per GPU. CUDA's allocator, kernels' workspaces and the data loader's "
        "pinned memory add to it.",
        f"- images/s per GPU = MFU x the GPU's published dense bf16 peak / FLOPs per image, MFU "
        f"{100 * ASSUMED_MFU:.0f}% ({mfu_note}). Multiply by the number of GPUs for data-parallel training, if the "
        "input pipeline keeps up: decoding and cropping ImageNet-sized JPEGs ran at about 450 images/s on one core "
        "of this machine (docs/benchmarks.md, input pipeline), so a rate R needs about R / 450 such cores per GPU.",
        f"- LEAP column: the largest FLOP saving of `leap` over {EPOCHS} epochs of ImageNet-1k with its default cap "
        f"of {CAP} epoch per block (every block used to its cap from block 1; calibration and threshold level-ups "
        "make it smaller).",
        "",
        f"| teacher | student | params T / S (M) | GFLOP / image / step | teacher share | fixed GiB "
        f"| activations MiB / image | GiB at batch {BATCH} | {gpu_cols} | LEAP largest saving |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (len(GPUS) + 1),
    ]
    for teacher, student, m, by_gpu in rows:
        any_plan = next(iter(by_gpu.values()))
        speeds = " | ".join(f"{p.images_per_second_per_gpu:,.0f}" for p in by_gpu.values())
        lines.append(
            f"| `{teacher}` | `{student}` | {m.teacher_params / 1e6:.0f} / {m.student_params / 1e6:.0f} "
            f"| {any_plan.flops_per_image / 1e9:.1f} | {100 * any_plan.teacher_share:.0f}% "
            f"| {any_plan.fixed_memory_bytes / 2**30:.2f} | {m.activation_bytes_per_image / 2**20:.1f} "
            f"| {any_plan.memory_bytes / 2**30:.1f} | {speeds} | {100 * leap_column(m):.1f}% |"
        )
    lines += [
        "",
        "An epoch of ImageNet-100 (126,689 training images) at a rate of R images/s takes 126,689 / R seconds; "
        "ImageNet-1k (1,281,167 images) ten times as long.",
        "",
        "## Before you train: `leapkd plan`",
        "",
        "`leapkd plan` makes this estimate for one configuration: teacher, student, image size, batch per GPU, "
        "training images (`--images N`, or `--data` with a built-in dataset, an image folder, `imagenet-1k` or "
        "`imagenet-100`), epochs, method, GPU kind (`h200`, `h100`, `a100`, `l4`) and count; `--json` for "
        "machine-readable output. The MFU is **assumed (35% of the dense peak), not measured**, until the H200 "
        "run (`bench/gpu.py`, docs/benchmarks/gpu.json) measures it; `--mfu` takes your own figure. With its "
        "defaults (DINOv2 ViT-L/14 -> `vit-small`, 224 px, batch 128, ImageNet-1k, 100 epochs, `leap`, one H200):",
        "",
        "```text",
        "$ leapkd plan",
        example,
        "```",
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
        rows.append((teacher, student, *plans(teacher, student)))
    print("running leapkd plan", flush=True)
    args.out.write_text(page(rows, default_plan_output()))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
