"""The run's figures as rows of (label, value): the one place a `RunSummary` becomes text.

`headline_rows` is what the terminal prints after `leapkd distill`, the report's "At a
glance" and the model card's table; `cost_rows` is the FLOPs and time detail of the report
and the model card.
"""

from __future__ import annotations

from leapkd.eval.protocol import evaluated
from leapkd.summary import RunSummary

Row = tuple[str, str]


def pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def headline_rows(s: RunSummary) -> list[Row]:
    """What was distilled into what, how far the target went, what it cost, how good it is."""
    t, st = s.teacher, s.student
    size = f", {st.image_size} px" if st.image_size else ""  # the size it trained at
    rows = [
        ("method", s.method),
        (
            "teacher → student",
            f"{t.name} ({t.blocks} blocks) → {st.name} ({st.blocks} blocks, {st.params / 1e6:.2f} M parameters)",
        ),
        ("data", f"{s.data}, {s.train_images} training images{size}"),
        ("steps / epochs", f"{s.steps} / {s.epochs} (global batch {s.global_batch})"),
        ("target block", f"{s.start_block} → {s.final_block} of {t.blocks}"),
    ]
    if s.pending_block is not None and s.pending_block != s.final_block:
        rows.append(("next block (pending level-up)", str(s.pending_block)))
    rows += [
        ("level-ups at steps", ", ".join(map(str, s.level_ups)) or "-"),
        ("FLOPs saving vs fixed target", pct(s.flops_saving)),
        ("training FLOPs (teacher + student)", f"{(s.teacher_flops + s.student_flops) / 1e12:.2f} TFLOP"),
        ("wall time", f"{s.wall_seconds:.1f} s (teacher {s.teacher_seconds:.1f} s, student {s.student_seconds:.1f} s)"),
    ]
    if s.images_per_second is not None:
        rows.append(("images/s", f"{s.images_per_second:.1f}"))
    if s.precision is not None:
        rows.append(("precision", f"{s.precision} ({s.precision_reason})"))
    return rows + _quality_rows(s) + [("status", status_text(s))]


def _quality_rows(s: RunSummary) -> list[Row]:
    """The student's own head, the best evaluation during training, the headline protocol results."""
    rows = []
    scores = s.student_classification
    if scores is not None:
        top5 = f" / {pct(scores.top5)}" if scores.top5 is not None else ""
        label = "student head top-1" + (" / top-5" if top5 else "")
        rows.append((label, f"{pct(scores.top1)}{top5} ({scores.images_per_class} val images per class)"))
    evaluation = s.evaluation
    if evaluation is not None and evaluation.best is not None:
        best = f"{pct(evaluation.best[evaluation.metric], 2)} at step {evaluation.best['step']}"
        rows.append((f"best {evaluation.metric} during training", best))
        share = f", {pct(evaluation.share_of_wall)} of wall time" if evaluation.share_of_wall else ""
        rows.append(("evaluations", f"{len(evaluation.history)}, {evaluation.seconds:.1f} s{share}"))
    for data, results in s.eval.items():
        for protocol, result in evaluated(results):
            if protocol.headline:
                rows += [(f"{label} on {data}", value) for label, value in protocol.rows(result)[:1]]
    return rows


def status_text(s: RunSummary) -> str:
    """completed / interrupted / failed, with the early stop or the way to continue."""
    stop = s.evaluation.early_stop if s.evaluation is not None else None
    if s.status != "completed":
        return f"{s.status} after step {s.steps} (continue with --resume)"
    return f"completed (early stop after step {stop.step}: {stop.reason})" if stop else "completed"


def cost_rows(s: RunSummary) -> list[Row]:
    """FLOPs, seconds and the hardware the run trained on (older runs lack some of these)."""
    rows = [
        ("teacher FLOPs", f"{s.teacher_flops / 1e12:.3f} T"),
        ("student FLOPs", f"{s.student_flops / 1e12:.3f} T"),
        ("fixed-target baseline FLOPs", f"{s.baseline_flops / 1e12:.3f} T"),
        ("saving", pct(s.flops_saving)),
        (
            "teacher / student / metric seconds",
            f"{s.teacher_seconds:.1f} / {s.student_seconds:.1f} / {s.metric_seconds:.2f}",
        ),
        ("wall seconds", f"{s.wall_seconds:.1f}"),
    ]
    if s.precision is not None:
        rows.append(("precision", f"{s.precision} ({s.precision_reason}), teacher in {s.teacher_dtype}"))
    if s.images_per_second is not None:
        rows.append(("images/s (whole job)", f"{s.images_per_second:.1f}"))
    if s.job_flops is not None and s.flops_per_device is not None:
        rows.append(("FLOPs per device / whole job", f"{s.flops_per_device / 1e12:.3f} T / {s.job_flops / 1e12:.3f} T"))
    if s.peak_memory_bytes:
        rows.append(("peak device memory", f"{s.peak_memory_bytes / 2**30:.2f} GiB"))
    if s.num_workers is not None:
        rows.append(("data workers per process", str(s.num_workers)))
    return rows
