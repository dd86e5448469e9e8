"""Writing files whole or not at all, and saying plainly when the disk refuses.

Every file of a run goes through `write_atomic` (metrics.csv, appended row by row, through
`open_for_appending`): written to a temporary file beside its target, flushed to the disk,
then renamed over it. A failed write (a full
disk, a quota, a read-only mount) removes the temporary file, leaves the previous version
of the target as it was, and raises a `LeapkdError` naming the path and the free space.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from leapkd.errors import LeapkdError


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write: torch.save reports a
    failed write as a RuntimeError without its errno, so the cause is read back here."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.error: OSError | None = None
        self.written = 0

    def write(self, data: Any) -> int:
        try:
            n = self.file.write(data)
        except OSError as err:
            self.error = err
            raise
        self.written += n
        return n

    def __getattr__(self, name: str) -> Any:  # flush, seek, tell, ... of the real file
        return getattr(self.file, name)


def open_for_writing(path: Path, mode: str = "wb", buffering: int = -1) -> IO[Any]:
    """The one place run files are opened for writing (fault-injection tests replace it)."""
    return path.open(mode, buffering=buffering)


def open_for_appending(path: Path) -> IO[bytes]:
    """`path` opened to append, unbuffered: each write reaches the system at once (metrics.csv)."""
    return open_for_writing(path, "ab", buffering=0)


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], keep_previous: bool = False) -> None:
    """Write `path` through `write(file)` atomically; `keep_previous` keeps the old file as
    `<name>.prev` until the new one is complete (checkpoints)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    file: _RecordingFile | None = None
    try:
        with open_for_writing(tmp) as raw:
            file = _RecordingFile(raw)
            try:
                write(cast(IO[bytes], file))
            except Exception as err:
                if file.error is not None:
                    raise file.error from err
                raise
            raw.flush()
            os.fsync(raw.fileno())
        if keep_previous and path.exists():
            _keep_as_previous(path)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err, written=file.written if file is not None else None) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _keep_as_previous(path: Path) -> None:
    """`path` also as `<name>.prev`, through a hard link where the filesystem has them, so `path`
    itself is never missing (a crash here leaves both); else by a rename."""
    previous, staged = path.with_name(path.name + ".prev"), path.with_name(f"{path.name}.prev.{os.getpid()}.tmp")
    try:
        os.link(path, staged)
    except OSError:
        os.replace(path, previous)
        return
    os.replace(staged, previous)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes atomically (see `write_atomic`)."""
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically (see `write_atomic`)."""
    write_bytes_atomic(path, text.encode())


def free_bytes(path: Path) -> int | None:
    """The free space of the filesystem holding `path` (its nearest existing parent)."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def write_error(path: Path, err: OSError, written: int | None = None) -> LeapkdError:
    """The user's error for a failed write of `path`: what the system said, how far the write
    got, and the free space (once the partial file is removed)."""
    free = free_bytes(path)
    space = f"{free / 1e6:.1f} MB free there" if free is not None else "free space unknown"
    if written:
        space = f"it stopped after {written / 1e6:.1f} MB; {space}"
    return LeapkdError(
        f"could not write {path}: {err.strerror or err} ({space})",
        "free space on that filesystem, or write somewhere else",
    )
