"""One process per run directory: a second `--overwrite` or `--resume` of a live run is
refused naming the process that holds it; a lock left by a killed process is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leapkd import distill
from leapkd.errors import LeapkdError

ARGS = ["--teacher", "vit-nano", "--allow-random-teacher", "--student", "vit-nano", "--image-size", "32",
        "--subset-per-class", "20", "--batch-size", "4", "--epochs", "100", "--checkpoint-every", "5",
        "--no-progress"]  # fmt: skip


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "leapkd", "distill", *ARGS, "--output-dir", str(out), "--name", "busy", *extra]


def test_a_second_process_is_refused_while_the_run_lives_and_a_killed_holder_is_taken_over(tmp_path):
    env = {**os.environ, "LEAPKD_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "busy"
    first = subprocess.Popen(command(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "last.ckpt").is_file():
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.05)
    holder = json.loads((run / ".lock").read_text())
    assert holder["pid"] == first.pid and "distill" in holder["command"]

    for extra in (["--overwrite"], ["--resume"]):
        second = subprocess.run(command(tmp_path, *extra), env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"error: the run directory {run} is in use by process {first.pid}" in second.stderr
        assert f"kill {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None and (run / "config.yaml").is_file()  # the live run is untouched

    first.send_signal(signal.SIGKILL)  # no cleanup at all: the lock file stays, the kernel frees the lock
    first.wait()
    assert (run / ".lock").is_file()
    end = len((run / "metrics.csv").read_text().splitlines()) + 10  # a few steps past the kill
    resumed = subprocess.run(command(tmp_path, "--resume", "--max-steps", str(end)), env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"took over the lock of process {first.pid}" in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not (run / ".lock").exists()  # released at the end


def test_the_lock_is_held_for_the_run_and_released_however_it_ends(tiny, monkeypatch):
    from leapkd.runlock import RunLock

    run = Path(tiny["output_dir"]) / "locked"
    seen = []
    real = RunLock.acquire

    def acquire(self):
        real(self)
        other = RunLock(self.path.parent)  # another open file: flock refuses it as it would another process
        with pytest.raises(LeapkdError, match=f"in use by process {os.getpid()}"):
            other.acquire()
        seen.append(self.held)

    monkeypatch.setattr(RunLock, "acquire", acquire)
    distill(name="locked", **tiny)
    assert seen == [True] and not (run / ".lock").exists()
    monkeypatch.undo()

    from leapkd.engine.module import DistillModule

    real_step = DistillModule.training_step

    def failing(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("boom")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(DistillModule, "training_step", failing)
    with pytest.raises(RuntimeError, match="boom"):
        distill(name="locked", overwrite=True, **tiny)
    assert (run / "metrics.csv").is_file() and not (run / ".lock").exists()  # kept (it trained), and unlocked
    lock = RunLock(run)
    lock.acquire()
    lock.release()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, capsys):
    from leapkd.runlock import RunLock

    host = socket.gethostname()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(json.dumps({"host": host, "pid": 999999, "since": "yesterday"}))
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    assert f"took over the lock of process 999999 on {host} (since yesterday)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / ".lock").exists()
    # a holder on another machine may be alive where this machine cannot see its lock: say so
    (tmp_path / "run" / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 7, "since": "now"}))
    with pytest.warns(UserWarning, match="process 7 on elsewhere.*if that run is alive there, stop this one"):
        lock.acquire()
    lock.release()
