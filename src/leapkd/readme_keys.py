"""The README's key tables, generated from the option models, so the two cannot drift apart.

Each table sits between `<!-- keys:NAME -->` and `<!-- /keys:NAME -->` in README.md;
`python -m leapkd.readme_keys` rewrites them, `--check` only says whether they are current
(a test runs the check).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from leapkd.options import key_table


def _own(model: type[BaseModel], base: type[BaseModel]) -> list[str]:
    """The keys `model` adds to `base`, or whose default it changes."""
    return [
        k
        for k, f in model.model_fields.items()
        if k not in base.model_fields or f.default != base.model_fields[k].default
    ]


def _tables() -> dict[str, Callable[[], str]]:
    from leapkd.analysis.command import SpectrumArgs
    from leapkd.cli import ExportCommand, PlanOutput, RunControl
    from leapkd.config import DistillConfig, MethodArgs
    from leapkd.deploy import ExportArgs
    from leapkd.eval.options import EvalArgs
    from leapkd.methods import FeatureArgs, FixedArgs, LeapArgs, SpectralArgs
    from leapkd.plan import PlanRequest

    return {
        "distill-run": lambda: key_table(RunControl),
        "distill-common": lambda: key_table(DistillConfig),
        "feature": lambda: key_table(FeatureArgs, _own(FeatureArgs, MethodArgs)),
        "leap": lambda: key_table(LeapArgs, _own(LeapArgs, FeatureArgs)),
        "fixed": lambda: key_table(FixedArgs, _own(FixedArgs, FeatureArgs)),
        "spectralkd": lambda: key_table(SpectralArgs, _own(SpectralArgs, FeatureArgs)),
        "eval": lambda: key_table(EvalArgs),
        "spectrum": lambda: key_table(SpectrumArgs),
        "export": lambda: key_table(ExportCommand) + "\n" + key_table(ExportArgs).split("\n", 2)[2],
        "plan": lambda: key_table(PlanRequest) + "\n" + key_table(PlanOutput).split("\n", 2)[2],
    }


def render(text: str) -> str:
    """`text` with every marked table generated afresh (an unknown NAME is an error)."""
    tables = _tables()

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in tables:
            raise KeyError(f"README marks a table '{name}' that leapkd does not generate ({', '.join(tables)})")
        return f"<!-- keys:{name} -->\n{tables[name]()}\n<!-- /keys:{name} -->"

    return re.sub(r"<!-- keys:([\w-]+) -->\n.*?<!-- /keys:\1 -->", table, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("readme", nargs="?", type=Path, default=Path("README.md"))
    p.add_argument("--check", action="store_true", help="exit 1 when a table is not current; write nothing")
    args = p.parse_args(argv)
    text = args.readme.read_text()
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{args.readme}: key tables are out of date; run python -m leapkd.readme_keys", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
