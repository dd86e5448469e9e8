"""The "On a GPU" section of docs/benchmarks.md, drawn from bench/gpu.py's gpu.json, and its
replacement between marker comments (the rest of the page is left as it is)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

START = "<!-- gpu-benchmark:start (written by bench/gpu.py from docs/benchmarks/gpu.json) -->"
END = "<!-- gpu-benchmark:end -->"
START_PREFIX = "<!-- gpu-benchmark:start"


def replace_section(page: str, section: str, start: str = START_PREFIX, end_marker: str = END) -> str:
    """`page` with the text between the markers (markers included) replaced by `section`, which
    carries its own markers; appended after one blank line when the page has none yet."""
    begin = page.find(start)
    if begin >= 0:
        end = page.find(end_marker, begin)
        if end < 0:
            raise ValueError(f"the page has the start marker {start!r} but not its end marker")
        return page[:begin] + section.strip("\n") + page[end + len(end_marker) :]
    return page.rstrip("\n") + "\n\n" + section.strip("\n") + "\n"


def _f(value: Any, digits: int = 0, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value * scale:,.{digits}f}{unit}"


def _pct(value: Any, digits: int = 1) -> str:
    return _f(value, digits, 100, "%")


def render_section(results: dict[str, Any]) -> str:
    """The whole section, markers included."""
    h = results["header"]
    dry = results.get("dry_run")
    lines = [START, "## On a GPU", ""]
    if dry:
        lines += ["**Dry run on CPU: figures are not GPU figures.** This section checks that bench/gpu.py runs.", ""]
    lines += [
        f"{'Run' if dry else 'Measured on the device'} by one command ({h['seconds']:.0f} s of a "
        f"{h['budget_seconds']:.0f} s budget), finished {h['finished']}:",
        "",
        f"    {h['command']}",
        "",
        f"- Device: {h['device']}; driver {h.get('driver') or '–'}, CUDA {h.get('cuda') or '–'}, "
        f"{h['cpus']} CPU cores; torch {h['torch']}, timm {h['timm']}, lightning {h['lightning']}, "
        f"Python {h['python']}; leapkd at commit {h.get('commit') or 'unknown'}.",
        "- Teachers at random init (`allow_random_teacher`: FLOPs and time do not depend on the weights); images are "
        f"{_dataset_text(results)} decoded and augmented by the training loader.",
        "",
    ]
    parts: list[tuple[str, str, Callable[[dict[str, Any]], list[str]]]] = [
        ("tests", "Tests marked `gpu`", _tests),
        ("peak", "bf16 matrix-product peak (the denominator of MFU)", _peak),
        ("throughput", "Throughput at the size users train at", _throughput),
        ("early_exit", "Early exit: the teacher stopped at block b", _early_exit),
        ("overhead", "The engine against a bare PyTorch loop", _overhead),
        ("compile", "`compile: true` against eager", _compile),
        ("pipeline", "The input pipeline alone", _pipeline),
        ("demo", "The README's `leapkd distill`", _demo),
        ("eval_export", "`leapkd eval` and `leapkd export` on the device, parity with the CPU", _eval_export),
        ("baseline", "The sync-free step against the earlier source", _baseline),
    ]
    for key, title, draw in parts:
        part = results["parts"].get(key)
        if part is None:
            continue
        lines += [f"### {title}", ""]
        status = part.get("status", "ok")
        if status == "skipped":
            lines += [f"Skipped: {part.get('note', '')}", ""]
            continue
        if status == "error":
            lines += [f"Failed: `{_one_line(part.get('error', ''))}`", ""]
            continue
        lines += [*draw(part), *[f"- {n}" for n in part.get("notes", [])], ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _dataset_text(results: dict[str, Any]) -> str:
    d = results.get("dataset")
    if not d:
        return "JPEGs"
    return (
        f"{d['train_images']:,} random-content JPEGs of {d['jpeg_size']} px ({d['mean_jpeg_kib']:.0f} KiB on average)"
    )


def _tests(p: dict[str, Any]) -> list[str]:
    return [
        f"`{p['command']}`: {p['passed']} passed, {p['failed']} failed, {p['skipped']} skipped, "
        f"{p['error']} errors ({p['seconds']:.0f} s).",
    ]


def _peak(p: dict[str, Any]) -> list[str]:
    return [
        f"{p['matrix_size']}³ {p['dtype']} products, {p['repeats']} timed with {p['timer']}: "
        f"median {p['tflops_median']:.1f} TFLOP/s (best {p['tflops_best']:.1f}).",
    ]


def _throughput(p: dict[str, Any]) -> list[str]:
    lines = [
        "`method: fixed` into the `vit-small` student (bf16-mixed); images/s and s/step after the warm-up steps, "
        "from metrics.csv's per-step wall seconds; MFU = counted FLOPs per step / s per step / the measured peak.",
        "",
        "| teacher | batch | images/s | s/step | TFLOP/step | MFU | peak memory GiB | data workers | teacher dtype |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        lines.append(
            f"| {r['label']}{' (largest tried that fits)' if r['kind'] != 'batch' else ''} | {r['batch_size']} "
            f"| {_f(r['images_per_second'])} | {_f(r['seconds_per_step'], 4)} | {_f(r['tflop_per_step'], 2)} "
            f"| {_pct(r['mfu'])} | {_f(r['peak_memory_gib'], 1)} | {r['num_workers']} | {r['teacher_dtype']} |"
        )
    plan = p.get("plan", {})
    if plan.get("rows"):
        lines += ["", "`leapkd plan`'s estimate against the measurement:", "",
                  "| teacher | batch | estimated images/s | measured | error | estimated GiB | measured GiB |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for e in plan["rows"]:
            if "error" in e:
                lines.append(f"| {e['label']} | {e['batch_size']} | failed: `{_one_line(e['error'], 120)}` | | | | |")
                continue
            lines.append(
                f"| {e['label']} | {e['batch_size']} | {_f(e['estimated_images_per_second'])} "
                f"| {_f(e['measured_images_per_second'])} | {_pct(e['images_per_second_error'], 0)} "
                f"| {_f(e['estimated_memory_gib'], 1)} | {_f(e['measured_peak_memory_gib'], 1)} |"
            )
    elif plan.get("note"):
        lines += ["", f"`leapkd plan`: {plan['note']}."]
    return lines


def _early_exit(p: dict[str, Any]) -> list[str]:
    lines = [
        f"{p['teacher']} teacher ({p['levels']} blocks), batch {p['batch_size']}, `method: fixed` with `fixed_level` "
        "b: step time against the step's counted FLOPs, both relative to b = L, and the wall saving over the FLOPs "
        "saving (LEAP's ratio where the teacher is most of the work).",
        "",
        "| b | s/step | TFLOP/step | time vs L | FLOPs vs L | wall saving / FLOPs saving |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        lines.append(
            f"| {r['depth']} | {_f(r['seconds_per_step'], 4)} | {_f(r['tflop_per_step'], 2)} "
            f"| {_f(r.get('time_relative'), 2)} | {_f(r.get('flops_relative'), 2)} "
            f"| {_f(r.get('wall_per_flops_saving'), 2)} |"
        )
    return lines


def _overhead(p: dict[str, Any]) -> list[str]:
    rounds = ", ".join(_pct(x) for x in p["overhead_by_round"])
    return [
        f"{p['teacher']} into the student, batch {p['batch_size']}, {p['precision']}, the same loader, AdamW, "
        "clipping, projector + MSE and CKA metric; interleaved engine, bare, engine, bare.",
        "",
        "| | s/step (median) |",
        "|---|---|",
        f"| bare PyTorch loop | {_f(p['bare_median_seconds_per_step'], 4)} |",
        f"| leapkd engine | {_f(p['engine_median_seconds_per_step'], 4)} |",
        f"| engine overhead | {_pct(p['overhead'])} (per round: {rounds}; target ≤ 5%) |",
    ]


def _compile(p: dict[str, Any]) -> list[str]:
    return [
        f"{p['teacher']}, batch {p['batch_size']}; s/step after {p['warmup_steps']} warm-up steps; compile seconds = "
        "the warm-up's training seconds minus as many compiled steps.",
        "",
        "| | s/step | whole call s |",
        "|---|---|---|",
        f"| eager | {_f(p['eager_seconds_per_step'], 4)} | {_f(p['eager_whole_call_seconds'])} |",
        f"| compile | {_f(p['compiled_seconds_per_step'], 4)} | {_f(p['compiled_whole_call_seconds'])} |",
        "",
        f"Speed-up {_f(p['speedup'], 2)}x; compilation took about {_f(p['compile_seconds'], 0)} s.",
    ]


def _pipeline(p: dict[str, Any]) -> list[str]:
    lines = [
        f"The training loader alone (batch {p['batch_size']}, {p['image_size']} px, pinned memory: "
        f"{'yes' if p['pin_memory'] else 'no'}); the first batch is not counted.",
        "",
        "| data workers | images/s |",
        "|---|---|",
    ]
    lines += [f"| {r['workers']} | {_f(r['images_per_second'])} |" for r in p["rows"]]
    for v in p.get("vs_training", []):
        if v["loader_images_per_second"]:
            lines.append(
                f"\n{v['label']} batch {v['batch_size']} trained at {_f(v['training_images_per_second'])} images/s "
                f"with {v['workers']} workers, {_pct(v['training_over_loader'], 0)} of what the loader alone gives "
                f"with as many: {'decoding limits the GPU' if v['training_over_loader'] > 0.9 else 'the GPU limits'}."
            )
    return lines


def _demo(p: dict[str, Any]) -> list[str]:
    return [
        f"`{p['command']}`; teacher: {p['teacher']}; data: {p['data']}.",
        "",
        "| whole command s | training loop s | images/s | steps | precision (`auto`) | why | workers | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
        f"| {_f(p['whole_command_seconds'], 1)} | {_f(p['training_loop_seconds'], 1)} | {_f(p['images_per_second'])} "
        f"| {p['steps']} | {p['precision']} | {p['precision_reason']} | {p['num_workers']} "
        f"| {_f(p['peak_memory_gib'], 2)} |",
    ]


def _eval_export(p: dict[str, Any]) -> list[str]:
    knn, feats, onnx = p["knn"], p["features"], p["onnx"]
    devices = [d for d in ("cuda", "cpu") if d in knn]
    lines = [
        f"kNN top-1 of the demo's student ({knn['train_per_class']} / {knn['val_per_class']} train / val images "
        "per class): " + ", ".join(f"{d} {_pct(knn[d].get('top1'))} ({knn[d]['seconds']:.0f} s)" for d in devices),
        "",
        f"The student's output tokens on {len(feats) and feats['images']} images against the CPU's fp32 result:",
        "",
        "| on the device | max abs diff | relative L2 | min cosine |",
        "|---|---|---|---|",
    ]
    for key, label in (("fp32_matmul_highest", "fp32"), ("fp32_matmul_high", "fp32, TF32 matmuls"),
                       ("bf16_autocast", "bf16 autocast")):  # fmt: skip
        c = feats[key]
        lines.append(f"| {label} | {c['max_abs_diff']:.2e} | {c['relative_l2']:.2e} | {c['min_cosine']:.6f} |")
    c = onnx["onnx_vs_torch_on_device"]
    lines += [
        "",
        f"`leapkd export --format onnx`: {onnx['export_seconds']:.1f} s, {onnx['onnx_bytes'] / 1e6:.1f} MB; "
        f"onnxruntime ({', '.join(onnx['providers'])}) against torch on the device: max abs diff "
        f"{c['max_abs_diff']:.2e}, min cosine {c['min_cosine']:.6f}.",
    ]
    return lines


def _baseline(p: dict[str, Any]) -> list[str]:
    return [
        f"{p['teacher']}, batch {p['batch_size']}: the same run with `{p['baseline_src']}` on PYTHONPATH "
        "(a child process) against this tree.",
        "",
        "| source | images/s | s/step |",
        "|---|---|---|",
        f"| earlier | {_f(p['old_images_per_second'])} | {_f(p['old_seconds_per_step'], 4)} |",
        f"| this tree | {_f(p['new_images_per_second'])} | {_f(p['new_seconds_per_step'], 4)} |",
        "",
        f"Speed-up {_f(p['speedup'], 3)}x.",
    ]
