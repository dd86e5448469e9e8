"""The run directory: a contract that users, plots and checks read.

```
runs/<name>/
  config.yaml          resolved configuration
  launch.json          how many processes train it (a resume must use as many)
  train-images.npz     the image files it trains on (folders, lists, globs), read again on resume
  metrics.csv          one row per optimizer step
  summary.json         final figures
  trackers.json        the W&B / MLflow run ids (a resume logs to the same tracker runs)
  checkpoints/         last.ckpt (student, projector, optimizer, schedule, curriculum, RNG, evaluations),
                       best.ckpt (at the best evaluation, with eval_every)
  plots/               curriculum.png, loss.png, evaluation.png (with eval_every)
  student.safetensors  the distilled student at the last step (timm keys of its family)
  student_best.safetensors  the student at the best evaluation (with eval_every)
  student_ema.safetensors  the EMA of the student, when it is not the run's student (kept_weights live)
  .lock                held by the process training the run (`runlock`)
  students/<name>/     with several students: each student's files above (config, metrics, summary,
                       plots, student files, snapshots, best checkpoint, report); the run's own
                       summary.json and report then compare them (`shared_run`)
```
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

from leapkd.disk import open_for_appending, write_error, write_text_atomic
from leapkd.errors import LeapkdError
from leapkd.runlock import LOCK_NAME, RunLock


class RunDirectory:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)

    config = property(lambda self: self.path / "config.yaml")
    launch = property(lambda self: self.path / "launch.json")
    metrics = property(lambda self: self.path / "metrics.csv")
    summary = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.ckpt")
    best_checkpoint = property(lambda self: self.path / "checkpoints" / "best.ckpt")
    plots = property(lambda self: self.path / "plots")
    student = property(lambda self: self.path / "student.safetensors")
    student_best = property(lambda self: self.path / "student_best.safetensors")
    student_ema = property(lambda self: self.path / "student_ema.safetensors")
    trackers = property(lambda self: self.path / "trackers.json")
    snapshots = property(lambda self: self.path / "snapshots")
    data_index = property(lambda self: self.path / "train-images.npz")

    def snapshot(self, step: int) -> Path:
        """The student snapshot written after `step` optimizer steps (see `snapshot_every`)."""
        return self.snapshots / f"step-{step:06d}.safetensors"

    def prepare(self, config_yaml: str, resume: bool, overwrite: bool, world_size: int = 1) -> None:
        """Create (or reopen for resume) the directory and take its lock (held until `release`);
        refuse a run another process holds, and refuse to clobber a run by accident."""
        if resume:
            previous = self.last_checkpoint.with_name(self.last_checkpoint.name + ".prev")
            if not (self.last_checkpoint.is_file() or previous.is_file()):
                raise LeapkdError(
                    f"cannot resume: {self.last_checkpoint} does not exist",
                    "drop `resume` to start a new run, or point `name`/`output_dir` at the run to resume",
                )
        created = not self.path.exists()
        try:
            self.lock.acquire()
            if resume:
                self._remove_stray_temporaries()
            else:
                self._clear(overwrite)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.plots.mkdir(exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
            if not resume:
                write_text_atomic(self.config, config_yaml)
                write_text_atomic(self.launch, json.dumps({"world_size": world_size}) + "\n")
        except BaseException as err:
            self.abandon(remove=created)
            if isinstance(err, OSError):
                raise LeapkdError(
                    f"cannot write to the run directory {self.path}: {err.strerror}",
                    "choose a writable `output_dir`",
                ) from err
            raise

    def _clear(self, overwrite: bool) -> None:
        """An existing run is removed with `overwrite` and refused without (its lock file stays: we hold it)."""
        entries = [e for e in self.path.iterdir() if e.name != LOCK_NAME]
        if entries and not overwrite:
            raise LeapkdError(
                f"run directory {self.path} already exists",
                "pass `resume` to continue it, `overwrite` to replace it, or choose another `name`",
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def release(self) -> None:
        """Let go of the run's lock (at the end of the run, however it ends)."""
        self.lock.release()

    def abandon(self, remove: bool) -> None:
        """A start that failed: with `remove`, empty the directory while still holding its lock
        (no other process can have started in it), then let go and remove it; else just let go."""
        if remove and self.lock.held:
            self._clear(overwrite=True)
        self.release()
        if remove:
            try:
                os.rmdir(self.path)
            except OSError:  # another process took the directory over in between: it is theirs now
                pass

    def _remove_stray_temporaries(self) -> None:
        """Temporary files a killed process left mid-write (`<name>.<pid>.tmp`; ours hold the lock)."""
        for folder in (self.path, self.checkpoints):
            for stray in folder.glob("*.tmp") if folder.is_dir() else ():
                stray.unlink(missing_ok=True)

    def read_launch(self) -> dict[str, Any]:
        """How the run was launched ({"world_size": n}); {} for runs written before it was recorded."""
        return json.loads(self.launch.read_text()) if self.launch.is_file() else {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary, json.dumps(summary, indent=2, sort_keys=False) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text()) if self.summary.is_file() else {}


class MetricsWriter:
    """Appends one row per step to metrics.csv, flushed at once (nothing lost on a crash).

    On resume, rows from steps at or after the resumed step are dropped first (the file is
    rewritten atomically), so the file holds each step exactly once. A row the disk refuses
    is cut off again, so the file only ever holds whole rows.
    """

    def __init__(self, path: Path, columns: list[str], resume_step: int | None = None) -> None:
        self.path, self.columns = path, columns
        kept: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) < resume_step]
        write_text_atomic(path, self._lines([dict(zip(columns, columns)), *kept]))
        self._file = open_for_appending(path)

    def write(self, row: dict[str, Any]) -> None:
        """One row; a key outside the columns is an error (nothing is dropped silently)."""
        data = self._lines([{k: _fmt(v) for k, v in row.items()}]).encode()
        end = self._file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += self._file.write(data[written:])
        except BaseException as err:  # a refused write, or an interrupt between two partial writes
            self._file.truncate(end)
            if isinstance(err, OSError):
                raise write_error(self.path, err) from None
            raise

    def _lines(self, rows: list[dict[str, Any]]) -> str:
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self.columns, extrasaction="raise").writerows(rows)
        return text.getvalue()

    def close(self) -> None:
        self._file.close()


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.8g}"
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """metrics.csv as a list of rows with numbers parsed (empty cells become None)."""
    rows = []
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return rows


def resume_command(
    run_dir: Path, devices: int | str = 1, num_nodes: int = 1, strategy: str = "auto", accelerator: str = "auto"
) -> str:
    """The command that continues a stopped run on the same hardware."""
    parts = ["leapkd", "distill", "--resume", "--name", run_dir.name, "--output-dir", str(run_dir.parent)]
    for flag, value, default in (
        ("--devices", devices, 1),
        ("--num-nodes", num_nodes, 1),
        ("--strategy", strategy, "auto"),
        ("--accelerator", accelerator, "auto"),
    ):
        if value != default:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def usable_checkpoint(run: RunDirectory) -> Path:
    """The latest intact checkpoint: last.ckpt, or last.ckpt.prev if the latest is damaged.

    A checkpoint is a zip archive (torch.save); a truncated or corrupted one fails the
    archive's CRC check. A damaged latest checkpoint is renamed to `last.ckpt.corrupt`
    (kept for inspection) and the previous one is used, with a warning.
    """
    latest = run.last_checkpoint
    previous = latest.with_name(latest.name + ".prev")
    problem = _damage(latest)
    if problem is None:
        return latest
    if previous.is_file() and _damage(previous) is None:
        if latest.exists():
            os.replace(latest, latest.with_name(latest.name + ".corrupt"))
        os.replace(previous, latest)
        warnings.warn(
            f"the latest checkpoint was damaged ({problem}); resuming from the previous one"
            + (f" (the damaged file is kept as {latest.name}.corrupt)" if problem != "missing" else ""),
            stacklevel=2,
        )
        return latest
    raise LeapkdError(
        f"cannot resume {run.path}: the latest checkpoint is damaged ({problem}) and there is no intact previous one",
        "start the run again with `overwrite`",
    )


def _damage(path: Path) -> str | None:
    """Why `path` is not an intact checkpoint archive, or None if it is."""
    if not path.is_file():
        return "missing"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return f"bad CRC in {bad}" if bad else None
