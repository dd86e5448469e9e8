"""Plots of a run, drawn from its metrics.csv (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from leapkd.disk import write_atomic  # noqa: E402
from leapkd.edge import EdgeRow, front_marks  # noqa: E402
from leapkd.errors import LeapkdError  # noqa: E402
from leapkd.summary import RunSummary  # noqa: E402


def plot_curriculum(
    rows: Sequence[dict[str, Any]],
    num_blocks: int,
    path: Path,
    threshold: float | None = None,
    level_ups: Sequence[int] = (),
) -> Path:
    """Target block (steps) and progress metric over steps, level-ups marked.

    `level_ups` are the steps at which the target moved (from summary.json; they include
    moves at epoch ends, which no metrics row shows until the next step).
    """
    steps = [r["step"] for r in rows]
    fig, ax_block = plt.subplots(figsize=(9, 4.2), dpi=110)
    ax_block.step(steps, [r["target_block"] for r in rows], where="post", color="tab:blue", lw=2, label="target block")
    ax_block.set_xlabel("optimizer step")
    ax_block.set_ylabel("teacher target block", color="tab:blue")
    ax_block.set_ylim(0.5, num_blocks + 0.5)
    ax_block.set_yticks(range(1, num_blocks + 1))
    ax_metric = ax_block.twinx()
    ax_metric.plot(steps, [r["metric"] for r in rows], color="tab:orange", lw=1, alpha=0.8, label="metric (per step)")
    emas = [r.get("ema") for r in rows]
    if any(e is not None and e != r["metric"] for e, r in zip(emas, rows)):  # alpha < 1
        ax_metric.plot(
            steps, [e if e is not None else float("nan") for e in emas], color="tab:red", lw=1, ls="--", label="EMA"
        )
    if threshold is not None:
        ax_metric.axhline(threshold, color="grey", ls=":", lw=1, label=f"threshold {threshold:g}")
    ax_metric.set_ylabel("progress metric", color="tab:orange")
    ax_metric.set_ylim(0, 1.02)
    changes = sorted(set(level_ups))
    for s in changes:
        ax_block.axvline(s, color="tab:green", lw=0.8, alpha=0.6)
    handles = ax_block.get_legend_handles_labels()[0] + ax_metric.get_legend_handles_labels()[0]
    labels = ax_block.get_legend_handles_labels()[1] + ax_metric.get_legend_handles_labels()[1]
    if changes:
        handles.append(plt.Line2D([], [], color="tab:green", lw=0.8))
        labels.append(f"level-up ({len(changes)})")
    ax_block.legend(handles, labels, loc="lower right", fontsize=8)
    ax_block.set_title("Curriculum: target block and progress metric")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loss(rows: Sequence[dict[str, Any]], path: Path, parts: Sequence[str]) -> Path:
    """Loss and the method's declared parts (metrics.csv columns) over steps, log scale."""
    fig = draw_loss(rows, parts)
    return save_figure(fig, path)


def draw_loss(rows: Sequence[dict[str, Any]], parts: Sequence[str]) -> plt.Figure:
    """The loss figure; a single part is the loss itself and is not drawn twice."""
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=110)
    for key in ["loss", *(parts if len(parts) > 1 else [])]:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(
                steps, [v if v is not None else float("nan") for v in values], lw=1.5 if key == "loss" else 1, label=key
            )
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("Training loss")
    fig.tight_layout()
    return fig


def plot_accounting(summary: RunSummary, path: Path) -> Path:
    """Training FLOPs and seconds of the run, teacher vs student, beside the fixed-target baseline."""
    fig, (ax_f, ax_t) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    t, s, base = summary.teacher_flops / 1e12, summary.student_flops / 1e12, summary.baseline_flops / 1e12
    ax_f.barh(["this run", "fixed target"], [t, base - s], color="tab:blue", label="teacher")
    ax_f.barh(["this run", "fixed target"], [s, s], left=[t, base - s], color="tab:orange", label="student")
    ax_f.set_xlabel("training TFLOP (measured)")
    ax_f.set_title(f"FLOPs: saving {100 * summary.flops_saving:.1f}%")
    ax_f.legend(fontsize=8, loc="lower right")
    parts = [
        ("teacher", summary.teacher_seconds, "tab:blue"),
        ("student", summary.student_seconds, "tab:orange"),
        ("metric", summary.metric_seconds, "tab:green"),
    ]
    if summary.evaluation:
        parts.append(("evaluation", summary.evaluation.seconds, "tab:purple"))
    left = 0.0
    for label, seconds, colour in parts:
        ax_t.barh(["this run"], [seconds], left=[left], color=colour, label=label)
        left += seconds
    other = max(0.0, summary.wall_seconds - left)
    ax_t.barh(["this run"], [other], left=[left], color="lightgrey", label="data, checkpoints, other")
    ax_t.set_xlabel("seconds (wall clock)")
    ax_t.set_title(f"time: {summary.wall_seconds:.0f} s wall")
    ax_t.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_evaluation(
    history: Sequence[dict[str, Any]],
    metric: str,
    rows: Sequence[dict[str, Any]],
    level_ups: Sequence[int],
    path: Path,
) -> Path:
    """The evaluation figures during training against optimizer steps, training FLOPs and
    wall time; `metric` (the one that picks the best student) in bold with its best marked,
    level-ups (steps, placed on the other axes through the metrics rows) as green lines."""
    figures = [k for k in history[0] if k not in ("step", "flops", "wall_seconds", "seconds")]
    axes_of = {
        "step": ("optimizer steps", 1.0),
        "flops": ("training TFLOP", 1e12),
        "wall_seconds": ("wall seconds", 1.0),
    }
    by_step = {int(r["step"]): r for r in rows}
    best = max(history, key=lambda e: e[metric])
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2), dpi=110, sharey=True)
    for ax, (key, (label, scale)) in zip(axes, axes_of.items()):
        x = [e[key] / scale for e in history]
        for name in figures:
            bold = name == metric
            ax.plot(
                x,
                [100 * e[name] for e in history],
                marker="o" if bold else None,
                ms=3,
                lw=2 if bold else 1,
                alpha=1 if bold else 0.6,
                label=name,
            )
        ax.plot(
            [best[key] / scale],
            [100 * best[metric]],
            marker="*",
            ms=14,
            color="gold",
            mec="black",
            ls="",
            label=f"best {metric}",
        )
        for step in level_ups:
            row = by_step.get(int(step))
            position = step if key == "step" else (row[key] / scale if row and row.get(key) is not None else None)
            if position is not None:
                ax.axvline(position, color="tab:green", lw=0.8, alpha=0.5)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Evaluation during training (green: level-ups)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path)


def plot_edge(rows: Sequence[EdgeRow], quality: str, path: Path) -> Path:
    """`quality` (%) against 1-thread median CPU latency (ms) of several students, each labelled;
    the Pareto front (no other student both faster and better) highlighted and joined by a step
    line. Students without the figure or a 1-thread latency are left out."""
    points = [
        (one.median_ms, 100 * row.quality[quality], row.name, mark)
        for row, mark in zip(rows, front_marks(list(rows), quality))
        if quality in row.quality and (one := row.latency_at(1)) is not None
    ]
    if not points:
        raise LeapkdError(
            f"no student has both '{quality}' and a 1-thread latency to plot",
            "measure the students' latency (`latency`) and evaluate them first",
        )
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", s=28, label="student")
    front = sorted((x, y) for x, y, _, mark in points if mark)
    ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:red", lw=1.5, label="Pareto front")
    ax.scatter(
        [x for x, _ in front], [y for _, y in front], marker="*", s=160, color="gold", edgecolors="black", zorder=3
    )
    for x, y, name, _ in points:
        ax.annotate(name, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("latency, 1 thread, batch 1 (ms, median)")
    ax.set_ylabel(f"{quality} (%)")
    ax.margins(x=0.15, y=0.12)  # room for the labels at the edges
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Students on the CPU: {quality} against latency")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_finetune(curves: dict[str, Sequence[float]], path: Path) -> Path:
    """Validation top-1 (%) after each fine-tuning epoch, one line per arm (the model, each baseline)."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, curve in curves.items():
        epochs = range(1, len(curve) + 1)
        ax.plot(epochs, [100 * v for v in curve], marker="o", lw=2 if name == "model" else 1.2, label=name)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Fine-tuned whole: the model against its baselines")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write the figure atomically (its format from the suffix), then close it."""
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path
