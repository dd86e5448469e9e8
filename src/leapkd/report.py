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

import yaml

from leapkd.disk import write_text_atomic
from leapkd.edge import edge_rows
from leapkd.eval.protocol import evaluated
from leapkd.headline import cost_rows, headline_rows, pct
from leapkd.plots import plot_accounting
from leapkd.rundir import RunDirectory
from leapkd.shared_run import SharedRunSummary, is_shared_run, load_shared_summary, shared_cost_rows, students_table
from leapkd.summary import RunSummary, load_summary


@dataclass
class Section:
    """A heading, a sentence or two, pictures, then a two-column table (in that order)."""

    title: str
    text: str = ""
    table: list[tuple[str, str]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    grid: tuple[list[str], list[list[str]]] | None = None  # a table of several columns (header, rows), last


def _evaluation_section(s: RunSummary, run: RunDirectory) -> Section | None:
    """The evaluations during training (eval_every): the curve, the best, the cost."""
    evaluation = s.evaluation
    if evaluation is None or not evaluation.history or evaluation.best is None or evaluation.last is None:
        return None
    metric, best, last = evaluation.metric, evaluation.best, evaluation.last
    share = evaluation.share_of_wall
    rows = [
        (
            "evaluated on",
            f"{evaluation.data}, {evaluation.images_per_class} fixed images per class and split, "
            f"{evaluation.transform}",
        ),
        ("schedule", f"every {evaluation.every}, before the first and after the last step"),
        (f"best {metric}", f"{pct(best[metric])} at step {best['step']} (student_best.safetensors)"),
        (f"last {metric}", f"{pct(last[metric])} at step {int(last['step'])} (student.safetensors)"),
        (
            "evaluations / their cost",
            f"{len(evaluation.history)} / {evaluation.seconds:.1f} s"
            + (f" ({pct(share)} of wall time)" if share is not None else ""),
        ),
    ]
    if evaluation.early_stop is not None:
        rows.append(("early stop", f"after step {evaluation.early_stop.step}: {evaluation.early_stop.reason}"))
    text = (
        "The student scored on fixed, un-augmented images while it trained; the star marks the best "
        f"{metric}, green lines the level-ups."
    )
    images = [run.plots / "evaluation.png"] if (run.plots / "evaluation.png").is_file() else []
    return Section("Evaluation during training", text, rows, images)


def build_sections(run: RunDirectory) -> list[Section]:
    """Everything the report shows, from what the run directory holds."""
    s = load_summary(run)
    cfg = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    sections = [Section("At a glance", table=headline_rows(s))]
    if (run.plots / "curriculum.png").is_file():
        events = s.level_up_events
        text = (
            f"The target moved {len(events)} times; calibration started it at block {s.start_block}."
            if s.method == "leap"
            else "The target stays at the teacher's last block (fixed-target baseline)."
        )
        table = [(f"step {e.step}", f"{e.from_block} → {e.to_block} ({e.reason})") for e in events]
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
            cost_rows(s),
            [accounting],
        )
    )
    for data, ev in s.eval.items():
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
    if (run.path / "finetune.png").is_file():
        sections.append(
            Section(
                "Fine-tuned whole",
                "Validation top-1 after each fine-tuning epoch (`--protocols finetune`): the student against the "
                "same architecture from scratch (and other weights), the identical recipe and data order.",
                images=[run.path / "finetune.png"],
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
        if sec.grid is not None:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in sec.grid[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in sec.grid[1])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
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
        if sec.grid is not None:
            header, rows = sec.grid
            lines += [_md_row(header), _md_row(["---"] * len(header)), *(_md_row(r) for r in rows), ""]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def shared_sections(run: RunDirectory, s: SharedRunSummary) -> list[Section]:
    """The report of a run of several students: the students side by side, then the cost."""
    text = (
        f"{len(s.students)} students distilled from one teacher pass per batch ({s.method}); each has its own "
        "directory with the report a run of its own writes (students/<name>/report.html)."
    )
    sections = [
        Section("Students", text, grid=students_table(s)),
        Section(
            "Cost",
            "The teacher's FLOPs are counted once for the run; 'separate runs' is the sum of what each student's "
            "run alone takes (its own summary's FLOPs).",
            shared_cost_rows(s),
        ),
    ]
    if s.edge:
        figure = s.edge_quality()
        plot = run.plots / "edge.png"
        sections.append(
            Section(
                "Edge table",
                "Each student exported to ONNX and timed on this machine's CPU with ONNX Runtime (batch 1); "
                f"* marks the Pareto front of {figure} against the 1-thread median latency.",
                images=[plot] if plot.is_file() else [],
                grid=edge_rows(s.edge, figure),
            )
        )
    return sections


def write_shared_report(run: RunDirectory, s: SharedRunSummary) -> tuple[Path, Path]:
    """report.html and report.md of a run of several students."""
    return _write(run, shared_sections(run, s))


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into the run directory."""
    run = RunDirectory(run_dir)
    if is_shared_run(run):
        return write_shared_report(run, load_shared_summary(run))
    return _write(run, build_sections(run))


def _write(run: RunDirectory, sections: list[Section]) -> tuple[Path, Path]:
    title = f"leapkd run {run.path.name}"
    html_path, md_path = run.path / "report.html", run.path / "report.md"
    write_text_atomic(html_path, render_html(title, sections))
    write_text_atomic(md_path, render_markdown(title, sections, run.path))
    return html_path, md_path
