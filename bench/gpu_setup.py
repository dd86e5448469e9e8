"""What the GPU benchmark's parts share: the two scales (the device's and the dry run's), the
time budget, the run context and the folder of real-size JPEGs the loader decodes."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TEACHERS = {"vit_base_patch14_dinov2": "ViT-B/14", "vit_large_patch14_dinov2": "ViT-L/14"}
DEMO_TEACHER = "vit_small_patch14_dinov2"  # the embedded teacher's architecture, built at random init


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark: the device's (FULL) or the CPU dry run's (DRY, same code paths)."""

    name: str
    image_size: int
    batch_size: int
    probe_batches: tuple[int, ...]  # tried largest first; the first that fits is the largest batch
    jpegs: int  # training images (real-size JPEGs), spread over `classes` folders
    jpeg_size: tuple[int, int]  # width, height
    classes: int
    steps: int  # steps of a throughput run; the first `warmup` are not timed
    warmup: int
    probe_steps: int
    probe_warmup: int
    compile_steps: int
    compile_warmup: int
    bare_steps: int
    rounds: int  # engine vs bare loop, interleaved A, B, A, B
    pipeline_workers: tuple[int, ...]
    pipeline_seconds: float  # time window per worker count
    teacher_kwargs: dict[str, dict[str, Any] | None]  # per teacher (None: the real architecture)
    student: str
    num_workers: int | str  # data workers of the training runs
    demo_args: tuple[str, ...]  # added to the README's `leapkd distill`
    eval_per_class: tuple[int, int]  # train, val images per class of `leapkd eval`
    parity_images: int
    matmul_size: int
    matmul_repeats: int
    pytest_targets: tuple[str, ...]
    plan_rows: int  # how many throughput rows get `leapkd plan`'s estimate


FULL = Scale(
    name="full", image_size=224, batch_size=128, probe_batches=(512, 384, 256), jpegs=6144, jpeg_size=(500, 375),
    classes=8, steps=30, warmup=10, probe_steps=12, probe_warmup=4, compile_steps=40, compile_warmup=15,
    bare_steps=25, rounds=2, pipeline_workers=(0, 2, 4, 8, 15), pipeline_seconds=4.0,
    teacher_kwargs={t: None for t in TEACHERS}, student="vit-small", num_workers="auto", demo_args=(),
    eval_per_class=(100, 50), parity_images=64, matmul_size=8192, matmul_repeats=10, pytest_targets=("tests",),
    plan_rows=4,
)  # fmt: skip
DRY = Scale(
    name="dry-run", image_size=28, batch_size=8, probe_batches=(16,), jpegs=48, jpeg_size=(80, 60), classes=2,
    steps=4, warmup=1, probe_steps=3, probe_warmup=1, compile_steps=3, compile_warmup=1, bare_steps=2, rounds=1,
    pipeline_workers=(0, 1), pipeline_seconds=0.5,
    teacher_kwargs={
        "vit_base_patch14_dinov2": {"depth": 4, "embed_dim": 32, "num_heads": 2},
        "vit_large_patch14_dinov2": {"depth": 4, "embed_dim": 48, "num_heads": 2},
    },
    student="vit-nano", num_workers=0,
    demo_args=("--max_steps", "3", "--image_size", "28", "--num_workers", "0",
               "--teacher_kwargs", "{depth: 2, embed_dim: 32, num_heads: 2}"),
    eval_per_class=(8, 4), parity_images=8, matmul_size=256, matmul_repeats=5, pytest_targets=("tests/gpu",),
    plan_rows=1,
)  # fmt: skip


class Budget:
    """The wall-clock budget of the whole benchmark: parts and their loops ask before starting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


@dataclass
class Context:
    """One benchmark invocation: its scale, device, folders, budget and what earlier parts found."""

    scale: Scale
    accelerator: str  # "cuda" on the device, "cpu" in the dry run
    work: Path  # runs, images, caches (temporary)
    budget: Budget
    fmnist_root: str | None = None  # directory of Fashion-MNIST's .gz files (None: the system package)
    baseline_src: str | None = None
    peak_flops: float | None = None  # the measured bf16 matrix-product rate (part b), FLOP/s
    results: dict[str, Any] = field(default_factory=dict)
    _jpegs: Path | None = None

    @property
    def cuda(self) -> bool:
        return self.accelerator == "cuda"

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def jpegs(self) -> Path:
        """The labelled folder of real-size JPEGs (made on first use)."""
        if self._jpegs is None:
            root = self.work / "jpegs"
            info = make_jpeg_folder(root, self.scale.jpegs, self.scale.jpeg_size, self.scale.classes)
            self.results.setdefault("dataset", {}).update(info)
            self._jpegs = root
        return self._jpegs

    def run_kwargs(self, name: str, teacher: str, batch: int, steps: int, **extra: Any) -> dict[str, Any]:
        """`leapkd.distill` keys of a throughput run: `fixed`, random-init teacher, bf16-mixed, JPEG folder."""
        kwargs = self.scale.teacher_kwargs.get(teacher)
        return {
            "method": "fixed",
            "teacher": teacher,
            **({"teacher_kwargs": kwargs} if kwargs else {}),
            "allow_random_teacher": True,
            "student": self.scale.student,
            "data": str(self.jpegs()),
            "image_size": self.scale.image_size,
            "batch_size": batch,
            "max_steps": steps,
            "epochs": 1000,
            "precision": "bf16-mixed",
            "num_workers": self.scale.num_workers,
            "eval_every": None,
            "output_dir": str(self.runs),
            "name": name,
            "overwrite": True,
            "progress": False,
            "accelerator": self.accelerator,
            **extra,
        }


def _write_jpeg(job: tuple[str, int, tuple[int, int]]) -> int:
    """One JPEG of random, photo-like content (a smooth random colour field plus grain), quality 90."""
    path, seed, (width, height) = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 6, smooth.shape).astype(np.int16)
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
    return os.path.getsize(path)


def make_jpeg_folder(root: Path, count: int, size: tuple[int, int], classes: int) -> dict[str, Any]:
    """root/train/<class>/ with `count` JPEGs and root/val/<class>/ with 4 per class, written by
    one process per core; returns what was made."""
    start = time.perf_counter()
    jobs = []
    for split, n in (("train", count), ("val", 4 * classes)):
        for c in range(classes):
            (root / split / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        offset = 0 if split == "train" else count
        jobs += [(str(root / split / f"class{i % classes:02d}" / f"{i:06d}.jpg"), offset + i, size) for i in range(n)]
    processes = max(1, min(len(os.sched_getaffinity(0)), 32))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        sizes = pool.map(_write_jpeg, jobs, chunksize=16)
    return {
        "train_images": count,
        "val_images": 4 * classes,
        "classes": classes,
        "jpeg_size": f"{size[0]}x{size[1]}",
        "mean_jpeg_kib": sum(sizes) / len(sizes) / 1024,
        "make_seconds": time.perf_counter() - start,
        "make_processes": processes,
    }
