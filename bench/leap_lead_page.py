"""The "When LEAP helps" section of docs/benchmarks.md and its curves, drawn from
bench/leap_lead.py's leap_lead.json (between marker comments; the rest of the page stays)."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from stats import mean_spread, verdict  # noqa: E402

START = "<!-- leap-lead:start (written by bench/leap_lead.py from docs/benchmarks/leap_lead.json) -->"
START_PREFIX = "<!-- leap-lead:start"
END = "<!-- leap-lead:end -->"
CURVES = "leap_lead_curves.png"
ABLATION_CURVES = "leap_lead_ablation_curves.png"
LEAD = "leap_lead_by_step.png"
COLORS = {"fixed": "tab:gray", "leap": "tab:blue"}


def _groups(runs: dict[str, Any], part: str) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """{setting: {arm: {seed: run}}} of one part; grid settings are "student / recipe", ablation
    arms are the labels."""
    groups: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for key, run in runs.items():
        fields = key.split("/")
        if fields[0] != part:
            continue
        seed = int(fields[-1].removeprefix("s"))
        setting, arm = (f"{fields[1]} / {fields[2]}", fields[3]) if part == "grid" else ("ablation", fields[1])
        groups.setdefault(setting, {}).setdefault(arm, {})[seed] = run
    return groups


def _pct(mean: float, sd: float | None = None, signed: bool = False) -> str:
    """Points with one decimal, "± spread" when there is one; `signed` for differences."""
    sign = "+" if signed else ""
    return f"{100 * mean:{sign}.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")


def paired(arm: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], key: str) -> dict[str, Any] | None:
    """`arm` minus `base` on the seeds both ran: mean, spread (sample sd) and verdict."""
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        return None
    diffs = [arm[s][key] - base[s][key] for s in seeds]
    mean, sd = mean_spread(diffs)
    return {"diff": mean, "spread": sd, "seeds": len(seeds), "verdict": verdict(mean, sd)}


def _diff_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return "–"
    return f"{_pct(d['diff'], d['spread'], signed=True)} ({d['verdict']})"


def _row(label: str, arm: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]]) -> str:
    """One arm's row; its differences from `base` (none for the base itself)."""
    runs = list(arm.values())
    if arm is base:
        base = {}
    knn, linear = (mean_spread([r[k] for r in runs]) for k in ("knn_top1", "linear_top1"))
    lasts = [r["last_block_from_step"] for r in runs if r["last_block_from_step"] is not None]
    saving = statistics.fmean(r["flops_saving"] for r in runs)
    bests = [max(r["curve"], key=lambda point: point[1]) for r in runs]  # the first step of the highest kNN
    best = f"{_pct(*mean_spread([b[1] for b in bests]))} ({', '.join(str(int(b[0])) for b in bests)})"
    return (
        f"| {label} | {len(runs)} | {_pct(*knn)} | {_pct(*linear)} | {best} | "
        f"{_diff_text(paired(arm, base, 'knn_top1'))} | "
        f"{_diff_text(paired(arm, base, 'linear_top1'))} | {', '.join(str(s) for s in lasts) or '–'} | "
        f"{100 * saving:.1f}% |"
    )


HEADER = (
    "| {what} | seeds | kNN top-1 (%) | linear top-1 (%) | best kNN during training (%; at step) | "
    "kNN vs fixed (points, paired) | linear vs fixed | target at the last block from step | FLOPs saved |"
)
RULE = "|---|---|---|---|---|---|---|---|---|"


def _steps(groups: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> str:
    """The runs' length in optimizer steps (their curves' last step), as the heading writes it."""
    last = {int(run["curve"][-1][0]) for arms in groups.values() for seeds in arms.values() for run in seeds.values()}
    return " or ".join(f"{n:,}" for n in sorted(last))


def plot_curves(groups: dict[str, dict[str, dict[int, dict[str, Any]]]], path: Path) -> None:
    """kNN top-1 during training, one panel per student and recipe: the mean over seeds, the band
    from the lowest to the highest seed."""
    many = max(len(arms) for arms in groups.values()) > len(COLORS)  # the ablations: matplotlib's cycle
    fig, axes = plt.subplots(1, len(groups), figsize=(7.5 if many else 4.2 * len(groups), 3.6), squeeze=False)
    for ax, (setting, arms) in zip(axes[0], groups.items()):
        for arm, by_seed in arms.items():
            color = COLORS["fixed"] if arm == "fixed" else None if many else COLORS.get(arm)
            curves = [dict(r["curve"]) for r in by_seed.values()]
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = [[c[s] for c in curves] for s in steps]
            (line,) = ax.plot(steps, [100 * statistics.fmean(v) for v in values], color=color, label=arm)
            ax.fill_between(steps, [100 * min(v) for v in values], [100 * max(v) for v in values],
                            color=line.get_color(), alpha=0.15)  # fmt: skip
        ax.set_title(f"{setting} ({len(next(iter(arms.values())))} seeds)", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("kNN top-1 (%)")
    beside: dict[str, Any] = {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)} if many else {"loc": "lower left"}
    axes[0][0].legend(fontsize=7, **beside)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lead_by_step(grid: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, list[dict[int, float]]]:
    """`leap` minus `fixed` kNN top-1 at each evaluated step, one curve per (recipe, seed) pair that
    ran both arms, grouped by student."""
    lead: dict[str, list[dict[int, float]]] = {}
    for setting, arms in grid.items():
        for seed in sorted(set(arms.get("leap", {})) & set(arms.get("fixed", {}))):
            leap, fixed = dict(arms["leap"][seed]["curve"]), dict(arms["fixed"][seed]["curve"])
            pair = {int(step): leap[step] - fixed[step] for step in sorted(set(leap) & set(fixed))}
            lead.setdefault(setting.split(" / ")[0], []).append(pair)
    return lead


def _lead_cell(diffs: list[float]) -> str:
    if not diffs:
        return "–"
    mean, sd = mean_spread(diffs)
    return f"{_pct(mean, sd, signed=True)} ({sum(d > 0 for d in diffs)} of {len(diffs)}; {verdict(mean, sd)})"


def lead_table(lead: dict[str, list[dict[int, float]]]) -> list[str]:
    """Markdown rows: each step's lead per student and over every pair (step 0, the shared init, left out)."""
    steps = sorted({step for pairs in lead.values() for pair in pairs for step in pair} - {0})
    lines = ["| step | " + " | ".join(lead) + " | all pairs |", "|---" * (len(lead) + 2) + "|"]
    for step in steps:
        by_student = [[pair[step] for pair in pairs if step in pair] for pairs in lead.values()]
        cells = " | ".join(_lead_cell(diffs) for diffs in by_student)
        lines.append(f"| {step:,} | {cells} | {_lead_cell([d for diffs in by_student for d in diffs])} |")
    return lines


def plot_lead(lead: dict[str, list[dict[int, float]]], path: Path) -> None:
    """`leap` minus `fixed` kNN top-1 along the run: each pair faint, each student's mean bold."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for student, pairs in lead.items():
        steps = sorted(set.intersection(*(set(pair) for pair in pairs)))
        mean = [100 * statistics.fmean(pair[s] for pair in pairs) for s in steps]
        (line,) = ax.plot(steps, mean, lw=2, label=f"{student} ({len(pairs)} pairs)")
        for pair in pairs:
            ax.plot(steps, [100 * pair[s] for s in steps], color=line.get_color(), lw=0.7, alpha=0.3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("kNN top-1, leap - fixed (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machines(runs: dict[str, Any]) -> str:
    """Which CPUs ran the runs, with how many each (compare wall seconds within one machine only)."""
    counts = Counter(r.get("cpu", "unknown") for r in runs.values())
    if len(counts) == 1:
        return f"machine: {next(iter(counts))}"
    return "machines: " + ", ".join(f"{cpu} ({n} run{'s' * (n > 1)})" for cpu, n in counts.items())


def render_section(results: dict[str, Any], assets: Path) -> str:
    """The section, markers included; draws the curves into `assets`."""
    runs = results["runs"]
    grid, ablations = _groups(runs, "grid"), _groups(runs, "ablation")
    any_run = next(iter(runs.values()))["config"]
    lines = [
        START,
        "## When LEAP helps",
        "",
        f"LEAP against the fixed target (the teacher's last block) on {any_run['data']}: the embedded DINOv2 "
        f"ViT-S/14 teacher, {any_run['subset_per_class']} training images per class, {any_run['image_size']} px, "
        f"batch {any_run['batch_size']}, fp32; kNN at every tenth of each run on "
        f"{any_run['eval_images_per_class']} fixed images per class, then `leapkd eval` kNN and linear probe "
        "(100 / 50 images per class). Differences are paired by seed (the same seed, data order and "
        "initialisation for both arms); a difference within the seeds' spread is no difference. "
        f"Written by `python bench/leap_lead.py` ({_machines(runs)}, "
        f"{results['machine']['cores']} cores; finished {results['finished']}).",
        "",
    ]
    if grid:
        lines += [f"### Across students and recipes, {_steps(grid)} steps", "",
                  HEADER.format(what="student / recipe / arm"), RULE]  # fmt: skip
        for setting, arms in grid.items():
            for arm, by_seed in arms.items():
                lines.append(_row(f"{setting} / `{arm}`", by_seed, arms.get("fixed", {})))
        plot_curves(grid, assets / CURVES)
        lines += ["", f"![kNN top-1 during training](benchmarks/{CURVES})", ""]
        lead = lead_by_step(grid)
        if lead:
            lines += [
                "### LEAP's lead along the run",
                "",
                "kNN top-1 of `leap` minus `fixed` at each evaluation, in points, paired by recipe and seed: "
                "mean ± spread (in how many pairs `leap` is ahead; whether the difference counts).",
                "",
            ]
            lines += lead_table(lead)
            plot_lead(lead, assets / LEAD)
            lines += ["", f"![leap minus fixed, kNN top-1 along the run](benchmarks/{LEAD})", ""]
    if ablations:
        arms = ablations["ablation"]
        student = next(iter(next(iter(arms.values())).values()))["config"]["student"]
        lines += [f"### Why: one knob of the demo's `leap` at a time ({student}, {_steps(ablations)} steps)", "",
                  HEADER.format(what="arm"), RULE]  # fmt: skip
        lines += [_row(f"`{arm}`", by_seed, arms.get("fixed", {})) for arm, by_seed in arms.items()]
        plot_curves(ablations, assets / ABLATION_CURVES)
        lines += ["", f"![kNN top-1 during training, one knob at a time](benchmarks/{ABLATION_CURVES})", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"
