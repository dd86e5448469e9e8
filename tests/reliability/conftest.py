"""A disk that refuses writes, for the full-disk tests: every file leapkd writes goes through
`leapkd.disk.open_for_writing`, which the fixture wraps."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class _RefusingFile:
    """A real file whose writes fail with ENOSPC once the disk is full (a refused write lands
    partly first, as on a real disk)."""

    def __init__(self, file: Any, full: Callable[[int], int]) -> None:
        self.file, self.full = file, full

    def write(self, data: Any) -> int:
        room = self.full(len(memoryview(data)))
        if room < len(memoryview(data)):
            self.file.write(bytes(memoryview(data)[:room]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __enter__(self) -> _RefusingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class FullDisk:
    """`refuse(match, after=k)` makes writes to the files `match` accepts fail after the first
    `k` of them; `budget(n)` lets only `n` more bytes be written in all; `clear()` gives the
    space back."""

    def __init__(self) -> None:
        self.match: Callable[[Path], bool] | None = None
        self.after = 0
        self.left: int | None = None

    def refuse(self, match: Callable[[Path], bool], after: int = 0) -> None:
        self.match, self.after = match, after

    def budget(self, n: int) -> None:
        self.left = n

    def clear(self) -> None:
        self.match, self.left = None, None

    def room(self, path: Path, wanted: int) -> int:
        if self.match is not None and self.match(path):
            self.after -= 1
            if self.after < 0:
                return wanted // 2
        if self.left is None:
            return wanted
        room = min(wanted, self.left)
        self.left -= room
        return room


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    from leapkd import disk

    state = FullDisk()
    real = disk.open_for_writing

    def opened(path: Path, mode: str = "wb", buffering: int = -1) -> Any:
        return _RefusingFile(real(path, mode, buffering), lambda n: state.room(Path(path), n))

    monkeypatch.setattr(disk, "open_for_writing", opened)
    return state
