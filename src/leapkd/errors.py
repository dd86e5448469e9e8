"""User-facing errors: every one says what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeapkdError(Exception):
    """An error caused by the user's input, reported without a traceback by the CLI.

    `fix` is a short instruction telling the user what to do about it.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\nFix: {fix}")


def closest_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names most similar to `name` (for 'did you mean' hints)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.4)
    if not close:
        close = [k for k in known if name.lower() in k.lower()][:n]
    return close
