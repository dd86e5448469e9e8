"""Every value of every paper recipe equals the table in docs/fidelity.md that cites its reference."""

import json
import re
from pathlib import Path

import pytest

from leapkd.recipes import RECIPES

PAGE = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
PAPER_RECIPES = [name for name in RECIPES if not name.startswith("demo")]


def documented() -> dict[str, dict[str, tuple[object, str]]]:
    """{recipe: {key: (value, reference)}} from the page's tables."""
    tables: dict[str, dict[str, tuple[object, str]]] = {}
    current = None
    for line in PAGE.read_text().splitlines():
        heading = re.fullmatch(r"### `([\w-]+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        row = re.fullmatch(r"\| `(\w+)` \| `(.+)` \| (.+) \|", line)
        if row and current is not None:
            current[row.group(1)] = (json.loads(row.group(2)), row.group(3))
    return tables


def test_every_paper_recipe_has_a_table():
    assert sorted(documented()) == sorted(PAPER_RECIPES)


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_a_recipe_equals_its_documented_values(name):
    table = documented()[name]
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPES[name].values.items()}
    assert sorted(table) == sorted(values), "every key of the recipe is in its table, and no other"
    for key, value in values.items():
        assert table[key][0] == value, f"{name}.{key}: recipe {value!r}, docs/fidelity.md {table[key][0]!r}"
        assert re.search(r"\.(md|py|sh):\d+", table[key][1]), f"{name}.{key} cites no file and line"
