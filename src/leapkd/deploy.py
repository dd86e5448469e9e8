"""Export a finished run's student for use outside leapkd.

Formats (files land in `<run>/export/` unless `out_dir` is given):

- `safetensors`: `student.safetensors`, the backbone weights (timm keys) with metadata;
- `timm`: `model.safetensors` + `config.json`, as timm's `save_for_hf` writes them, so
  `timm.create_model("local-dir:<dir>", pretrained=True)` loads the student without leapkd and
  `huggingface_hub` can push the directory unchanged (the card has the Hub's front matter);
- `onnx`: `student.onnx` (input `images` (B, 3, S, S), output `tokens`, dynamic batch),
  exported with the TorchScript-based exporter and checked against onnxruntime; with
  `latency`, also timed on this machine's CPU (batch 1, one thread and all threads).

Every export (re)writes a model card `README.md` describing all formats in the directory;
`export.json` records what each export wrote so the card can cover several of them.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field

from leapkd.accounting import count_flops
from leapkd.config import StrictKeys, validate
from leapkd.disk import write_error, write_text_atomic
from leapkd.edge import Latency
from leapkd.errors import LeapkdError, closest_names
from leapkd.eval.protocol import evaluated
from leapkd.headline import cost_rows, headline_rows, pct
from leapkd.latency import require_onnx, student_latency
from leapkd.models import PRESETS, Backbone, head_file_of, is_timm_name, load_student_file, save_student_file, wrap
from leapkd.rundir import RunDirectory
from leapkd.shared_run import student_source
from leapkd.summary import RunSummary, load_summary

FORMATS = ("safetensors", "timm", "onnx")
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
ONNX_CHECK_BATCHES = (1, 3)
# Real timm ViT names the presets are built on (the kwargs set the actual shape).
# Python that loads a timm export with timm alone, run from the export directory (the model card's).
TIMM_SNIPPET = (
    "import timm\n\n"
    'model = timm.create_model("local-dir:.", pretrained=True).eval()  # config.json + model.safetensors\n'
    "features = model.forward_features(images)  # images: normalised (B, 3, H, W) floats\n"
)
_FILES = {
    "safetensors": ("student.safetensors",),
    "timm": ("model.safetensors", "config.json"),
    "onnx": ("student.onnx",),
}


class ExportArgs(StrictKeys):
    """The options of `leapkd export` and `leapkd.export`, bar the format."""

    out_dir: str | Path | None = Field(None, description="output directory (default: <run>/export)")
    image_size: int | None = Field(
        None, ge=1, description="rebuild the student at this resolution (default: the run's)"
    )
    which: Literal["last", "best"] = Field(
        "last",
        description="the student at the last step, or at the best evaluation during training (runs with eval_every)",
    )
    student: str | None = Field(
        None,
        description="the student of a run of several to export (its name, as in `<run>/students/<name>`); "
        "the command line exports every student when none is named",
    )
    latency: bool = Field(
        False,
        description="onnx only: time the exported model on this CPU (ONNX Runtime, batch 1, 1 thread and all "
        "threads) into export.json and the model card",
    )


def export(run_dir: str | Path, format: str, **options: Any) -> dict[str, Any]:
    """Export the student of `run_dir` as `format`; returns the paths written and figures.

    `options` are the keys of `ExportArgs`. `which` is "last" (the student at the last step)
    or "best" (at the best evaluation during training, with eval_every). `image_size`
    rebuilds the student at another resolution (position embeddings resampled as leapkd does
    at load time); by default the training size is kept.
    """
    args = validate(options, ExportArgs, command="export")
    which = args.which
    if format not in FORMATS:
        hint = closest_names(format, FORMATS)
        raise LeapkdError(
            f"unknown export format '{format}'",
            (f"did you mean {', '.join(hint)}? " if hint else "") + f"choose one of {', '.join(FORMATS)}",
        )
    if args.latency and format != "onnx":
        raise LeapkdError(
            f"`latency` times the ONNX model, and this export is {format}",
            "export with `format` onnx to measure its latency, or leave `latency` off",
        )
    run = RunDirectory(student_source(run_dir, args.student, "export"))
    student_file = _student_file(run, which)
    if format == "onnx":
        require_onnx("ONNX export")
    summary = load_summary(run, missing_ok=True)
    config = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    backbone = load_student_file(student_file, args.image_size).eval()
    out = Path(args.out_dir) if args.out_dir is not None else run.path / "export"
    out.mkdir(parents=True, exist_ok=True)

    if format == "safetensors":
        result = _export_safetensors(backbone, summary, out)
        head = head_file_of(student_file)
        if head.is_file():  # the student's own classifier travels with it
            shutil.copy(head, out / "student_head.safetensors")
            result["files"] = [*result["files"], str(out / "student_head.safetensors")]
    elif format == "timm":
        result = _export_timm(backbone, out)
    else:
        result = _export_onnx(backbone, out)
        if args.latency:
            result["latency"] = [m.model_dump() for m in student_latency(out / "student.onnx")]
    result = {"format": format, "run_dir": str(run.path), "which": which, "image_size": backbone.image_size, **result}
    result["flops_per_image"] = forward_flops(backbone)
    manifest = _update_manifest(out, run.path, result)
    card = out / "README.md"
    write_text_atomic(card, model_card(run, summary, config, backbone, manifest, which))
    result["card"] = str(card)
    result["files"] = [*result["files"], str(card)]
    return result


# ----- loading ----------------------------------------------------------------------------
def forward_flops(backbone: Backbone) -> int:
    """FLOPs of one image through the student (inference, its own resolution)."""
    images = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        return count_flops(lambda: backbone(images))[0]


def _student_file(run: RunDirectory, which: str) -> Path:
    """The student file `which` names ("last" or "best"), or a LeapkdError saying why there is none."""
    if not run.student.is_file():
        raise LeapkdError(
            f"{run.path} is not a finished leapkd run (no student.safetensors)",
            "pass runs/<name> of a run that finished (distillation writes student.safetensors at the end)",
        )
    if which == "best" and not run.student_best.is_file():
        raise LeapkdError(
            f"{run.path} has no best student (student_best.safetensors): it was not evaluated during training",
            "export `which` last, or train with `eval_every` N to keep the best student",
        )
    return run.student if which == "last" else run.student_best


# ----- formats ----------------------------------------------------------------------------
def _export_safetensors(backbone: Backbone, summary: RunSummary | None, out: Path) -> dict[str, Any]:
    path = save_student_file(
        backbone,
        out / "student.safetensors",
        mean=backbone.mean,
        std=backbone.std,
        teacher=summary.teacher.name if summary else "",
        method=summary.method if summary else "",
    )
    return {"files": [str(path)]}


def timm_spec(backbone: Backbone) -> tuple[str, dict[str, Any]]:
    """(timm model name, kwargs) that rebuild the student's architecture in timm."""
    kwargs: dict[str, Any] = dict(backbone.build.get("model_kwargs") or {})
    if backbone.name in PRESETS:
        preset = PRESETS[backbone.name]
        base = preset.timm_base
        kwargs.update(preset.shape())
    elif not is_timm_name(backbone.name):
        raise LeapkdError(
            f"the student '{backbone.name}' is not a timm model (a Hugging Face directory or a registered model)",
            "export it as safetensors or onnx",
        )
    else:
        base = backbone.name
    if backbone.patch_size is not None:  # the token families are built for one image and patch size
        kwargs.update(patch_size=backbone.patch_size, img_size=backbone.image_size)
    return base, kwargs


def _export_timm(backbone: Backbone, out: Path) -> dict[str, Any]:
    """timm's own export (`save_for_hf`: weights and config), written in a staging folder, loaded
    back from there through `local-dir:` and compared with the student, and only then moved
    beside the other formats (a failed check leaves an earlier export as it was)."""
    name, kwargs = timm_spec(backbone)
    staged = out / ".timm-export.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        staged.mkdir()
        diff = _save_for_timm(backbone, name, kwargs, staged)
        if diff > 1e-6:
            raise LeapkdError(
                f"timm model {name} differs from the student (max abs diff {diff:.2e})",
                "export as safetensors or onnx instead",
            )
        for file in _FILES["timm"]:
            os.replace(staged / file, out / file)
    except OSError as err:
        raise write_error(out, err) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return {
        "files": [str(out / f) for f in _FILES["timm"]],
        "timm_name": name,
        "timm_kwargs": kwargs,
        "max_abs_diff": diff,
        "snippet": TIMM_SNIPPET,
    }


def _save_for_timm(backbone: Backbone, name: str, kwargs: dict[str, Any], folder: Path) -> float:
    """Build the student as timm model `name`, write it with `save_for_hf` into `folder`, load it
    back as a user would (`local-dir:`); the largest difference of their features."""
    import timm
    from timm.models import save_for_hf

    source = save_student_file(backbone, folder / "student.safetensors")
    try:
        overlay = {"file": str(source), "mean": tuple(backbone.mean), "std": tuple(backbone.std)}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0, **kwargs)
        save_for_hf(model, str(folder), model_args={"num_classes": 0, **kwargs}, safe_serialization=True)
        source.unlink()
        reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    except OSError:
        raise  # a refused write: the caller names the folder and the free space
    except Exception as err:
        raise LeapkdError(
            f"timm could not rebuild the student as {name} with {kwargs}: {type(err).__name__}: {err}",
            "export as safetensors or onnx instead",
        ) from err
    images = _check_images(2, backbone.image_size)
    with torch.no_grad():  # the same features, read from timm's model through the same contract
        return float((wrap(reloaded, backbone.name, backbone.image_size)(images) - backbone(images)).abs().max())


def _export_onnx(backbone: Backbone, out: Path) -> dict[str, Any]:
    import onnxruntime as ort

    path = out / "student.onnx"
    size = backbone.image_size
    # The TorchScript-based exporter: the dynamo one needs onnxscript, not a leapkd dependency.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice and tracer warnings on static shapes
        torch.onnx.export(
            backbone,
            (_check_images(2, size),),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["tokens"],
            dynamic_axes={"images": {0: "batch"}, "tokens": {0: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = {}
    for batch in ONNX_CHECK_BATCHES:
        images = _check_images(batch, size, seed=batch)
        with torch.no_grad():
            expected = backbone(images).numpy()
        got = session.run(["tokens"], {"images": images.numpy()})[0]
        if got.shape != expected.shape:
            raise LeapkdError(
                f"ONNX output has shape {got.shape} at batch {batch}, expected {expected.shape}",
                "report this as a leapkd bug; export as safetensors meanwhile",
            )
        diffs[batch] = float(abs(got - expected).max())
    worst = max(diffs.values())
    if worst > ONNX_TOLERANCE:
        raise LeapkdError(
            f"ONNX model differs from the student by {worst:.2e} (tolerance {ONNX_TOLERANCE:.0e})",
            "report this as a leapkd bug; export as safetensors meanwhile",
        )
    return {
        "files": [str(path)],
        "exporter": "torchscript",
        "opset": ONNX_OPSET,
        "max_abs_diff": worst,
        "max_abs_diff_by_batch": diffs,
    }


def _check_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded normal noise shaped like normalised images."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen)


# ----- manifest and model card ------------------------------------------------------------
def _update_manifest(out: Path, run_path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Merge this export into `export.json`, dropping formats whose files are gone."""
    path = out / "export.json"
    manifest: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if manifest.get("run") != str(run_path.resolve()):
        manifest = {"run": str(run_path.resolve()), "formats": {}}
    formats = {f: e for f, e in manifest["formats"].items() if all((out / n).is_file() for n in _FILES[f])}
    formats[result["format"]] = {k: v for k, v in result.items() if k not in ("run_dir", "files")}
    manifest["formats"] = {f: formats[f] for f in FORMATS if f in formats}
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def model_card(
    run: RunDirectory,
    summary: RunSummary | None,
    config: dict[str, Any],
    backbone: Backbone,
    manifest: dict[str, Any],
    which: str = "last",
) -> str:
    """The README.md written beside the exported files (`which` student: "last" or "best")."""
    teacher = summary.teacher.name if summary else config.get("teacher", "unknown")
    method = summary.method if summary else config.get("method", "unknown")
    rows = [
        (
            "exported student",
            f"`{backbone.name}` ({backbone.family}, {backbone.num_levels} levels, width {backbone.width}"
            + (f", patch {backbone.patch_size}" if backbone.patch_size else "")
            + f", {sum(p.numel() for p in backbone.parameters()) / 1e6:.2f} M parameters), "
            + _which_row(summary, which),
        ),
        ("classification head", _head_row(summary)),
    ]
    if summary is not None:
        rows += headline_rows(summary)
    else:  # a run that wrote no summary yet: what its configuration says
        rows += [("teacher", f"`{teacher}`"), ("method", f"`{method}`"), ("data", f"`{config.get('data', 'unknown')}`")]
    rows += latency_rows(manifest["formats"].get("onnx", {}))
    lines = [
        "---",  # the Hugging Face Hub's model-card metadata
        "library_name: timm",
        "tags: [image-feature-extraction, timm, leapkd, knowledge-distillation]",
        "pipeline_tag: image-feature-extraction",
        "---",
        "",
        f"# {run.path.name}: distilled `{backbone.name}` student",
        "",
        f"A Vision Transformer backbone distilled by leapkd from `{teacher}` with method `{method}`.",
        "",
        *_table(rows),
    ]
    if summary is not None:
        lines += ["## Training cost", "", *_table(cost_rows(summary))]
    evals = {
        name: dict(row for protocol, result in evaluated(ev) for row in protocol.rows(result))
        for name, ev in (summary.eval if summary else {}).items()
    }
    columns = list(dict.fromkeys(label for figures in evals.values() for label in figures))
    if columns:
        lines += ["## Evaluation", "", f"| dataset | {' | '.join(columns)} |", "|---|" + "---|" * len(columns)]
        for name, figures in evals.items():
            lines.append(f"| {name} | " + " | ".join(figures.get(c, "n/a") for c in columns) + " |")
        lines.append("")
    lines += [
        "## Input and output",
        "",
        "RGB images scaled to [0, 1], then normalised per channel with",
        f"mean `{backbone.mean}` and std `{backbone.std}`.",
        f"Output: the last level's normalised features as tokens (B, {backbone.num_prefix_tokens} + "
        f"{backbone.grid[0]}x{backbone.grid[1]} positions, {backbone.width});",
        (
            f"tokens 0..{backbone.num_prefix_tokens - 1} are the prefix (CLS first), then the positions row by row."
            if backbone.num_prefix_tokens
            else "No prefix tokens: the positions row by row."
        ),
        "",
    ]
    lines += _load_sections(backbone, manifest["formats"])
    return "\n".join(lines)


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def latency_rows(onnx_entry: dict[str, Any]) -> list[tuple[str, str]]:
    """The model card's rows of the ONNX export's measured latency (none when it was not timed)."""
    label = "latency (ONNX Runtime, CPU, batch 1)"
    return [(label, Latency.model_validate(m).text()) for m in onnx_entry.get("latency", [])]


def _head_row(summary: RunSummary | None) -> str:
    scores = summary.student_classification if summary else None
    if scores is None:
        return "none (the run trained no student head)"
    return (
        f"`student_head.safetensors` (nn.Linear on the pooled last level), top-1 {pct(scores.top1)} on "
        f"{scores.images_per_class} validation images per class of `{scores.data}`"
    )


def _which_row(summary: RunSummary | None, which: str) -> str:
    evaluation = summary.evaluation if summary else None
    if which == "best" and evaluation is not None and evaluation.best is not None:
        metric, best = evaluation.metric, evaluation.best
        return f"the best evaluation during training ({metric} {pct(best[metric])} at step {best['step']})"
    return "the last step" if which == "last" else "the best evaluation during training"


def _load_sections(backbone: Backbone, formats: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = ["## Files and how to load them", ""]
    for fmt, entry in formats.items():
        size = entry["image_size"]
        files = ", ".join(f"`{n}`" for n in _FILES[fmt])
        lines += [f"### {fmt}", "", f"{files}, image size {size} x {size}.", ""]
        if fmt == "safetensors":
            code = (
                "from leapkd.models import load_student_file\n\n"
                'backbone = load_student_file("student.safetensors").eval()  # rebuilt from the file\'s metadata\n'
                "tokens = backbone(images)\n"
            )
            lines.append("The model's own (timm) keys, no projector, no head. With leapkd:")
        elif fmt == "timm":
            code = TIMM_SNIPPET
            lines.append(
                f"With timm alone, from this directory (`config.json`: architecture `{entry['timm_name']}` "
                "and its arguments, mean and std):"
            )
        else:
            code = (
                "import onnxruntime as ort\n\n"
                'session = ort.InferenceSession("student.onnx")\n'
                '(tokens,) = session.run(["tokens"], {"images": images})  # float32 (B, 3, H, W), any B\n'
            )
            lines.append(
                f"Exported with the TorchScript-based exporter, opset {entry['opset']}, dynamic batch; "
                f"max abs difference to PyTorch {entry['max_abs_diff']:.1e} (batches "
                f"{', '.join(str(b) for b in ONNX_CHECK_BATCHES)}). The image size is fixed at export."
            )
        lines += ["", "```python", code.rstrip("\n"), "```", ""]
    return lines
