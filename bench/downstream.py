"""Downstream: does distillation help once the student is fine-tuned whole, and does the help shrink?

Usage:
  python bench/downstream.py                # ~50 minutes on 2 cores
  python bench/downstream.py --quick        # smoke test: tiny sizes (writes nothing)
  python bench/downstream.py --render-only  # draw the page section from the JSON again

Students of bench/leap_lead.py's demo scale (embedded DINOv2 ViT-S/14 teacher, vit-nano
student, animal-mnist, seed 0): `fixed` and `leap` at 250 steps, and `fixed` at 1,000 (the
same run as the leap_lead grid's vit-nano/demo/fixed/s0). Each student and the same
architecture from random init are scored frozen (kNN, linear probe) and fine-tuned with
`leapkd eval RUN --protocols finetune` (the default recipe) for 1, 3 and 10 epochs, 3 seeds
each, on 100 train / 50 validation images per class. The random-init arm is the `scratch`
baseline of the first student's evaluation (the same seeds, data order and augmentations as
every student). Results: docs/benchmarks/downstream.json and the section "Downstream" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import git_commit, machine  # noqa: E402
from gpu_page import replace_section  # noqa: E402
from leap_lead import DATA, run_config  # noqa: E402

from leapkd.eval.finetune import SCRATCH, baseline_model  # noqa: E402
from leapkd.eval.runner import evaluate  # noqa: E402
from leapkd.models import load_student_file, save_student_file  # noqa: E402
from leapkd.plots import plot_finetune  # noqa: E402
from leapkd.training import distill  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
RESULTS = DOCS / "benchmarks" / "downstream.json"
PLOT = DOCS / "benchmarks" / "downstream.png"
START = "<!-- downstream:start (written by bench/downstream.py from docs/benchmarks/downstream.json) -->"
START_PREFIX = "<!-- downstream:start"
END = "<!-- downstream:end -->"
STUDENT, STEPS = "vit-nano", 250
# (name, method, length in units of STEPS): the demo-scale students, and the fixed target 4x longer
STUDENTS = (("fixed", "fixed", 1), ("leap", "leap", 1), ("fixed-1000", "fixed", 4))


def measure(quick: bool) -> dict[str, Any]:
    lengths, seeds = ((1, 2), [0, 1]) if quick else ((1, 3, 10), [0, 1, 2])
    sizes = {"train_per_class": 8, "val_per_class": 4} if quick else {"train_per_class": 100, "val_per_class": 50}
    steps = 8 if quick else STEPS
    out: dict[str, Any] = {"machine": machine(), "commit": git_commit(), "seeds": seeds, "sizes": sizes}
    out |= {"students": {}, "frozen": {}, "arms": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for name, method, length in STUDENTS:
            print(f"distil {name}", flush=True)
            cfg = run_config(STUDENT, "demo", method, 0, length * steps, quick)
            distill(dict(cfg), name=name, output_dir=str(runs), overwrite=True, progress=False)
            out["students"][name] = {"method": method, "steps": length * steps}
        # the random-init twin the frozen probes score (the fine-tunes draw their own, one per seed)
        student = load_student_file(runs / STUDENTS[0][0] / "student.safetensors")
        save_student_file(baseline_model(student, SCRATCH, 0), runs / "scratch.safetensors")
        for name in ("scratch", *(s[0] for s in STUDENTS)):
            source = runs / ("scratch.safetensors" if name == "scratch" else name)
            frozen = evaluate(str(source), data=DATA, protocols=["knn", "linear"], out_dir=str(runs / f"frozen-{name}"),
                              progress=False, **sizes)  # fmt: skip
            out["frozen"][name] = {p: frozen[p]["top1"] for p in ("knn", "linear")}
        for epochs in lengths:
            for i, (name, _, _) in enumerate(STUDENTS):
                print(f"fine-tune {name}, {epochs} epochs", flush=True)
                result = evaluate(
                    str(runs / name),
                    data=DATA,
                    protocols=["finetune"],
                    finetune_epochs=epochs,
                    seeds=seeds,
                    finetune_baselines=[SCRATCH] if i == 0 else [],  # scratch once: it is the same every time
                    progress=False,
                    **sizes,
                )["finetune"]
                for arm, label in (("model", name), (SCRATCH, "scratch")):
                    if arm in result["arms"]:
                        out["arms"].setdefault(label, {})[str(epochs)] = result["arms"][arm]
    out["minutes"] = (time.perf_counter() - start) / 60
    out["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return out


def render_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    names = list(results["students"])
    lines = [START, "## Downstream: fine-tuned whole", ""]
    lines += [
        f"`python bench/downstream.py` (commit {results['commit']}, {m['cpu']}, {m['cores']} cores, "
        f"{results['minutes']:.0f} minutes, finished {results['finished']}): {STUDENT} students distilled from the "
        f"embedded DINOv2 ViT-S/14 on {DATA} with the demo recipe (seed 0; "
        + ", ".join(f"{n}: `{s['method']}`, {s['steps']} steps" for n, s in results["students"].items())
        + f") and {STUDENT} from random init (scratch), on {results['sizes']['train_per_class']} "
        f"train / {results['sizes']['val_per_class']} validation images per class.",
        "",
        "Frozen features first (`--protocols knn,linear`, CLS token, validation top-1):",
        "",
        "| | " + " | ".join(["scratch", *names]) + " |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    frozen = results["frozen"]
    for protocol, label in (("knn", "kNN"), ("linear", "linear probe")):
        cells = [f"{100 * frozen[n][protocol]:.1f}%" for n in ["scratch", *names]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Fine-tuned whole (`--protocols finetune`, default recipe), seeds "
        f"{', '.join(map(str, results['seeds']))}, the same data order and augmentations in every arm: validation "
        "top-1, mean ± sample std over seeds; the gain is the student minus scratch, seed by seed, in points "
        "(mean, then the lowest to the highest seed).",
        "",
        "| fine-tune epochs | " + " | ".join(["scratch", *names, *(f"{n} - scratch" for n in names)]) + " |",
        "|---|" + "---|" * (2 * len(names) + 1),
    ]
    arms = results["arms"]
    for epochs in arms["scratch"]:
        cells = [_mean_std([r["top1"] for r in arms[a][epochs]["runs"]]) for a in ("scratch", *names)]
        gains = [_gain(arms[a][epochs]["runs"], arms["scratch"][epochs]["runs"]) for a in names]
        lines.append(f"| {epochs} | " + " | ".join(cells + gains) + " |")
    longest = max(arms["scratch"], key=int)
    lines += ["", f"![validation top-1 per epoch of the {longest}-epoch fine-tunes, mean of the seeds]"
              f"(benchmarks/{PLOT.name})", "", END]  # fmt: skip
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.fmean(values):.1f}%{spread}"


def _gain(model: list[dict[str, Any]], scratch: list[dict[str, Any]]) -> str:
    by_seed = [100 * (m["top1"] - s["top1"]) for m, s in zip(model, scratch)]
    return f"{statistics.fmean(by_seed):+.1f} ({min(by_seed):+.1f} to {max(by_seed):+.1f})"


def write_page(results: dict[str, Any]) -> None:
    arms = results["arms"]
    longest = max(arms["scratch"], key=int)
    plot_finetune({name: arms[name][longest]["curve"] for name in arms}, PLOT)
    page = DOCS / "benchmarks.md"
    page.write_text(replace_section(page.read_text(), render_section(results), START_PREFIX, END))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes (writes nothing)")
    p.add_argument("--render-only", action="store_true", help="draw the page section from the JSON again")
    args = p.parse_args()
    if args.render_only:
        write_page(json.loads(RESULTS.read_text()))
        return
    results = measure(args.quick)
    if args.quick:
        print(render_section(results))
        return
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_page(results)


if __name__ == "__main__":
    main()
