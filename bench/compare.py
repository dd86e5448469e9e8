"""The method benchmark: fixed target vs LEAP vs SpectralKD vs LEAP + spectral loss.

Usage:
  python bench/compare.py            # 3 seeds x 4 methods x 250 steps + overhead, ~1 hour on 2 cores
  python bench/compare.py --quick    # smoke test: 1 seed, tiny runs, a few minutes

Every method distils the embedded DINOv2 ViT-S/14 teacher into the same `vit-nano`
student on the built-in Fashion-MNIST, with the same steps, data order and seed. Each run
saves its student every `steps / 5` steps; every snapshot is evaluated with kNN and the
final student also with the linear probe (`leapkd eval`'s protocols), giving kNN top-1
against measured training FLOPs and wall seconds. Runs are executed one after another,
methods interleaved within each seed, so machine load drifts over all methods alike.

Writes <out>/benchmarks.md and <out>/benchmarks/ (results.json, overhead.json, plots).
Finished runs under --runs-dir are reused when their configuration matches, so an
interrupted benchmark continues where it stopped (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import measure_overhead  # noqa: E402

from leapkd.config import load_config  # noqa: E402
from leapkd.distill import distill, resolve_config  # noqa: E402
from leapkd.eval.runner import evaluate  # noqa: E402
from leapkd.models import EMBEDDED_TEACHER  # noqa: E402
from leapkd.rundir import read_metrics  # noqa: E402

METHODS: dict[str, dict[str, Any]] = {
    "fixed": {"method": "fixed"},
    "leap": {"method": "leap"},
    "spectralkd": {"method": "spectralkd"},
    "leap+spectral": {"method": "leap", "spectral_weight": 0.2},
}
PAPER = {"flops_saving": 0.251, "time_saving": 0.21, "points": 12.24}


@dataclass(frozen=True)
class Setting:
    """What one benchmark runs: the distillation runs, their evaluation and the overhead test."""

    seeds: tuple[int, ...]
    image_size: int
    subset_per_class: int
    batch_size: int
    epochs: int
    snapshots: int  # evaluated points per run, besides step 0
    eval_train_per_class: int
    eval_val_per_class: int
    overhead_steps: int
    overhead_rounds: int

    @property
    def steps(self) -> int:
        return self.subset_per_class * 10 // self.batch_size * self.epochs

    def distill_config(self, label: str, seed: int) -> dict[str, Any]:
        return {
            "teacher": EMBEDDED_TEACHER,
            "student": "vit-nano",
            "data": "fashion-mnist",
            "image_size": self.image_size,
            "subset_per_class": self.subset_per_class,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": seed,
            "snapshot_every": max(1, self.steps // self.snapshots),
            **METHODS[label],
        }


DEFAULT = Setting((0, 1, 2), 112, 80, 32, 10, 5, 100, 50, overhead_steps=10, overhead_rounds=3)
QUICK = Setting((0,), 56, 8, 16, 2, 2, 10, 5, overhead_steps=2, overhead_rounds=1)


# ----- running ------------------------------------------------------------------------------
def run_name(label: str, seed: int) -> str:
    return f"{label.replace('+', '-')}-s{seed}"


def _finished_run(run_dir: Path, cfg: dict[str, Any]) -> bool:
    """True when run_dir holds a completed run of exactly this configuration."""
    summary, config = run_dir / "summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and config.is_file() and (run_dir / "student.safetensors").is_file()):
        return False
    if not json.loads(summary.read_text()).get("completed"):
        return False
    wanted = resolve_config(None, {**cfg, "name": run_dir.name, "output_dir": str(run_dir.parent)})
    return load_config(config).model_dump() == wanted.model_dump()


def run_all(setting: Setting, runs_dir: Path, fresh: bool, progress: bool) -> list[Path]:
    """Every (seed, method) run, methods interleaved within each seed."""
    dirs = []
    for seed in setting.seeds:
        for label in METHODS:
            cfg = setting.distill_config(label, seed)
            run_dir = runs_dir / run_name(label, seed)
            if not fresh and _finished_run(run_dir, cfg):
                print(f"reusing {run_dir}", flush=True)
            else:
                print(f"running {label}, seed {seed} -> {run_dir}", flush=True)
                distill(cfg, name=run_dir.name, output_dir=str(runs_dir), overwrite=True, progress=progress)
            dirs.append(run_dir)
    return dirs


# ----- evaluating ---------------------------------------------------------------------------
def _snapshot_meta(path: Path) -> dict[str, Any]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(meta[k]) for k in ("step", "flops", "wall_seconds")}


def evaluate_run(run_dir: Path, setting: Setting, label: str) -> dict[str, Any]:
    """kNN at every snapshot and kNN + linear probe for the final student."""
    sizes = {"train_per_class": setting.eval_train_per_class, "val_per_class": setting.eval_val_per_class}
    curve = []
    for snap in sorted((run_dir / "snapshots").glob("step-*.safetensors")):
        out = run_dir / "snapshots" / snap.stem
        knn = evaluate(str(snap), protocols=("knn",), out_dir=out, progress=False, **sizes)
        curve.append({**_snapshot_meta(snap), "knn_top1": knn["knn"]["top1"]})
    final = evaluate(str(run_dir), protocols=("knn", "linear"), progress=False, **sizes)
    s = json.loads((run_dir / "summary.json").read_text())
    last = s["teacher"]["blocks"]
    at_last = [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv") if r["target_block"] == last]
    return {
        "method": label,
        "seed": load_config(run_dir / "config.yaml").seed,
        "run_dir": str(run_dir),
        "knn_top1": final["knn"]["top1"],
        "linear_top1": final["linear"]["top1"],
        "steps": s["steps"],
        "training_flops": s["teacher_flops"] + s["student_flops"],
        "teacher_flops": s["teacher_flops"],
        "student_flops": s["student_flops"],
        "baseline_flops": s["baseline_flops"],
        "flops_saving": s["flops_saving"],
        "wall_seconds": s["wall_seconds"],
        "teacher_seconds": s["teacher_seconds"],
        "student_seconds": s["student_seconds"],
        "metric_seconds": s["metric_seconds"],
        "final_block": s["final_block"],
        "last_block_from_step": at_last[0] if at_last else None,
        "level_ups": s["level_ups"],
        "curve": curve,
    }


def evaluate_teacher(setting: Setting, out: Path) -> dict[str, float]:
    r = evaluate(
        EMBEDDED_TEACHER,
        protocols=("knn", "linear"),
        image_size=setting.image_size,
        train_per_class=setting.eval_train_per_class,
        val_per_class=setting.eval_val_per_class,
        out_dir=out,
        progress=False,
    )
    return {"knn_top1": r["knn"]["top1"], "linear_top1": r["linear"]["top1"]}


# ----- aggregating --------------------------------------------------------------------------
def mean_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def verdict(diff: float, spread: float | None) -> str:
    """A difference counts only when it is larger than the seeds' spread."""
    if spread is None:
        return "one seed: untested"
    if abs(diff) <= spread:
        return "no difference"
    return "better" if diff > 0 else "worse"


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: mean and spread of every figure; kNN/linear and wall time against fixed."""
    fixed_wall = {r["seed"]: r["wall_seconds"] for r in runs if r["method"] == "fixed"}
    table: dict[str, dict[str, Any]] = {}
    for label in METHODS:
        rs = [r for r in runs if r["method"] == label]
        row: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for key in ("knn_top1", "linear_top1", "training_flops", "flops_saving", "wall_seconds", "final_block"):
            row[key] = mean_spread([float(r[key]) for r in rs])
        savings = [1 - r["wall_seconds"] / fixed_wall[r["seed"]] for r in rs]
        row["wall_saving"] = mean_spread(savings)
        row["wall_per_flops_saving"] = (
            row["wall_saving"][0] / row["flops_saving"][0] if row["flops_saving"][0] > 0 else None
        )
        table[label] = row
    for row in table.values():
        for key in ("knn_top1", "linear_top1"):
            (m, s), (fm, fs) = row[key], table["fixed"][key]
            spread = None if s is None or fs is None else max(s, fs)
            row[f"{key}_vs_fixed"] = {"diff": m - fm, "spread": spread, "verdict": verdict(m - fm, spread)}
    return table


# ----- plots and the page ---------------------------------------------------------------------
COLORS = {"fixed": "tab:gray", "leap": "tab:blue", "spectralkd": "tab:orange", "leap+spectral": "tab:green"}


def plot_time_to_accuracy(runs: list[dict[str, Any]], teacher_knn: float, path: Path) -> None:
    """kNN top-1 against training FLOPs and against wall seconds; mean over seeds, bars = spread."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for label in METHODS:
        curves = [r["curve"] for r in runs if r["method"] == label]
        points = min(len(c) for c in curves)
        xs_f = [statistics.fmean(c[i]["flops"] for c in curves) / 1e12 for i in range(points)]
        xs_w = [statistics.fmean(c[i]["wall_seconds"] for c in curves) for i in range(points)]
        ys = [mean_spread([100 * c[i]["knn_top1"] for c in curves]) for i in range(points)]
        err = [s or 0.0 for _, s in ys]
        for ax, xs in zip(axes, (xs_f, xs_w)):
            ax.errorbar(xs, [m for m, _ in ys], yerr=err, marker="o", ms=4, capsize=3, label=label, color=COLORS[label])
    for ax, xlabel in zip(axes, ("training FLOPs (TFLOP, teacher + student)", "wall seconds of training")):
        ax.axhline(100 * teacher_knn, ls="--", color="black", lw=1, label="teacher")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kNN top-1 (%)")
    axes[0].legend(loc="upper left", ncol=2)
    fig.suptitle("Time to accuracy: student kNN top-1 along training (mean over seeds, bars: std)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_early_exit(overhead: dict[str, Any], flops_rel: list[float], path: Path) -> None:
    curve = overhead["early_exit_step_time_relative_to_last_block"]
    blocks = [int(b) for b in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(blocks, [curve[b] for b in curve], marker="o", label="measured step time")
    ax.plot(blocks, flops_rel, ls="--", color="gray", label="step FLOPs")
    ax.set_xlabel("teacher depth b (blocks run)")
    ax.set_ylabel("relative to b = L")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Early exit: one training step at teacher depth b")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu = ""
    if Path("/proc/cpuinfo").is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def pct(x: float | None, spread: float | None = None, digits: int = 1) -> str:
    if x is None:
        return "–"
    text = f"{100 * x:.{digits}f}"
    return f"{text} ± {100 * spread:.{digits}f}" if spread is not None else text


def _diff(entry: dict[str, Any]) -> str:
    return f"{100 * entry['diff']:+.1f} ({entry['verdict']})"


def render(results: dict[str, Any]) -> str:
    """docs/benchmarks.md from the results."""
    t, st, ov = results["table"], results["setting"], results["overhead"]
    lines = [
        "# Benchmarks",
        "",
        "Every figure on this page was measured by one command, on the machine below:",
        "",
        f"    {results['command']}",
        "",
        f"- Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"torch {results['machine']['torch']} ({results['machine']['torch_threads']} threads), "
        f"Python {results['machine']['python']}; load average at start "
        f"{results['machine']['load_average_at_start']}. Finished {results['finished']} "
        f"after {results['total_minutes']:.0f} minutes, code at commit {results.get('commit') or 'unknown'}.",
        f"- Teacher: the embedded DINOv2 ViT-S/14 (`{EMBEDDED_TEACHER}`); student `vit-nano` "
        f"(6 blocks, width 128, patch 14); Fashion-MNIST, {st['subset_per_class']} training images per class, "
        f"{st['image_size']} px, batch {st['batch_size']}, {results['steps']} steps ({st['epochs']} epochs); "
        f"seeds {', '.join(map(str, st['seeds']))}. Everything else is the `leapkd distill` default.",
        "- Methods: `fixed` (teacher's last block), `leap` (the curriculum), `spectralkd` "
        "(spectral loss on the default block pairs), `leap+spectral` (`leap` with `spectral_weight 0.2`).",
        f"- Evaluation: kNN (k = 20, cosine, CLS) and linear probe on a seeded "
        f"{st['eval_train_per_class']}/{st['eval_val_per_class']} per-class train/val split, "
        f"{st['image_size']} px. Teacher at the same size: kNN {pct(results['teacher']['knn_top1'])}, "
        f"linear {pct(results['teacher']['linear_top1'])}.",
        "- Mean ± sample standard deviation over seeds. A difference to `fixed` is called a "
        "difference only when it is larger than the larger of the two spreads; otherwise the "
        "table says *no difference*.",
        "",
        "## Results",
        "",
        "| method | kNN top-1 | vs fixed | linear top-1 | vs fixed | training TFLOP | FLOPs saving "
        "| wall s | wall saving | wall / FLOPs saving | final block |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in t.items():
        knn_vs = "–" if label == "fixed" else _diff(r["knn_top1_vs_fixed"])
        lin_vs = "–" if label == "fixed" else _diff(r["linear_top1_vs_fixed"])
        tf, tf_s = r["training_flops"]
        wall, wall_s = r["wall_seconds"]
        ratio = r["wall_per_flops_saving"]
        lines.append(
            f"| `{label}` | {pct(*r['knn_top1'])} | {knn_vs} | {pct(*r['linear_top1'])} | {lin_vs} "
            f"| {tf / 1e12:.2f} | {pct(*r['flops_saving'])} "
            f"| {wall:.0f}{f' ± {wall_s:.0f}' if wall_s is not None else ''} "
            f"| {pct(*r['wall_saving']) if label != 'fixed' else '–'} "
            f"| {f'{ratio:.2f}' if ratio is not None else '–'} | {r['final_block'][0]:.1f} |"
        )
    lines += [
        "",
        "Wall seconds are the training loop only (no model loading or evaluation); the wall "
        "saving is against the `fixed` run of the same seed, measured in the same benchmark. "
        "FLOPs are counted by torch's FlopCounterMode (matrix products, attention, convolutions); "
        "the spectral loss's FFTs and channel pooling are a negligible number of FLOPs (none are "
        "counted for the FFT) but many small memory-bound operations, so they show in wall time "
        "(the student seconds of the spectral runs) and not in FLOPs.",
        "",
        "![kNN top-1 against training FLOPs and wall time](benchmarks/time_to_accuracy.png)",
        "",
        *time_to_reach(results["runs"], t["fixed"]["knn_top1"][0]),
        "",
        "Per run (the curve points are in `benchmarks/results.json`):",
        "",
        "| run | kNN | linear | TFLOP | FLOPs saving | wall s | teacher / student / metric s | level-ups at steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['method']} s{r['seed']} | {pct(r['knn_top1'])} | {pct(r['linear_top1'])} "
            f"| {r['training_flops'] / 1e12:.2f} | {pct(r['flops_saving'])} | {r['wall_seconds']:.0f} "
            f"| {r['teacher_seconds']:.0f} / {r['student_seconds']:.0f} / {r['metric_seconds']:.1f} "
            f"| {', '.join(map(str, r['level_ups'])) or '–'} |"
        )
    curve = ov["early_exit_step_time_relative_to_last_block"]
    lines += [
        "",
        "## Overhead",
        "",
        f"One configuration ({ov['config']['image_size']} px, batch {ov['config']['batch_size']}, "
        f"{ov['config']['timed_steps']} timed steps, {ov['config']['num_workers']} data worker(s)), "
        f"measured side by side in one process (`bench/overhead.py`, also run by this command); medians "
        f"over {ov['config']['rounds']} rounds, each timing every teacher depth in a shuffled order and the engine. "
        f"Engine overhead per round: {', '.join(pct(x) + '%' for x in ov['engine_overhead_by_round'])}.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| bare PyTorch loop, same compute and data pipeline | {ov['bare_loop_seconds_per_step']:.3f} s/step | |",
        f"| leapkd engine (`distill --method fixed`) | {ov['engine_seconds_per_step']:.3f} s/step | |",
        f"| engine overhead over the bare loop | {pct(ov['engine_overhead'])}% | ≤ 5% |",
        f"| metric (online CKA) share of the engine's step | {pct(ov['metric_share_of_step'])}% | ≤ 2% |",
        f"| LEAP wall saving / FLOPs saving (table above) | {_ratio_text(t['leap'])} | ≥ 0.90 |",
        "",
        *ratio_breakdown(results["runs"]),
        "Early exit: the step time with the teacher stopped at block b, relative to b = L "
        "(dashed: the step's FLOPs, relative):",
        "",
        "| b | " + " | ".join(str(b) for b in curve) + " |",
        "|---|" + "---|" * len(curve),
        "| time | " + " | ".join(f"{v:.2f}" for v in curve.values()) + " |",
        "| FLOPs | " + " | ".join(f"{v:.2f}" for v in results["early_exit_flops_relative"]) + " |",
        "",
        "![early-exit curve](benchmarks/early_exit.png)",
        "",
        *paper_section(results),
    ]
    return "\n".join(lines)


def paper_section(results: dict[str, Any]) -> list[str]:
    """Where these figures stand against the paper's, and why the scales differ."""
    t, runs, paper = results["table"], results["runs"], results["paper"]
    leap = t["leap"]
    fixed_runs = [r for r in runs if r["method"] == "fixed"]
    leap_runs = [r for r in runs if r["method"] == "leap"]
    teacher_flops_share = statistics.fmean(r["teacher_flops"] / r["training_flops"] for r in fixed_runs)
    teacher_wall_share = statistics.fmean(r["teacher_seconds"] / r["wall_seconds"] for r in fixed_runs)
    reached = [r["last_block_from_step"] / r["steps"] for r in leap_runs if r["last_block_from_step"] is not None]
    reach_text = (
        f"the target reached the last block after {pct(statistics.fmean(reached), digits=0)}% of the steps "
        f"on average ({len(reached)} of {len(leap_runs)} runs reached it)"
        if reached
        else "the target never reached the last block"
    )
    knn, lin = leap["knn_top1_vs_fixed"], leap["linear_top1_vs_fixed"]
    spreads = [row["knn_top1"][1] for row in t.values() if row["knn_top1"][1] is not None]
    spread_text = (
        f"kNN top-1 varies by up to {pct(max(spreads))} points (std) across seeds within one method"
        if spreads
        else "one seed: the spread across seeds is not measured"
    )
    return [
        "## Against the paper",
        "",
        "| | paper (DINOv2 ViT-G/14 -> ViT-S/14, ImageNet-100, 100 epochs) | leapkd here |",
        "|---|---|---|",
        f"| training FLOPs saved by LEAP | {pct(paper['flops_saving'])}% | {pct(*leap['flops_saving'])}% |",
        f"| training time saved by LEAP | {pct(paper['time_saving'], digits=0)}% | {pct(*leap['wall_saving'])}% |",
        f"| accuracy over the fixed target | +{paper['points']} points (top-1) "
        f"| kNN {_diff(knn)}, linear {_diff(lin)} |",
        "",
        "Why the scales differ:",
        "",
        "- **The teacher's share of the work.** LEAP saves only teacher forward passes. The "
        "paper's ViT-G/14 teacher (40 blocks, width 1536) is about 50 times a ViT-S/14 in "
        "FLOPs, so the teacher is nearly all of a training step. Here the teacher is a ViT-S/14 "
        f"and the student a 6-block width-128 ViT: the teacher is {pct(teacher_flops_share, digits=0)}% "
        f"of the fixed runs' training FLOPs and {pct(teacher_wall_share, digits=0)}% of their wall "
        "time, which caps any saving below those shares.",
        f"- **How long the target stays shallow.** With the `leapkd distill` defaults (threshold "
        f"0.85, at most 1 epoch per block, {results['setting']['epochs']} epochs) {reach_text}; "
        "savings accrue only before that point. The paper allows 5 epochs per block in 100.",
        "- **Wall time against FLOPs.** On 2 CPU cores the student's small matrix products, the "
        "data pipeline and the optimizer cost more time per FLOP than the teacher's large "
        "matrix products, so a FLOP removed from the teacher removes less than its share of "
        "wall time. The early-exit curve above shows the same from the other side: at b = 1 "
        "a step still costs the student's part.",
        f"- **Data and length.** {results['setting']['subset_per_class'] * 10} Fashion-MNIST "
        f"images (28 px, grey, upscaled to {results['setting']['image_size']} px) for "
        f"{results['steps']} steps, against ImageNet-100 for 100 epochs: the students here are "
        f"far from converged, and the accuracy columns measure early training ({spread_text}).",
        "",
    ]


def time_to_reach(runs: list[dict[str, Any]], goal: float) -> list[str]:
    """Per method: the first snapshot whose mean kNN over seeds reaches `goal` (fixed's final kNN)."""
    lines = [
        f"First snapshot (every {runs[0]['curve'][1]['step']} steps) whose mean kNN top-1 reaches the "
        f"`fixed` target's final {pct(goal)}%:",
        "",
        "| method | step | training TFLOP | wall s |",
        "|---|---|---|---|",
    ]
    for label in METHODS:
        curves = [r["curve"] for r in runs if r["method"] == label]
        cells = ["not reached", "–", "–"]
        for i in range(min(len(c) for c in curves)):
            if statistics.fmean(c[i]["knn_top1"] for c in curves) >= goal:
                tflop = statistics.fmean(c[i]["flops"] for c in curves) / 1e12
                wall = statistics.fmean(c[i]["wall_seconds"] for c in curves)
                cells = [str(curves[0][i]["step"]), f"{tflop:.1f}", f"{wall:.0f}"]
                break
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return lines


def ratio_breakdown(runs: list[dict[str, Any]]) -> list[str]:
    """Where LEAP's wall saving parts from its FLOPs saving, from the per-run seconds and FLOPs."""

    def mean(label: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs if r["method"] == label)

    share_wall = mean("fixed", "teacher_seconds") / mean("fixed", "wall_seconds")
    share_flops = mean("fixed", "teacher_flops") / mean("fixed", "training_flops")
    teacher_s = 1 - mean("leap", "teacher_seconds") / mean("fixed", "teacher_seconds")
    teacher_f = 1 - mean("leap", "teacher_flops") / mean("fixed", "teacher_flops")
    return [
        f"Why the wall saving is a fraction of the FLOPs saving: LEAP saves teacher work only. In the "
        f"`fixed` runs the teacher is {pct(share_wall)}% of the wall time but {pct(share_flops)}% of the "
        f"FLOPs (the student's small matrix products, the optimizer and the data pipeline cost more "
        f"time per FLOP), so even a teacher saving exactly proportional to its FLOPs gives a ratio of "
        f"{share_wall / share_flops:.2f}. The teacher part itself "
        f"{'is close to' if teacher_s >= 0.9 * teacher_f else 'falls short of'} proportional: LEAP saved "
        f"{pct(teacher_s)}% of the teacher seconds for {pct(teacher_f)}% of the teacher FLOPs. The "
        f"student seconds were {mean('leap', 'student_seconds'):.1f} s in the `leap` runs against "
        f"{mean('fixed', 'student_seconds'):.1f} s in the `fixed` runs, for the same student FLOPs.",
        "",
    ]


def _ratio_text(row: dict[str, Any]) -> str:
    ratio = row["wall_per_flops_saving"]
    return "–" if ratio is None else f"{ratio:.2f}"


def early_exit_flops_relative(setting: Setting) -> list[float]:
    """Training-step FLOPs at each teacher depth relative to full depth, from a counted step."""
    from leapkd.accounting import student_step_flops, teacher_flops_by_depth
    from leapkd.models import freeze, load_backbone

    teacher = freeze(load_backbone(EMBEDDED_TEACHER, setting.image_size))
    student = load_backbone("vit-nano", setting.image_size, patch_size=teacher.patch_size)
    projector = torch.nn.Linear(student.embed_dim, teacher.embed_dim)
    images = torch.randn(setting.batch_size, 3, setting.image_size, setting.image_size)
    by_depth = teacher_flops_by_depth(teacher, images)
    target = teacher.patch_tokens(teacher.forward_to(images, teacher.num_blocks)).detach()

    def step() -> torch.Tensor:
        return torch.nn.functional.mse_loss(projector(student.patch_tokens(student(images))), target)

    s = student_step_flops(step)
    return [(t + s) / (by_depth[-1] + s) for t in by_depth]


def measure_all(setting: Setting, runs_dir: Path, assets: Path, fresh: bool, progress: bool) -> dict[str, Any]:
    """Run, evaluate and time everything; the results as one JSON-ready dict."""
    start = time.perf_counter()
    info = machine()
    dirs = run_all(setting, runs_dir, fresh, progress)
    print("evaluating snapshots", flush=True)
    runs = [evaluate_run(d, setting, label) for d, label in zip(dirs, list(METHODS) * len(setting.seeds))]
    teacher = evaluate_teacher(setting, assets / "teacher-eval")
    print("measuring the engine overhead", flush=True)
    overhead = measure_overhead(setting.overhead_steps, setting.overhead_rounds, setting.image_size, setting.batch_size)
    (assets / "overhead.json").write_text(json.dumps(overhead, indent=2) + "\n")
    return {
        "machine": info,
        "commit": git_commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_minutes": (time.perf_counter() - start) / 60,
        "setting": asdict(setting),
        "steps": setting.steps,
        "teacher": teacher,
        "runs": runs,
        "table": aggregate(runs),
        "overhead": overhead,
        "early_exit_flops_relative": early_exit_flops_relative(setting),
        "paper": PAPER,
    }


def git_commit() -> str | None:
    """The code's commit (with "+changes" when the tree differs from it), or None outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "src", "bench")
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: one seed, tiny runs (a few minutes)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/benchmarks.md and OUT/benchmarks/")
    p.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: runs/bench[-quick])")
    p.add_argument("--fresh", action="store_true", help="re-run finished runs instead of reusing them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--render-only", action="store_true", help="rewrite the page and plots from OUT's results.json")
    args = p.parse_args(argv)
    setting = QUICK if args.quick else DEFAULT
    runs_dir = args.runs_dir or Path("runs") / ("bench-quick" if args.quick else "bench")
    assets = args.out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results = json.loads((assets / "results.json").read_text())
    else:
        results = measure_all(setting, runs_dir, assets, args.fresh, progress=not args.no_progress)
        results["command"] = "python bench/compare.py" + (" --quick" if args.quick else "")
        (assets / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_time_to_accuracy(results["runs"], results["teacher"]["knn_top1"], assets / "time_to_accuracy.png")
    plot_early_exit(results["overhead"], results["early_exit_flops_relative"], assets / "early_exit.png")
    page = args.out / "benchmarks.md"
    page.write_text(render(results))
    print(page.read_text())
    print(f"written: {page} and {assets}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
