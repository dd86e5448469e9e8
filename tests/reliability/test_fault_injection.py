"""Runs killed with SIGKILL at random steps and resumed end exactly like an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from leapkd.rundir import read_metrics

ARGS = [
    "--teacher", "vit-nano", "--allow-random-teacher", "--student", "vit-nano", "--image-size", "32",
    "--subset-per-class", "8", "--batch-size", "8", "--epochs", "3", "--threshold", "0.6", "--checkpoint-every", "2",
    "--no-progress",
]  # fmt: skip


def distill(out, name, *extra):
    return [sys.executable, "-m", "leapkd", "distill", *ARGS, "--output-dir", str(out), "--name", name, *extra]


def kill_after(cmd, env, rows_wanted, metrics):
    """Start `cmd`, SIGKILL it once metrics.csv holds `rows_wanted` rows; True if it was killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) - 1 >= rows_wanted:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.wait()
    return False


def test_sigkill_at_random_steps_then_resume(tmp_path):
    env = {**os.environ, "LEAPKD_CACHE": str(tmp_path / "cache")}
    subprocess.run(distill(tmp_path, "reference"), env=env, check=True, capture_output=True, timeout=300)
    ref = read_metrics(tmp_path / "reference" / "metrics.csv")
    ref_w = load_file(tmp_path / "reference" / "student.safetensors")
    assert len(ref) == 30

    rng = random.Random(1234)
    for trial, kill_at in enumerate(sorted(rng.sample(range(3, 28), 3))):
        name = f"killed{trial}"
        killed = kill_after(distill(tmp_path, name), env, kill_at, tmp_path / name / "metrics.csv")
        assert killed, f"the run finished before step {kill_at}"
        done = subprocess.run(distill(tmp_path, name, "--resume"), env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        got = read_metrics(tmp_path / name / "metrics.csv")
        assert [r["step"] for r in got] == [r["step"] for r in ref]
        assert [r["target_block"] for r in got] == [r["target_block"] for r in ref]
        for a, b in zip(got, ref):
            assert abs(a["metric"] - b["metric"]) <= 1e-6, (kill_at, a["step"])
        weights = load_file(tmp_path / name / "student.safetensors")
        assert all(torch.allclose(weights[k], ref_w[k], atol=1e-6, rtol=0) for k in ref_w)
