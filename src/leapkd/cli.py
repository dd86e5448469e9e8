"""The `leapkd` command: one subcommand per capability.

User errors (`LeapkdError`) are printed as `error: ...` + `fix: ...` with exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from leapkd.errors import LeapkdError


def format_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table (readable in any terminal and in logs)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(list(columns)), line(["-" * w for w in widths]), *map(line, cells)])


def _cmd_models(args: argparse.Namespace) -> None:
    from leapkd.models import describe_models

    print(format_table(describe_models(), ["name", "kind", "shape", "note"]))


def _cmd_data(args: argparse.Namespace) -> None:
    from leapkd.data import builtin_datasets

    rows = [
        {
            "name": d.name,
            "present": "yes" if d.available else "no",
            "classes": d.num_classes,
            "description": d.description,
            "install": "" if d.available else d.install_hint,
        }
        for d in builtin_datasets()
    ]
    print(format_table(rows, ["name", "present", "classes", "description", "install"]))
    print("\nAny folder with train/ and val/ subfolders (one folder per class) works too.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leapkd",
        description="Knowledge distillation of Vision Transformers (LEAP curriculum, SpectralKD).",
    )
    from leapkd import __version__

    parser.add_argument("--version", action="version", version=f"leapkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], None]]] = {
        "models": ("list the teachers and student presets leapkd knows", _cmd_models),
        "data": ("list the built-in datasets and whether each is present here", _cmd_data),
    }
    for name, (help_text, func) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except LeapkdError as err:
        print(f"error: {err.problem}", file=sys.stderr)
        if err.fix:
            print(f"fix: {err.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
