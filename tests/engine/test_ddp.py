"""Two CPU processes (gloo DDP): every rank takes the same decisions, for every method,
and a fault or a signal on one rank stops or skips on all of them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leapkd.hardware import MAX_AUTO_WORKERS
from leapkd.rundir import read_metrics

ENTRY = Path(__file__).with_name("ddp_entry.py")
TINY = [
    "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
    "--teacher", "vit-nano", "--allow-random-teacher", "--student", "vit-nano", "--image-size", "32",
    "--batch-size", "4", "--no-progress",
]  # fmt: skip


def env_for(tmp_path: Path, **extra: str) -> dict:
    return {**os.environ, "LEAPKD_DEBUG_RANKS": "1", "LEAPKD_CACHE": str(tmp_path / "cache"), **extra}


def launch(tmp_path: Path, name: str, *args: str, env: dict | None = None, timeout: int = 300):
    cmd = [sys.executable, str(ENTRY), "distill", *TINY, "--output-dir", str(tmp_path), "--name", name, *args]
    return subprocess.run(cmd, env=env or env_for(tmp_path), capture_output=True, text=True, timeout=timeout)


def traces(run: Path) -> list[list[str]]:
    return [(run / "ranks" / f"rank{r}.csv").read_text().splitlines() for r in (0, 1)]


def decisions(trace: list[str]) -> list[str]:
    return [line for line in trace if not line.startswith("# teacher head")]


def test_two_ranks_stay_in_lockstep(tmp_path):
    args = ["--subset-per-class", "8", "--epochs", "2", "--threshold", "0.5", "--calibrate", "false"]
    done = launch(tmp_path, "ddp", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    ranks = traces(run)
    # identical decisions (block trained on, block after the step, reduced metric) and identical weights
    assert ranks[0] == ranks[1]
    assert ranks[0][-1].startswith("# student sha1 ")
    blocks = [int(line.split(",")[1]) for line in ranks[0][1:-1]]
    assert blocks[:6] == [1, 2, 3, 4, 5, 6]  # threshold 0.5 forces a level-up at every step
    # metrics.csv written once (rank 0), one row per global step: 80 images / global batch 8 x 2 epochs
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(20))
    assert [int(r["target_block"]) for r in rows] == blocks
    assert (run / "metrics.csv").read_text().count("step,epoch") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_batch"] == 8 and summary["job_flops"] == 2 * summary["flops_per_device"] > 0
    share = len(os.sched_getaffinity(0)) // 2  # auto: the cores shared by the 2 processes, one kept by each
    assert summary["num_workers"] == max(0, min(MAX_AUTO_WORKERS, share - 1))


def test_an_unsynchronised_curriculum_decides_on_each_ranks_shard(tmp_path):
    """--curriculum-sync false (the LEAP reference without --curriculum-sync-rank): each rank
    calibrates and levels up on its own metric; DDP still keeps the weights equal."""
    args = ["--subset-per-class", "8", "--epochs", "1", "--threshold", "0.5", "--curriculum-sync", "false"]
    done = launch(tmp_path, "unsynced", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = traces(tmp_path / "unsynced")
    metrics = [[float(line.split(",")[3]) for line in trace[1:-1]] for trace in ranks]
    assert len(metrics[0]) == len(metrics[1]) == 10 and metrics[0] != metrics[1]  # each rank's own metric
    assert ranks[0][-1] == ranks[1][-1] and ranks[0][-1].startswith("# student sha1 ")


@pytest.mark.parametrize(
    "method,extra",
    [
        ("fixed", ["--cls-weight", "0.05", "--patch-embed-weight", "0.1"]),
        # no feature loss, so no projector; the student's final norm gets no gradient; logit KD
        # needs the teacher head, fitted on rank 0 only and received by rank 1
        ("spectralkd", ["--kd-weight", "0.5"]),
    ],
)
def test_every_method_trains_under_ddp(tmp_path, method, extra):
    done = launch(tmp_path, method, "--method", method, "--subset-per-class", "4", "--epochs", "1", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / method
    ranks = traces(run)
    assert decisions(ranks[0]) == decisions(ranks[1])  # same decisions and the same final weights
    assert len(read_metrics(run / "metrics.csv")) == 5
    if method == "spectralkd":
        assert "# teacher head fitted on this rank" in ranks[0]
        assert "# teacher head received from rank 0" in ranks[1]
        assert "# teacher head fitted on this rank" not in ranks[1]


def test_nan_on_one_rank_skips_on_every_rank(tmp_path):
    env = env_for(tmp_path, LEAPKD_TEST_NAN_AT="1:2")  # rank 1 alone sees a NaN loss at step 2
    args = ["--method", "fixed", "--subset-per-class", "4", "--epochs", "2", "--nan-policy", "skip"]
    done = launch(tmp_path, "nan", *args, env=env, timeout=180)  # hung before: rank 0 waited in all-reduce
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "nan"
    assert json.loads((run / "summary.json").read_text())["skipped_batches"] == 1
    ranks = traces(run)
    assert ranks[0] == ranks[1]  # both skipped the same batch: identical weights at the end
    assert [int(r["step"]) for r in read_metrics(run / "metrics.csv")] == list(range(9))


def test_accumulated_micro_batches_all_reduce_once_per_step(tmp_path):
    counts = tmp_path / "allreduce.txt"
    env = env_for(tmp_path, LEAPKD_TEST_COUNT_ALLREDUCE=str(counts))
    args = ["--method", "fixed", "--subset-per-class", "4", "--epochs", "1", "--batch-size", "2",
            "--accumulate-grad-batches", "2"]  # fmt: skip
    done = launch(tmp_path, "acc", *args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "acc"
    steps = len(read_metrics(run / "metrics.csv"))
    assert steps == 5  # 40 images / (2 ranks x 2 micro-batches x 2 images)
    ranks = traces(run)
    assert ranks[0] == ranks[1]  # the same weights: the step's last backward averaged the whole step
    assert sorted(counts.read_text().split("\n")[:-1]) == [f"0 {steps}", f"1 {steps}"]  # not 2 per step


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def test_sigterm_to_one_rank_stops_every_rank_and_resumes(tmp_path):
    args = ["--method", "fixed", "--subset-per-class", "40", "--epochs", "2"]
    cmd = [sys.executable, str(ENTRY), "distill", *TINY, "--output-dir", str(tmp_path), "--name", "term", *args]
    proc = subprocess.Popen(cmd, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "term" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) > 4):
        time.sleep(0.05)
    rank1 = [c for c in _children(proc.pid) if Path(f"/proc/{c}/cmdline").read_bytes().count(b"distill")]
    assert len(rank1) == 1, "expected one child process: rank 1"
    os.kill(rank1[0], signal.SIGTERM)  # as SLURM or a user may: one rank only
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        for child in rank1:
            os.kill(child, signal.SIGKILL)
        pytest.fail("the ranks hung after SIGTERM reached rank 1 only")
    assert proc.returncode == 0, stderr[-3000:]
    run = tmp_path / "term"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 4 <= summary["steps"] < 100
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "student.safetensors").is_file()
    assert "leapkd distill --resume --name term" in stdout and "--devices 2" in stdout
    ranks = traces(run)
    assert ranks[0] == ranks[1]  # stopped at the same step with the same weights

    resumed = launch(tmp_path, "term", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert [int(r["step"]) for r in read_metrics(run / "metrics.csv")] == list(
        range(100)
    )  # 400 images / global batch 8, 2 epochs


def test_evaluation_and_early_stop_agree_on_every_rank(tmp_path):
    """Rank 0 evaluates and broadcasts: both ranks keep the same best, stop after the same step
    (min_delta 1 makes every evaluation after the first one a miss), and checkpoint on time
    by rank 0's clock."""
    args = ["--subset-per-class", "8", "--epochs", "2", "--eval-every", "2", "--eval-images-per-class", "3",
            "--early-stop-patience", "2", "--early-stop-min-delta", "1",
            "--checkpoint-every-minutes", "0.0001"]  # fmt: skip
    done = launch(tmp_path, "ev", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ev"
    ranks = traces(run)
    assert decisions(ranks[0]) == decisions(ranks[1])  # same steps, same weights at the end
    summary = json.loads((run / "summary.json").read_text())
    evaluation = summary["evaluation"]
    assert [e["step"] for e in evaluation["history"]] == [0, 2, 4]
    assert evaluation["early_stop"]["step"] == 4 and summary["steps"] == 4
    assert evaluation["best"]["step"] == 0 and (run / "student_best.safetensors").is_file()
    assert len(read_metrics(run / "metrics.csv")) == 4


def test_several_students_train_under_ddp(tmp_path):
    """One teacher pass per batch for two students on two ranks: the same decisions and the
    same weights of both students on every rank, each student's files. (ViTs: a CNN's
    batch-norm statistics are each rank's own after the last step, DDP broadcasting rank 0's
    only at the start of a forward, so the weight digest would differ by design.)"""
    args = ["--method", "leap", "--student", "vit-nano,vit-tiny", "--subset-per-class", "4", "--epochs", "1"]
    done = launch(tmp_path, "pair", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "pair"
    ranks = traces(run)
    assert ranks[0] == ranks[1] and ranks[0][-1].startswith("# student sha1 ")
    for name in ("vit-nano", "vit-tiny"):
        assert len(read_metrics(run / "students" / name / "metrics.csv")) == 5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "several students" and summary["steps"] == 5
