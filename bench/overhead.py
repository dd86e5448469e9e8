"""Engine overhead, metric cost and the early-exit curve, measured side by side in one process.

Usage: python bench/overhead.py [--steps 10] [--rounds 3] [--batch-size 32] [--image-size 112] [--out FILE]
Prints the figures and writes them as JSON (default docs/benchmarks/overhead.json).
`bench/compare.py` runs the same measurement as part of the full benchmark.

- bare loop: a plain PyTorch loop doing the engine's compute for one step on the same data
  pipeline (same dataset, augmentation, sampler and worker count): teacher forward to
  depth b without gradients, student forward, projector + MSE, backward, clipping, AdamW
  step, then the linear CKA of the projected tokens against the target (the engine's
  progress metric); seconds per step after warm-up;
- engine: `leapkd.distill(method="fixed")` inside one epoch; seconds per step from the
  per-step wall_seconds in its metrics.csv after the same warm-up (start-up excluded);
- metric share: the engine's measured metric seconds per step over its step time;
- every figure is the median over rounds, each round timing all depths (shuffled) and
  the engine, so a shared machine's drifts hit them alike;
- early-exit curve: the bare loop's step time with the teacher stopped at block b, for
  b = 1..L, relative to b = L.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from leapkd.data import build_dataset
from leapkd.data.sampling import seeded_loader
from leapkd.data.transforms import normalize
from leapkd.hardware import autocast_dtype
from leapkd.metrics import linear_cka
from leapkd.models import PRESETS, freeze, load_backbone
from leapkd.rundir import read_metrics
from leapkd.training import distill

TEACHER, STUDENT, DATA = "dinov2-vits14-imgfocus", "vit-nano", "fashion-mnist"
WARMUP = 3


class BareLoop:
    """The engine's per-step compute written as a plain PyTorch loop, on any device and precision.

    The same data pipeline as `distill` (dataset, augmentation, seeded sampler and loader
    of uint8 batches, normalised on the device, pinned memory on CUDA), the teacher stored
    in the compute dtype under mixed precision (as `distill` stores it), autocast around the
    forward passes, projector + MSE in float32, backward, clipping, AdamW (fused in full
    precision, as the engine's), and the CKA metric's one host transfer per step.
    """

    def __init__(
        self,
        image_size: int,
        batch_size: int,
        subset_per_class: int | None,
        num_workers: int,
        *,
        teacher: str = TEACHER,
        student: str = STUDENT,
        data: str = DATA,
        device: str = "cpu",
        precision: str = "32",
        teacher_kwargs: dict[str, Any] | None = None,
    ) -> None:
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.dtype = autocast_dtype(precision)
        frozen = freeze(load_backbone(teacher, image_size, model_kwargs=teacher_kwargs))
        patch = frozen.patch_size if student in PRESETS else None
        self.student = load_backbone(student, image_size, patch_size=patch).to(self.device)
        self.teacher = frozen.to(self.device, dtype=self.dtype)
        self.projector = torch.nn.Linear(self.student.width, self.teacher.width).to(self.device)
        self.params = [*self.student.parameters(), *self.projector.parameters()]
        fused = precision == "32" and self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.AdamW(self.params, lr=5e-4, fused=fused)
        dataset = build_dataset(data, "train", image_size, augment=True, mean=self.teacher.mean, std=self.teacher.std,
                                subset_per_class=subset_per_class, seed=0, output="uint8")  # fmt: skip
        loader = seeded_loader(dataset, 0, batch_size, num_workers, rank=0, world_size=1,
                               pin_memory=self.device.type == "cuda")  # fmt: skip
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))

    def _autocast(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, depth: int) -> None:
        images = next(self.batches)[0].to(self.device, non_blocking=True)
        images = normalize(images, self.teacher.mean, self.teacher.std)
        with self._autocast():
            with torch.no_grad():
                target = self.teacher.forward_to(images, depth).patches
            projected = self.projector(self.student.forward_to(images, self.student.num_levels).patches)
        loss = F.mse_loss(projected.float(), target.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        float(linear_cka(projected.detach().float(), target.float()))  # the metric's host transfer

    def seconds_per_step(self, depth: int, steps: int, warmup: int = WARMUP) -> float:
        for _ in range(warmup):
            self.step(depth)
        self._synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(depth)
        self._synchronize()
        return (time.perf_counter() - start) / steps

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def engine_seconds_per_step(
    steps: int, image_size: int, batch_size: int, subset_per_class: int, num_workers: int, out: str, name: str
) -> tuple[float, float]:
    """(seconds per step, metric seconds per step) of `leapkd distill --method fixed`.

    The per-step time comes from metrics.csv's wall_seconds between the end of the warm-up
    and the last step, so start-up costs are excluded.
    """
    r = distill(
        method="fixed",
        max_steps=WARMUP + steps,
        epochs=1,
        subset_per_class=subset_per_class,
        batch_size=batch_size,
        image_size=image_size,
        num_workers=num_workers,
        precision="32",  # the bare loop's arithmetic (bench/hardware.py measures bf16)
        output_dir=out,
        name=name,
        progress=False,
    )
    walls = [row["wall_seconds"] for row in read_metrics(r.run_dir / "metrics.csv")]
    return (walls[-1] - walls[WARMUP - 1]) / steps, r.summary.metric_seconds / r.summary.steps


def measure_overhead(
    steps: int = 10, rounds: int = 3, image_size: int = 112, batch_size: int = 32, num_workers: int | None = None
) -> dict[str, Any]:
    """All overhead figures for one configuration (see the module docstring).

    Each round times the bare loop at every depth (in a shuffled order) and the engine;
    figures are medians over rounds, so slow drifts of a shared machine hit all alike.
    """
    workers = 0 if num_workers is None else num_workers  # the loader in-process, like the bare loop's default
    subset = max(100, (WARMUP + steps) * batch_size // 10 + 1)
    bare = BareLoop(image_size, batch_size, subset, workers)
    L = bare.teacher.num_levels
    depths = list(range(1, L + 1))
    per_depth: dict[int, list[float]] = {b: [] for b in depths}
    engine, metric = [], []
    order = random.Random(0)
    with tempfile.TemporaryDirectory() as out:
        for r in range(rounds):
            for b in order.sample(depths, len(depths)):
                per_depth[b].append(bare.seconds_per_step(b, steps))
            e, m = engine_seconds_per_step(steps, image_size, batch_size, subset, workers, out, f"round{r}")
            engine.append(e)
            metric.append(m)
    curve = {b: statistics.median(ts) for b, ts in per_depth.items()}
    last, eng, met = curve[L], statistics.median(engine), statistics.median(metric)
    return {
        "config": {
            "teacher": TEACHER,
            "student": STUDENT,
            "image_size": image_size,
            "batch_size": batch_size,
            "timed_steps": steps,
            "rounds": rounds,
            "num_workers": workers,
        },
        "bare_loop_seconds_per_step": round(last, 4),
        "engine_seconds_per_step": round(eng, 4),
        "engine_overhead": round(eng / last - 1, 4),
        "engine_overhead_by_round": [round(e / b - 1, 4) for e, b in zip(engine, per_depth[L])],
        "metric_seconds_per_step": round(met, 4),
        "metric_share_of_step": round(met / eng, 4),
        "early_exit_step_time_relative_to_last_block": {b: round(curve[b] / last, 3) for b in depths},
        "early_exit_seconds_per_step": {b: round(curve[b], 4) for b in depths},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="repetitions; figures are medians over rounds")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: 0)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs/benchmarks/overhead.json")
    args = p.parse_args()
    result = measure_overhead(args.steps, args.rounds, args.image_size, args.batch_size, args.num_workers)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
