"""Put the summary.json figures of several runs side by side.

Usage: python bench/compare_runs.py RUN_DIR [RUN_DIR ...] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [
    ("method", lambda s: s["method"]),
    ("steps", lambda s: s["steps"]),
    ("epochs", lambda s: s["epochs"]),
    ("start block", lambda s: s.get("start_block")),
    ("final block", lambda s: s["final_block"]),
    ("level-ups (steps)", lambda s: ", ".join(map(str, s.get("level_ups", []))) or "-"),
    ("teacher TFLOP", lambda s: f"{s['teacher_flops'] / 1e12:.3f}"),
    ("student TFLOP", lambda s: f"{s['student_flops'] / 1e12:.3f}"),
    ("fixed-baseline TFLOP", lambda s: f"{s['baseline_flops'] / 1e12:.3f}"),
    ("FLOPs saving", lambda s: f"{100 * s['flops_saving']:.1f}%"),
    ("wall seconds", lambda s: f"{s['wall_seconds']:.1f}"),
    ("teacher seconds", lambda s: f"{s['teacher_seconds']:.1f}"),
    ("student seconds", lambda s: f"{s['student_seconds']:.1f}"),
    ("metric seconds", lambda s: f"{s['metric_seconds']:.2f}"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--markdown", type=Path, help="also write the table to this Markdown file")
    args = p.parse_args()
    summaries = [json.loads((r / "summary.json").read_text()) for r in args.runs]
    header = ["figure", *[r.name for r in args.runs]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get in ROWS:
        lines.append("| " + " | ".join([label, *[str(get(s)) for s in summaries]]) + " |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
