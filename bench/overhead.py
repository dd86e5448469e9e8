"""Engine overhead, metric cost and the early-exit curve, measured side by side in one process.

Usage: python bench/overhead.py [--steps 20] [--batch-size 32] [--image-size 112]
Prints the figures and writes docs/results/overhead.json.

- bare loop: a plain PyTorch loop doing the engine's compute for one step (teacher forward
  to depth L without gradients, student forward, projector + MSE, backward, clipping,
  AdamW step) on the same data; seconds per step after 3 warm-up steps;
- engine: `leapkd.distill(method="fixed")` run for N1 and N2 steps inside one epoch;
  seconds per step = (wall(N2) - wall(N1)) / (N2 - N1), which removes start-up costs;
- metric share: the engine's measured metric seconds over its wall seconds (the bare loop
  computes no metric, so the overhead is also given without the metric's seconds);
- early-exit curve: the bare loop's step time with the teacher stopped at block b, for
  b = 1..L, relative to b = L.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leapkd.data import build_dataset
from leapkd.distill import distill
from leapkd.models import freeze, load_backbone

TEACHER, STUDENT = "dinov2-vits14-imgfocus", "vit-nano"


def bare_step_seconds(depth: int, batches: list[torch.Tensor], teacher, student, projector, opt) -> float:
    """Mean seconds of one plain training step with the teacher run to `depth`."""

    def step(images: torch.Tensor) -> None:
        with torch.no_grad():
            target = teacher.patch_tokens(teacher.forward_to(images, depth))
        tokens = student(images)
        loss = F.mse_loss(projector(student.patch_tokens(tokens)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*student.parameters(), *projector.parameters()], 1.0)
        opt.step()

    for images in batches[:3]:
        step(images)
    start = time.perf_counter()
    for images in batches[3:]:
        step(images)
    return (time.perf_counter() - start) / (len(batches) - 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=112)
    args = p.parse_args()
    bs, size = args.batch_size, args.image_size

    torch.manual_seed(0)
    teacher = freeze(load_backbone(TEACHER, size))
    student = load_backbone(STUDENT, size, patch_size=teacher.patch_size)
    projector = torch.nn.Linear(student.embed_dim, teacher.embed_dim)
    opt = torch.optim.AdamW([*student.parameters(), *projector.parameters()], lr=5e-4)
    ds = build_dataset("fashion-mnist", "train", size, augment=True, subset_per_class=100, seed=0)
    n = args.steps + 3
    batches = [torch.stack([ds[(i * bs + j) % len(ds)][0] for j in range(bs)]) for i in range(n)]

    L = teacher.num_blocks
    curve = {b: bare_step_seconds(b, batches, teacher, student, projector, opt) for b in range(1, L + 1)}
    bare = curve[L]

    walls = {}
    with tempfile.TemporaryDirectory() as out:
        for steps in (10, 10 + args.steps):
            r = distill(method="fixed", max_steps=steps, epochs=1, subset_per_class=100, batch_size=bs,
                        image_size=size, output_dir=out, name=f"s{steps}", progress=False)  # fmt: skip
            walls[steps] = r.summary
    long, short = walls[10 + args.steps], walls[10]
    engine = (long["wall_seconds"] - short["wall_seconds"]) / args.steps
    metric = (long["metric_seconds"] - short["metric_seconds"]) / args.steps
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "config": {
            "teacher": TEACHER,
            "student": STUDENT,
            "image_size": size,
            "batch_size": bs,
            "timed_steps": args.steps,
        },  # fmt: skip
        "bare_loop_seconds_per_step": round(bare, 4),
        "engine_seconds_per_step": round(engine, 4),
        "engine_overhead": round(engine / bare - 1, 4),
        "engine_overhead_without_metric": round((engine - metric) / bare - 1, 4),
        "metric_share_of_step": round(long["metric_seconds"] / long["wall_seconds"], 4),
        "early_exit_step_time_relative_to_last_block": {b: round(t / bare, 3) for b, t in curve.items()},
        "early_exit_seconds_per_step": {b: round(t, 4) for b, t in curve.items()},
    }
    print(json.dumps(result, indent=2))
    path = Path(__file__).resolve().parent.parent / "docs" / "results" / "overhead.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
