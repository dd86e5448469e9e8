"""Many students, one teacher: three students in one run against three separate runs.

Usage:
  python bench/shared_students.py                 # fixed and leap, the demo (250 steps), ~1.5 hours on 2 cores
  python bench/shared_students.py --method fixed  # one method
  python bench/shared_students.py --quick         # smoke test: tiny models, a few steps
  python bench/shared_students.py --render-only   # draw the page section from the JSON again

The demo's settings (the embedded DINOv2 ViT-S/14 teacher, Fashion-MNIST, 250 steps, the
defaults otherwise), students vit-nano (the demo's), resnet18 and mobilenetv3_small_100. For
each method, in one process: the shared run and the three separate runs, the order reversed
for the second method so machine drift falls on both arms. Per run: the whole command's
seconds, the training wall seconds and FLOPs; per student: kNN top-1 on the run's end
(`eval_every` at the last step), and the edge table of the shared run's students (ONNX
Runtime on this CPU, batch 1, 1 thread and all threads; `leapkd export RUN --format onnx --latency`).
Results: docs/benchmarks/shared_students.json, the section "Many students, one teacher" of
docs/benchmarks.md and docs/benchmarks/shared_students_edge.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import git_commit, machine  # noqa: E402
from gpu_page import replace_section  # noqa: E402

from leapkd.deploy import export  # noqa: E402
from leapkd.edge import EdgeRow, Latency, edge_rows  # noqa: E402
from leapkd.plots import plot_edge  # noqa: E402
from leapkd.training import distill  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
RESULTS = DOCS / "benchmarks" / "shared_students.json"
STUDENTS = ("vit-nano", "resnet18", "mobilenetv3_small_100")
START = "<!-- shared-students:start (written by bench/shared_students.py from docs/benchmarks/shared_students.json) -->"
START_PREFIX = "<!-- shared-students:start"
END = "<!-- shared-students:end -->"
QUICK = {
    "teacher": "vit-nano",
    "allow_random_teacher": True,
    "image_size": 64,
    "subset_per_class": 4,
    "batch_size": 8,
    "max_steps": 4,
    "precision": "32",
}


def settings(quick: bool) -> dict[str, Any]:
    steps = 4 if quick else 250
    base = dict(QUICK) if quick else {"precision": "32"}  # fp32: the same numbers on every CPU
    return {**base, "eval_every": steps, "eval_protocols": ["knn"], "eval_metric": "knn_top1", "progress": False}


def one_run(root: Path, name: str, method: str, students: list[str], keys: dict[str, Any]) -> dict[str, Any]:
    """Train; the whole call's seconds, the training wall and FLOPs, each student's figures."""
    start = time.perf_counter()
    result = distill(name=name, output_dir=str(root), method=method, student=",".join(students), **keys)
    seconds = time.perf_counter() - start
    if result.shared is not None:
        s = result.shared
        per = {
            st.name: {
                "knn_top1": st.quality.get("knn_top1"),
                "flops_alone": st.flops_alone,
                "student_flops": st.student_flops,
            }
            for st in s.students
        }
        return {
            "seconds": seconds,
            "wall_seconds": s.wall_seconds,
            "flops": s.flops,
            "teacher_flops": s.teacher_flops,
            "separate_flops": s.separate_flops,
            "students": per,
            "run_dir": str(result.run_dir),
        }
    r = result.summary
    assert r is not None
    last = r.evaluation.last if r.evaluation is not None else {}
    return {
        "seconds": seconds,
        "wall_seconds": r.wall_seconds,
        "flops": r.teacher_flops + r.student_flops,
        "teacher_flops": r.teacher_flops,
        "baseline_teacher_flops": r.baseline_flops - r.student_flops,
        "students": {students[0]: {"knn_top1": (last or {}).get("knn_top1"), "student_flops": r.student_flops}},
        "run_dir": str(result.run_dir),
    }


def measure(methods: list[str], quick: bool) -> dict[str, Any]:
    """Each method's arms; after each method the results so far are saved (not with `quick`)."""
    keys = settings(quick)
    out: dict[str, Any] = {"machine": machine(), "commit": git_commit(), "students": list(STUDENTS), "methods": {}}
    if RESULTS.is_file() and not quick:  # keep the methods measured before (one method per call is fine)
        out["methods"] = json.loads(RESULTS.read_text()).get("methods", {})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, method in enumerate(methods):
            arms = [("shared", list(STUDENTS))] + [(s, [s]) for s in STUDENTS]
            if i % 2:
                arms.reverse()  # A B, B A: drift falls on both arms
            runs = {}
            for label, students in arms:
                print(f"{method}: {label}", flush=True)
                runs[label] = one_run(root, f"{method}-{label}", method, students, keys)
            out["methods"][method] = {"runs": runs, "order": [a for a, _ in arms], "edge": edge(runs["shared"])}
            out["methods"][method] |= {"minutes": (time.perf_counter() - start) / 60, "machine": machine()}
            out["methods"][method]["commit"] = out["commit"]
            out["total_minutes"] = sum(part.get("minutes", 0.0) for part in out["methods"].values())
            out["finished"] = out["methods"][method]["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            if not quick:
                RESULTS.write_text(json.dumps(out, indent=2) + "\n")
            start = time.perf_counter()
    return out


def edge(shared: dict[str, Any]) -> list[dict[str, Any]]:
    """Each student of the shared run exported to ONNX and timed on this CPU."""
    rows = []
    for name in STUDENTS:
        run = Path(shared["run_dir"]) / "students" / name
        result = export(run, "onnx", latency=True)
        summary = json.loads((run / "summary.json").read_text())
        quality = {"knn_top1": shared["students"][name]["knn_top1"]}
        row = EdgeRow(
            name=name,
            params=summary["student"]["params"],
            flops_per_image=result["flops_per_image"],
            latency=[Latency.model_validate(m) for m in result["latency"]],
            quality={k: v for k, v in quality.items() if v is not None},
        )
        rows.append(row.model_dump())
    return rows


def render_section(results: dict[str, Any]) -> str:
    lines = [START, "## Many students, one teacher", ""]
    lines += [
        "`python bench/shared_students.py`: the demo (embedded DINOv2 ViT-S/14 teacher, Fashion-MNIST, 250 steps, "
        f"fp32), students {', '.join(results['students'])}, `--student {','.join(results['students'])}` against one "
        "run per student, run one after the other in one process (order reversed for the second method). Each "
        "method was measured in one call (`--method M`), so the methods' seconds may come from different machines: "
        "compare the arms within a method, not across methods.",
        "",
    ]
    for method, part in results["methods"].items():
        where = part.get("machine", results["machine"])
        lines += [
            f"{method}: commit {part.get('commit', results['commit'])}, {where['cpu']}, {where['cores']} cores, "
            f"{part['minutes']:.0f} minutes, finished {part.get('finished', results['finished'])}.",
            "",
            "| arm | command seconds | training wall seconds | training FLOPs (T) | teacher FLOPs (T) |",
            "|---|---|---|---|---|",
        ]
        runs = part["runs"]
        for label, run in runs.items():
            lines.append(
                f"| {label} | {run['seconds']:.0f} | {run['wall_seconds']:.0f} | "
                f"{run['flops'] / 1e12:.2f} | {run['teacher_flops'] / 1e12:.2f} |"
            )
        lines += ["", *_verdict(method, runs), ""]
    for method, part in results["methods"].items():
        header, table = edge_rows([EdgeRow.model_validate(r) for r in part["edge"]])
        lines += [
            f"Edge table of the shared `{method}` run's students (`leapkd export RUN --format onnx --latency`):",
            "",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table] + [""]
    first = next(iter(results["methods"]))
    lines += [f"![accuracy against latency, the `{first}` run](benchmarks/shared_students_edge.png)", "", END]
    return "\n".join(lines)


def _verdict(method: str, runs: dict[str, Any]) -> list[str]:
    shared = runs["shared"]
    separate = [runs[s] for s in STUDENTS]
    wall = shared["wall_seconds"] / sum(r["wall_seconds"] for r in separate)
    command = shared["seconds"] / sum(r["seconds"] for r in separate)
    flops = shared["flops"] / sum(r["flops"] for r in separate)
    lines = [
        f"- {method}: the shared run took {100 * wall:.0f}% of the separate runs' training wall time "
        f"({100 * command:.0f}% of the commands' seconds) for {100 * flops:.0f}% of their FLOPs "
        f"(the target: at most {100 * flops:.0f}% x 1.1 = {110 * flops:.0f}%: "
        f"{'met' if wall <= 1.1 * flops else 'missed'}).",
    ]
    if method == "leap":
        fixed_teacher = separate[0].get("baseline_teacher_flops")
        if fixed_teacher:
            alone = [1 - r["teacher_flops"] / fixed_teacher for r in separate]
            together = 1 - shared["teacher_flops"] / fixed_teacher
            kept = ", ".join(f"{s} {100 * a:.1f}%" for s, a in zip(STUDENTS, alone))
            lines.append(
                f"- leap: the teacher's early exit saved {kept} of the fixed-depth teacher FLOPs alone; shared, the "
                f"teacher runs to the deepest student's target and saved {100 * together:.1f}%."
            )
    return lines


def write_page(results: dict[str, Any]) -> None:
    first = next(iter(results["methods"].values()))["edge"]  # the first method's students
    plot_edge([EdgeRow.model_validate(r) for r in first], "knn_top1", DOCS / "benchmarks" / "shared_students_edge.png")
    page = DOCS / "benchmarks.md"
    page.write_text(replace_section(page.read_text(), render_section(results), START_PREFIX, END))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", action="append", choices=("fixed", "leap"), help="default: both")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models, a few steps (writes nothing)")
    p.add_argument("--render-only", action="store_true", help="draw the page section from the JSON again")
    args = p.parse_args()
    if args.render_only:
        write_page(json.loads(RESULTS.read_text()))
        return
    results = measure(args.method or ["fixed", "leap"], args.quick)
    if args.quick:
        print(render_section(results))
        return
    write_page(results)


if __name__ == "__main__":
    main()
