"""The run report: one self-contained HTML file (images embedded) and a Markdown twin.

Sections appear when the run directory has what they show: headline figures, the
curriculum, the loss, FLOPs and time accounting, evaluation tables, the CKA map, spectra,
and the configuration.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leapkd.disk import write_text_atomic
from leapkd.errors import LeapkdError
from leapkd.eval.protocol import evaluated
from leapkd.plots import plot_accounting
from leapkd.rundir import RunDirectory


@dataclass
class Section:
    """A heading, a sentence or two, pictures, then a two-column table (in that order)."""

    title: str
    text: str = ""
    table: list[tuple[str, str]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _headline(s: dict[str, Any], cfg: dict[str, Any]) -> Section:
    rows = [
        ("method", s["method"]),
        (
            "teacher → student",
            f"{s['teacher']['name']} ({s['teacher']['blocks']} blocks) → "
            f"{s['student']['name']} ({s['student']['blocks']} blocks, "
            f"{s['student']['params'] / 1e6:.2f} M parameters)",
        ),
        ("data", f"{s['data']}, {s['train_images']} training images, {cfg.get('image_size')} px"),
        ("steps / epochs", f"{s['steps']} / {s['epochs']} (global batch {s['global_batch']})"),
        ("target block", f"{s.get('start_block')} → {s['final_block']} of {s['teacher']['blocks']}"),
        ("FLOPs saving vs fixed target", _pct(s["flops_saving"])),
        ("wall time", f"{s['wall_seconds']:.1f} s"),
        ("status", _status(s)),
    ]
    if s.get("student_classification"):
        scores = s["student_classification"]
        rows.append(
            (
                "student head top-1 / top-5",
                f"{_pct(scores['top1'])} / {_pct(scores.get('top5', 0.0))} "
                f"({scores['images_per_class']} val images per class)",
            )
        )
    evaluation = s.get("evaluation")
    if evaluation and evaluation.get("best"):
        best, metric = evaluation["best"], evaluation["metric"]
        rows.append((f"best {metric} during training", f"{_pct(best[metric])} at step {best['step']}"))
    for data, ev in s.get("eval", {}).items():
        for protocol, result in evaluated(ev):
            if protocol.headline:
                rows += [(f"{label} on {data}", value) for label, value in protocol.rows(result)[:1]]
    return Section("At a glance", table=rows)


def _status(s: dict[str, Any]) -> str:
    if s.get("status") != "completed":
        return f"{s.get('status')} (continue with --resume)"
    stop = (s.get("evaluation") or {}).get("early_stop")
    return f"completed (early stop after step {stop['step']})" if stop else "completed"


def _evaluation_section(s: dict[str, Any], run: RunDirectory) -> Section | None:
    """The evaluations during training (eval_every): the curve, the best, the cost."""
    evaluation = s.get("evaluation")
    if not evaluation or not evaluation.get("history"):
        return None
    metric, best, last = evaluation["metric"], evaluation["best"], evaluation["last"]
    share = evaluation.get("share_of_wall")
    rows = [
        (
            "evaluated on",
            f"{evaluation['data']}, {evaluation['images_per_class']} fixed images per class and split, "
            f"{evaluation.get('transform', 'resize')}",
        ),
        ("schedule", f"every {evaluation['every']}, before the first and after the last step"),
        (f"best {metric}", f"{_pct(best[metric])} at step {best['step']} (student_best.safetensors)"),
        (f"last {metric}", f"{_pct(last[metric])} at step {int(last['step'])} (student.safetensors)"),
        (
            "evaluations / their cost",
            f"{len(evaluation['history'])} / {evaluation['seconds']:.1f} s"
            + (f" ({_pct(share)} of wall time)" if share is not None else ""),
        ),
    ]
    if evaluation.get("early_stop"):
        rows.append(
            ("early stop", f"after step {evaluation['early_stop']['step']}: {evaluation['early_stop']['reason']}")
        )
    text = (
        "The student scored on fixed, un-augmented images while it trained; the star marks the best "
        f"{metric}, green lines the level-ups."
    )
    images = [run.plots / "evaluation.png"] if (run.plots / "evaluation.png").is_file() else []
    return Section("Evaluation during training", text, rows, images)


def _hardware_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """Where and how fast the run trained (runs written before these figures lack them)."""
    rows = []
    if "precision" in s:
        rows.append(
            ("precision", f"{s['precision']} ({s.get('precision_reason', '')}), teacher in {s.get('teacher_dtype')}")
        )
    if "images_per_second" in s:
        rows.append(("images/s (whole job)", f"{s['images_per_second']:.1f}"))
    if "job_flops" in s:
        rows.append(
            ("FLOPs per device / whole job", f"{s['flops_per_device'] / 1e12:.3f} T / {s['job_flops'] / 1e12:.3f} T")
        )
    if s.get("peak_memory_bytes"):
        rows.append(("peak device memory", f"{s['peak_memory_bytes'] / 2**30:.2f} GiB"))
    if "num_workers" in s:
        rows.append(("data workers per process", str(s["num_workers"])))
    return rows


def build_sections(run: RunDirectory) -> list[Section]:
    """Everything the report shows, from what the run directory holds."""
    if not run.summary.is_file():
        raise LeapkdError(f"{run.path} has no summary.json", "pass a finished (or stopped) run directory")
    s = run.read_summary()
    if "method" not in s:  # a run that failed before it could write its summary
        raise LeapkdError(
            f"{run.path} failed after step {s.get('failed_after_step', '?')} ({s.get('error', 'no error recorded')}) "
            "before it wrote its figures, so there is nothing to report yet",
            "continue it with `leapkd distill --resume` (the report is written when it ends)",
        )
    cfg = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    sections = [_headline(s, cfg)]
    if (run.plots / "curriculum.png").is_file():
        events = s.get("level_up_events", [])
        text = (
            f"The target moved {len(events)} times; calibration started it at block {s.get('start_block')}."
            if s["method"] == "leap"
            else "The target stays at the teacher's last block (fixed-target baseline)."
        )
        table = [(f"step {e['step']}", f"{e['from_block']} → {e['to_block']} ({e['reason']})") for e in events]
        sections.append(Section("Curriculum", text, table, [run.plots / "curriculum.png"]))
    evaluation = _evaluation_section(s, run)
    if evaluation is not None:
        sections.append(evaluation)
    if (run.plots / "loss.png").is_file():
        sections.append(Section("Loss", images=[run.plots / "loss.png"]))
    accounting = plot_accounting(s, run.plots / "accounting.png")
    sections.append(
        Section(
            "FLOPs and time",
            "FLOPs are counted with torch's FlopCounterMode once per tensor shape; the baseline is the "
            "fixed-target run of the same steps. Seconds are wall clock.",
            [
                ("teacher FLOPs", f"{s['teacher_flops'] / 1e12:.3f} T"),
                ("student FLOPs", f"{s['student_flops'] / 1e12:.3f} T"),
                ("fixed-target baseline FLOPs", f"{s['baseline_flops'] / 1e12:.3f} T"),
                ("saving", _pct(s["flops_saving"])),
                (
                    "teacher / student / metric seconds",
                    f"{s['teacher_seconds']:.1f} / {s['student_seconds']:.1f} / {s['metric_seconds']:.2f}",
                ),
                ("wall seconds", f"{s['wall_seconds']:.1f}"),
                *_hardware_rows(s),
            ],
            [accounting],
        )
    )
    for data, ev in s.get("eval", {}).items():
        rows = [row for protocol, result in evaluated(ev) for row in protocol.rows(result)]
        if rows:
            sections.append(Section(f"Evaluation on {data}", table=rows))
    if (run.path / "cka_map.png").is_file():
        sections.append(
            Section(
                "CKA map",
                "Linear CKA between student blocks (rows) and teacher blocks.",
                images=[run.path / "cka_map.png"],
            )
        )
    spectra = sorted((run.path / "spectrum").glob("*.png")) if (run.path / "spectrum").is_dir() else []
    if spectra:
        sections.append(Section("Spectra", images=spectra))
    sections.append(Section("Configuration", table=[(k, json.dumps(v)) for k, v in cfg.items()]))
    return sections


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(title: str, sections: list[Section]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0}td{border-bottom:1px solid #ddd;padding:.25em .8em}",
        "td:first-child{color:#555}img{max-width:100%;display:block;margin:.5em 0}h2{margin-top:1.6em}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            parts.append(f"<p>{html.escape(sec.text)}</p>")
        parts.extend(_img_tag(p) for p in sec.images)
        if sec.table:
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in sec.table)
            parts.append(f"<table>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        if sec.text:
            lines += [sec.text, ""]
        lines += [f"![{p.stem}]({p.relative_to(base).as_posix()})" for p in sec.images]
        if sec.images:
            lines.append("")
        if sec.table:
            lines += ["| | |", "|---|---|", *[f"| {k} | {v.replace('|', '/')} |" for k, v in sec.table], ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into the run directory."""
    run = RunDirectory(run_dir)
    sections = build_sections(run)
    title = f"leapkd run {run.path.name}"
    html_path, md_path = run.path / "report.html", run.path / "report.md"
    write_text_atomic(html_path, render_html(title, sections))
    write_text_atomic(md_path, render_markdown(title, sections, run.path))
    return html_path, md_path
