"""docs/benchmarks.md and its plots, written from bench/compare.py's results (a JSON-ready dict)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import leap_lead_page  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from gpu_page import render_section, replace_section  # noqa: E402
from stats import mean_spread  # noqa: E402


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    """The methods in the order they ran."""
    return list(dict.fromkeys(r["method"] for r in runs))


# ----- plots and the page ---------------------------------------------------------------------
COLORS = {"fixed": "tab:gray", "leap": "tab:blue", "spectralkd": "tab:orange", "leap+spectral": "tab:green"}


def plot_time_to_accuracy(runs: list[dict[str, Any]], teacher_knn: float, path: Path) -> None:
    """kNN top-1 against training FLOPs and against wall seconds; mean over seeds, bars = spread."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for label in _labels(runs):
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


def pct(x: float | None, spread: float | None = None, digits: int = 1) -> str:
    if x is None:
        return "–"
    text = f"{100 * x:.{digits}f}"
    return f"{text} ± {100 * spread:.{digits}f}" if spread is not None else text


def _diff(entry: dict[str, Any]) -> str:
    return f"{100 * entry['diff']:+.1f} ({entry['verdict']})"


def write_page(out: Path) -> Path:
    """Draw OUT/benchmarks.md from the JSON results under OUT/benchmarks/ (the method
    benchmark's, and the students' and hardware benchmarks' when they were run)."""
    assets = out / "benchmarks"

    def read(name: str) -> dict[str, Any] | None:
        path = assets / name
        return json.loads(path.read_text()) if path.is_file() else None

    results = read("results.json")
    assert results is not None, f"{assets / 'results.json'} is missing: run bench/compare.py first"
    page = out / "benchmarks.md"
    text = render(results, read("students.json"), read("hardware.json"), read("recipes.json"))
    gpu = read("gpu.json")  # bench/gpu.py's section, measured on a GPU (a dry run is never drawn here)
    if gpu is not None and not gpu.get("dry_run"):
        text = replace_section(text, render_section(gpu))
    lead = read("leap_lead.json")  # bench/leap_lead.py's section
    if lead is not None and lead.get("runs"):
        text = replace_section(text, leap_lead_page.render_section(lead, assets), leap_lead_page.START_PREFIX,
                               leap_lead_page.END)  # fmt: skip
    page.write_text(text)
    return page


def render(
    results: dict[str, Any],
    students: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    recipes: dict[str, Any] | None = None,
) -> str:
    """docs/benchmarks.md from the results (and the other-students, hardware and recipes benchmarks, when run)."""
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
        f"- Teacher: the embedded DINOv2 ViT-S/14 (`{results['teacher_name']}`); student `vit-nano` "
        f"(6 blocks, width 128, patch 14); Fashion-MNIST, {st['subset_per_class']} training images per class, "
        f"{st['image_size']} px, batch {st['batch_size']}, {results['steps']} steps ({st['epochs']} epochs); "
        f"seeds {', '.join(map(str, st['seeds']))}; fp32 (`precision 32`: bf16 is in the hardware "
        "section) with the loader in the training process (`num_workers 0`); everything else is the "
        "`leapkd distill` default.",
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
        *(students_section(students) if students else []),
        *(hardware_section(hardware) if hardware else []),
        *(recipes_section(recipes) if recipes else []),
        *paper_section(results),
    ]
    return "\n".join(lines)


def recipes_section(results: dict[str, Any]) -> list[str]:
    """The papers' recipes and comparisons at the demo's scale (bench/recipes.py)."""
    st, m = results["setting"], results["machine"]
    precisions = sorted({r["precision"] for e in results["recipes"].values() for r in e["runs"]})
    lines = [
        "## The papers' recipes and comparisons, at the demo's scale",
        "",
        f"    {results['command']}",
        "",
        f"{m['cpu']}, {m['cores']} cores; finished {results['finished']} after {results['minutes']:.0f} minutes, "
        f"code at commit {results.get('commit') or 'unknown'}. Every run: the embedded DINOv2 ViT-S/14 teacher, "
        f"the `vit-nano` student, {st['subset_per_class']} training images per class, {st['image_size']} px, "
        f"batch {st['batch_size']}, {st['steps']} steps ({st['epochs']} epochs), seeds "
        f"{', '.join(map(str, st['seeds']))}, precision {', '.join(precisions)}. kNN and linear probe on "
        f"{st['eval_train_per_class']} / {st['eval_val_per_class']} train / val images per class of the run's data. "
        "`leap-paper` is the recipe's training (LARS, sqrt LR scaling from 1536, mixup on every batch, the "
        "DistillationV2 augmentation, trunc-normal projector, warm-up 1 epoch = min(10, epochs / 10)) with the "
        "demo's models, size, data and length, and an epoch cap of 1 per block (the reference's 5 of 100 epochs "
        "would not reach the last block in 10).",
        "",
        "### LEAP against the fixed target, by recipe and dataset",
        "",
        "| data / recipe | method | kNN top-1 | linear top-1 | FLOPs saving | wall s | kNN vs fixed "
        "| linear vs fixed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    claims = []
    for setting, entry in results["recipes"].items():
        for method, row in entry["table"].items():
            vs = (
                "" if method == "fixed" else f"{_diff(row['knn_top1_vs_fixed'])} | {_diff(row['linear_top1_vs_fixed'])}"
            )
            lines.append(
                f"| {setting} | `{method}` | {pct(*row['knn_top1'])} | {pct(*row['linear_top1'])} "
                f"| {pct(*row['flops_saving'])}% | {row['wall_seconds'][0]:.0f} | {vs or '– | –'} |"
            )
        leap = entry["table"]["leap"]
        claims.append(
            f"- {setting}: kNN {leap['knn_top1_vs_fixed']['verdict']}, "
            f"linear {leap['linear_top1_vs_fixed']['verdict']}, FLOPs saved {pct(*leap['flops_saving'])}%, "
            f"wall time saved {pct(*leap['wall_saving'])}%."
        )
    sup = results["supervised"]
    lines += [
        "",
        "What the LEAP paper claims (LEAP above the fixed target in accuracy, 25.1% of the FLOPs and 21% of the "
        "time saved) and what these runs show, setting by setting (a difference counts only beyond the seeds' "
        "standard deviation):",
        "",
        *claims,
        "",
        "### SpectralKD's comparison: the student's own top-1",
        "",
        f"Method `spectralkd` on Fashion-MNIST, label smoothing 0.1, the teacher's fitted linear head for KD "
        f"(alpha 0.9, T 1), w_fft 0.2 on the paper's pattern of layer pairs; top-1 of the student's head on "
        f"{sup['val_images']} validation images.",
        "",
        "| loss | student top-1 | wall s |",
        "|---|---|---|",
        *[f"| {label} | {pct(*row['top1'])} | {row['wall_seconds'][0]:.0f} |" for label, row in sup["table"].items()],
        "",
        *_supervised_claims(sup["table"]),
        "",
    ]
    return lines


def _supervised_claims(table: dict[str, Any]) -> list[str]:
    """The paper's ordering (CE < CE + KD < CE + KD + FFT), checked pair by pair against the seeds' spread."""
    lines = []
    for lower, higher in (("CE", "CE + KD"), ("CE + KD", "CE + KD + FFT")):
        (a, sa), (b, sb) = table[lower]["top1"], table[higher]["top1"]
        spread = None if sa is None or sb is None else max(sa, sb)
        verdict = "one seed: untested" if spread is None else ("no difference" if abs(b - a) <= spread
                                                                 else "better" if b > a else "worse")  # fmt: skip
        lines.append(f"- SpectralKD claims {higher} above {lower}: {100 * (b - a):+.1f} points here ({verdict}).")
    return lines


def students_section(results: dict[str, Any]) -> list[str]:
    """LEAP vs fixed into students of other families and grids, measured by its own command."""
    st, m = results["setting"], results["machine"]
    lines = [
        "## Other students: a CNN and a ViT of another patch size",
        "",
        "Measured by its own command, on the same kind of machine:",
        "",
        f"    {results['command']}",
        "",
        f"- {m['cpu']}, {m['cores']} cores, load average at start {m['load_average_at_start']}; finished "
        f"{results['finished']} after {results['total_minutes']:.0f} minutes, code at commit "
        f"{results.get('commit') or 'unknown'}.",
        f"- The same teacher, data, steps ({results['steps']}), batch, image size ({st['image_size']} px) and seeds "
        f"({', '.join(map(str, st['seeds']))}) as above; `fixed` and `leap` interleaved within each seed. The "
        "aligner projects the student's last level to the target's width and resamples its grid to the target's.",
        "",
        "| student | method | kNN top-1 | vs fixed | linear top-1 | vs fixed | FLOPs saving | wall s | wall saving "
        "| final block |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for student, table in results["tables"].items():
        for label, r in table.items():
            knn_vs = "–" if label == "fixed" else _diff(r["knn_top1_vs_fixed"])
            lin_vs = "–" if label == "fixed" else _diff(r["linear_top1_vs_fixed"])
            wall, wall_s = r["wall_seconds"]
            lines.append(
                f"| `{student}` | `{label}` | {pct(*r['knn_top1'])} | {knn_vs} | {pct(*r['linear_top1'])} | {lin_vs} "
                f"| {pct(*r['flops_saving'])} | {wall:.0f}{f' ± {wall_s:.0f}' if wall_s is not None else ''} "
                f"| {pct(*r['wall_saving']) if label != 'fixed' else '–'} | {r['final_block'][0]:.1f} |"
            )
    lines += ["", *(f"- `{s}`: {what}" for s, what in results["students"].items()), ""]
    leaps = [r for r in results["runs"] if r["method"] == "leap"]
    for student in results["students"]:
        ups = "; ".join(", ".join(map(str, r["level_ups"])) or "-" for r in leaps if r["student"] == student)
        lines.append(f"- `{student}` under `leap`: level-ups at steps {ups} (per seed).")
    return [*lines, ""]


def hardware_section(results: dict[str, Any]) -> list[str]:
    """What precision auto, data workers and compile give on this machine (bench/hardware.py)."""
    lines = [
        "## Hardware: precision, data workers, compile, evaluation during training",
        "",
        "Measured by `bench/hardware.py`, part by part; in each part the settings ran side by side in one "
        "process, interleaved (A, B, A, B).",
        "",
    ]
    parts = {
        "demo": _demo_part,
        "quality": _quality_part,
        "pipeline": _pipeline_part,
        "compile": _compile_part,
        "scan": _scan_part,
        "evaluation": _evaluation_part,
    }
    for name, draw in parts.items():
        if name in results:
            lines += [*draw(results[name]), ""]
    return lines


def _demo_part(part: dict[str, Any]) -> list[str]:
    lines = [
        *_part_header("The default `leapkd distill` demo, before and now", part),
        "| setting | precision | workers | training loop s | whole command s |",
        "|---|---|---|---|---|",
    ]
    for label, row in part["summary"].items():
        first = next(r for r in part["rows"] if r["label"] == label)
        lines.append(
            f"| {label} | {first['precision']} | {first['num_workers']} "
            f"| {row['wall_seconds']:.0f} | {row['total_seconds']:.0f} |"
        )
    (old, new) = list(part["summary"].values())[:2]
    lines += [
        "",
        f"The demo's training loop is {old['wall_seconds'] / new['wall_seconds']:.2f}x faster "
        f"than before (whole command {old['total_seconds'] / new['total_seconds']:.2f}x); per round: "
        + ", ".join(f"{r['label'].split(' ')[0]} {r['wall_seconds']:.0f} s" for r in part["rows"])
        + ".",
    ]
    return lines


def _quality_part(part: dict[str, Any]) -> list[str]:
    lines = [
        *_part_header("Quality in bf16-mixed vs fp32 (3 seeds)", part),
        "| method | precision | kNN top-1 | linear top-1 | wall s | final block |",
        "|---|---|---|---|---|---|",
    ]
    for method in part["tables"]["fp32"]:
        for tag in ("fp32", "bf16"):
            r = part["tables"][tag][method]
            lines.append(
                f"| `{method}` | {tag} | {pct(*r['knn_top1'])} | {pct(*r['linear_top1'])} "
                f"| {r['wall_seconds'][0]:.0f} | {r['final_block'][0]:.1f} |"
            )
    lines += ["", "bf16 minus fp32, mean over the seeds (per seed in brackets), against the larger spread:", ""]
    for key, d in part["bf16_minus_fp32"].items():
        unit = (lambda v: f"{v:+.0f} s") if key.endswith("wall_seconds") else (lambda v: f"{100 * v:+.1f}")
        verdict = "within the seeds' spread" if d["within_spread"] else "larger than the seeds' spread"
        lines.append(
            f"- `{key}`: {unit(d['mean_diff'])} ({', '.join(unit(v) for v in d['per_seed'])}); "
            f"spread {unit(d['spread']).lstrip('+')}: {verdict}"
        )
    return lines


def _pipeline_part(part: dict[str, Any]) -> list[str]:
    lines = [
        *_part_header("Input pipeline alone", part),
        f"{part['images']} JPEGs of {part['size']} px ({part['mean_jpeg_kb']:.0f} KB on average), decoded, "
        f"random-resized-cropped to {part['image_size']} px and flipped, batches of {part['batch_size']} "
        "uint8 images (normalisation happens on the training device); the first batch (worker start-up) "
        "is not counted.",
        "",
        "| data workers | images/s |",
        "|---|---|",
    ]
    lines += [f"| {label} | {row['images_per_second']:.0f} |" for label, row in part["summary"].items()]
    return lines


def _compile_part(part: dict[str, Any]) -> list[str]:
    lines = [
        *_part_header("torch.compile", part),
        f"`distill --method fixed --max_steps {part['steps']}` (the demo's models and data, precision "
        f"{part['rows'][0]['precision']}); seconds per step are the median after {part['warm_up_steps']} "
        "warm-up steps; the first step includes compilation (less when torch's compile cache is "
        "warm from an earlier run in the same environment).",
        "",
        "| setting | s/step | first step s | whole command s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {row['seconds_per_step']:.3f} | {row['first_step_seconds']:.1f} | {row['total_seconds']:.0f} |"
        for label, row in part["summary"].items()
    ]
    return lines


def _scan_part(part: dict[str, Any]) -> list[str]:
    mib = 1024 * 1024
    scans = ", ".join(f"{s:.1f}" for s in part["scan_seconds"])
    return [
        *_part_header("Listing a folder of unlabelled images", part),
        f"{part['files']:,} empty `.JPEG` files in {part['folders']:,} folders, named as ImageNet's "
        "(ImageNet-1k's training set has 1,281,167), listed as `data: <folder>` lists them: one "
        "`scandir` per folder, no `stat` per file.",
        "",
        "| | |",
        "|---|---|",
        f"| seconds to list (per round) | {scans} |",
        f"| the list in memory (names + offsets) | {part['list_bytes'] / mib:.0f} MiB |",
        f"| peak Python memory while listing | {part['scan_peak_python_bytes'] / mib:.0f} MiB |",
        f"| `train-images.npz` in the run directory | {part['index_file_bytes'] / mib:.0f} MiB, "
        f"written in {part['save_seconds']:.1f} s |",
    ]


def _evaluation_part(part: dict[str, Any]) -> list[str]:
    lines = [
        *_part_header("What watching a run costs: the demo with `eval_every`", part),
        "| setting | training loop s | of which evaluating s | share of the loop | whole command s |",
        "|---|---|---|---|---|",
    ]
    for label, row in part["summary"].items():
        lines.append(
            f"| {label} | {row['wall_seconds']:.1f} | {row['eval_seconds']:.1f} | {100 * row['share_of_wall']:.1f}% "
            f"| {row['total_seconds']:.1f} |"
        )
    off, on = list(part["summary"].values())[:2]
    evaluated = [r for r in part["rows"] if r["history"]]
    first = evaluated[0]
    curve = ", ".join(f"{e['step']}: {100 * e['knn_top1']:.1f}" for e in first["history"])
    lines += [
        "",
        f"Side by side, the loop took {on['wall_seconds'] / off['wall_seconds']:.2f}x as long with evaluations; "
        f"inside the evaluated runs they took {100 * on['share_of_wall']:.1f}% of it "
        f"({len(first['history'])} evaluations of {on['eval_seconds'] / len(first['history']):.2f} s "
        "on average). Per round: " + ", ".join(f"{r['label']} {r['wall_seconds']:.0f} s" for r in part["rows"]) + ".",
        "",
        f"kNN top-1 (%) by step, first evaluated run: {curve}; best {100 * first['best']['knn_top1']:.1f}% "
        f"at step {first['best']['step']}.",
        "",
        "![evaluation during training](benchmarks/evaluation_during_training.png)",
    ]
    return lines


def _part_header(title: str, part: dict[str, Any]) -> list[str]:
    m = part["machine"]
    return [
        f"### {title}",
        "",
        f"    {part['command']}",
        "",
        f"{m['cpu']}, {m['cores']} cores, load average at start {m['load_average_at_start']}; `precision auto` "
        f"resolves to {part['auto_precision']} here ({part['auto_reason']}). Finished {part['finished']} after "
        f"{part['minutes']:.0f} minutes, code at commit {part.get('commit') or 'unknown'}.",
        "",
    ]


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
    for label in _labels(runs):
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
