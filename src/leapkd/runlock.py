"""One process per run directory: a lock held for the life of a run.

The lock is an advisory `flock` on `<run>/.lock`, which holds the host, process id, start
time and command of its holder. The kernel releases it when the holder exits, however it
exits (`kill -9` included), so a lock left by a dead process is taken over, with a message;
a live holder makes every other process refuse the run with an `error:` that names it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from leapkd.errors import LeapkdError

if sys.platform == "win32":  # no flock: runs there are not locked
    fcntl = None
else:
    import fcntl

LOCK_NAME = ".lock"


class RunLock:
    """The lock of one run directory; `acquire` raises a LeapkdError when a live process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the run directory), or refuse when another live process holds it."""
        if fcntl is None or self.held:
            return
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise self._busy() from None
                warnings.warn(
                    f"cannot lock {self.path} ({err.strerror}): nothing stops a second process "
                    "from writing this run at the same time",
                    stacklevel=2,
                )
                return
            if self._same_file(fd):  # not a lock file its last holder removed while we waited
                break
            os.close(fd)
        previous = _read(fd)
        if previous.get("host", socket.gethostname()) != socket.gethostname():
            warnings.warn(
                f"took over the lock of {_who(previous)}: no lock of it is visible from this machine; "
                "if that run is alive there, stop this one (this filesystem may not share locks "
                "between machines)",
                stacklevel=2,
            )
        elif previous:
            print(f"note: took over the lock of {_who(previous)}, which is no longer running", file=sys.stderr)
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and let go (a no-op when not held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: a waiting process sees another file and retries
        os.close(self._fd)
        self._fd = None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _busy(self) -> LeapkdError:
        holder = _read_path(self.path)
        who = _who(holder) if holder else "another process"
        kill = f"stop it (kill {holder['pid']}) or " if holder and holder.get("host") == socket.gethostname() else ""
        return LeapkdError(
            f"the run directory {self.path.parent} is in use by {who}",
            f"wait for that run to end, {kill}give this one another `name`",
        )


def _read(fd: int) -> dict[str, Any]:
    data = os.pread(fd, 65536, 0)
    try:
        holder = json.loads(data) if data else {}
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _read_path(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _who(holder: dict[str, Any]) -> str:
    text = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if holder.get("since"):
        text += f" (since {holder['since']}"
        text += f": {holder['command']})" if holder.get("command") else ")"
    return text
