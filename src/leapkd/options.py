"""Every command's options: `--key value` tokens read into a pydantic model, its help and its key table.

One reader for `distill`, `eval`, `spectrum`, `export` and `plan`: `--key value`,
`--key=value`, `--flag` alone (true) and `--no-flag` (false) for a yes/no key, `-` and `_`
interchangeable; values read as YAML reads them (numbers, true/false, null, lists), except
text keys, whose values stay text; `--config FILE` reads a YAML file of the same keys first
(the command line wins). Unknown keys and bad values are errors that name the key, with a
did-you-mean and the command whose `--help` lists them (`config.validate`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from leapkd.config import choices_of, describe_key, parse_value, read_values, text_keys, validate
from leapkd.errors import LeapkdError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class TokenKinds:
    """How the reader takes a key's value: as text, or as a yes/no flag that may stand alone."""

    text: frozenset[str]
    flags: frozenset[str]

    @classmethod
    def of(cls, *models: type[BaseModel]) -> TokenKinds:
        paths = {k for m in models for k, f in m.model_fields.items() if Path in get_args(f.annotation)}
        text = frozenset().union(paths, *(text_keys(m) for m in models))
        flags = frozenset(k for m in models for k, f in m.model_fields.items() if _is_flag(f.annotation))
        return cls(text, flags)


def _is_flag(annotation: Any) -> bool:
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return bool in get_args(annotation)
    return annotation is bool


def parse_tokens(tokens: Sequence[str], kinds: TokenKinds, usage: str) -> dict[str, Any]:
    """`--key value` / `--key=value` / `--flag` / `--no-flag` tokens -> {key: value}.

    `usage` is the command's synopsis, shown when a token is not an option."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise LeapkdError(f"unexpected argument '{tok}'", f"write it as {usage}")
        key, eq, value = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq and key.startswith("no_") and key[3:] in kinds.flags and key not in kinds.flags:
            out[key[3:]] = False
            i += 1
            continue
        if not eq:
            takes_next = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            if takes_next and key in kinds.flags and tokens[i + 1].lower() not in _YES_NO:
                takes_next = False  # `--resume runs/x`: the flag alone, the next token is not its value
            if takes_next:
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = parse_value(value, as_text=key in kinds.text)
        i += 1
    return out


_YES_NO = {"true", "false", "yes", "no", "on", "off", "1", "0", "null", "none", "~"}


def read_options(model: type[M], tokens: Sequence[str], command: str, usage: str) -> M:
    """The options of `leapkd <command>` from its tokens (after the positional arguments)."""
    values = parse_tokens(tokens, TokenKinds.of(model), usage)
    path = values.pop("config", None) if "config" not in model.model_fields else None
    return validate(read_values(path, values) if path else values, model, command=command)


def help_lines(model: type[BaseModel], keys: Sequence[str] | None = None) -> list[str]:
    """One line per key: `--key   meaning [default; choices; range]`."""
    return [f"  --{_flag(model, k):<24} {describe_key(model, k)}" for k in keys or list(model.model_fields)]


def _flag(model: type[BaseModel], key: str) -> str:
    """The name a key is given by on the command line (its alias, where it has one)."""
    return model.model_fields[key].alias or key


def key_table(model: type[BaseModel], keys: Sequence[str] | None = None) -> str:
    """A Markdown table of keys (key, default, meaning), as the README shows them."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in keys or list(model.model_fields):
        field = model.model_fields[key]
        meaning = field.description or ""
        choices = choices_of(model, key)
        if choices and not all(f"`{c}`" in meaning for c in choices):
            meaning += f" (one of {', '.join(f'`{c}`' for c in choices)})"
        rows.append(f"| `{_flag(model, key)}` | {_default_text(field.default)} | {_markdown(meaning)} |")
    return "\n".join(rows)


def _markdown(text: str) -> str:
    """Plain help text as Markdown table text: `<` outside code spans escaped (`<run>` is no HTML tag)."""
    parts = text.split("`")
    return "`".join(p.replace("<", "&lt;") if i % 2 == 0 else p for i, p in enumerate(parts))


def _default_text(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def split_keys(values: Mapping[str, Any], model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keys `model` has, the rest)."""
    own = {k: v for k, v in values.items() if k in model.model_fields}
    return own, {k: v for k, v in values.items() if k not in own}


def as_flags(text: str, keys: frozenset[str]) -> str:
    """A message for the terminal: each key it names in backticks (`` `cls_weight` ``) that the
    command reads becomes its flag (`--cls_weight`); lower layers name keys, never flags."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: f"--{m[1]}" if m[1] in keys else m[0], text)
