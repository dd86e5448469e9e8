"""Two CPU processes (gloo DDP): every rank takes the same curriculum decisions."""

import os
import subprocess
import sys

from leapkd.rundir import read_metrics


def test_two_ranks_stay_in_lockstep(tmp_path):
    env = {**os.environ, "LEAPKD_DEBUG_RANKS": "1", "LEAPKD_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable, "-m", "leapkd", "distill", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
        "--teacher", "vit-nano", "--student", "vit-nano", "--image-size", "32", "--subset-per-class", "8",
        "--batch-size", "4", "--epochs", "2", "--threshold", "0.5", "--calibrate", "false",
        "--output-dir", str(tmp_path), "--name", "ddp", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    traces = [(run / "ranks" / f"rank{r}.csv").read_text().splitlines() for r in (0, 1)]
    # identical decisions (block trained on, block after the step, reduced metric) and identical weights
    assert traces[0] == traces[1]
    assert traces[0][-1].startswith("# student sha1 ")
    blocks = [int(line.split(",")[1]) for line in traces[0][1:-1]]
    assert blocks[:6] == [1, 2, 3, 4, 5, 6]  # threshold 0.5 forces a level-up at every step
    # metrics.csv written once (rank 0), one row per global step: 80 images / global batch 8 x 2 epochs
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(20))
    assert [int(r["target_block"]) for r in rows] == blocks
    assert (run / "metrics.csv").read_text().count("step,epoch") == 1
