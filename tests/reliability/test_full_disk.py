"""A full disk: every write of a run ends in `error:` / `fix:` naming the path and the free
space, leaves no temporary file and no half-written one, keeps the previous checkpoint and
student, marks the run failed where it still can, and `--resume` continues exactly once
there is space again."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from leapkd import distill
from leapkd.errors import LeapkdError
from leapkd.rundir import read_metrics


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def stray(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*.tmp"))


def same_training(a: Path, b: Path) -> None:
    """Two runs trained alike: metrics.csv step by step, and the students."""
    got, want = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["target_block"] for r in got] == [r["target_block"] for r in want]
    for x, y in zip(got, want):
        assert x["metric"] == pytest.approx(y["metric"], abs=1e-6) and x["loss"] == pytest.approx(y["loss"], rel=1e-6)
    for key, w in load_file(b / "student.safetensors").items():
        torch.testing.assert_close(load_file(a / "student.safetensors")[key], w, atol=1e-6, rtol=0)


# (file refused, writes allowed before, what the run looks like after)
CASES = [
    ("last.ckpt", 0, "failed"),  # the first checkpoint (step 2)
    ("metrics.csv", 3, "failed"),  # the header and two rows, then a row
    ("summary.json", 0, None),  # at the end: nothing can mark it
    ("student.safetensors", 0, "failed"),
    ("curriculum.png", 0, "failed"),
    ("report.html", 0, "failed"),
]


@pytest.mark.parametrize("target,after,status", CASES, ids=[c[0] for c in CASES])
def test_each_write_of_a_run_refused_by_the_disk(tiny, full_disk, target, after, status):
    full_disk.refuse(lambda path: path.name.startswith(target), after=after)
    with pytest.raises(LeapkdError) as err:
        distill(name="full", checkpoint_every=2, **tiny)
    run = Path(tiny["output_dir"]) / "full"
    assert f"could not write {run}" in err.value.problem and target in err.value.problem
    assert "No space left on device" in err.value.problem and "MB free there" in err.value.problem
    assert "free space" in err.value.fix
    assert not stray(run), "a temporary file was left behind"
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    assert summary.get("status") == status
    if status == "failed":
        assert summary["failed_after_step"] >= 2 and "could not write" in summary["error"]
    lines = (run / "metrics.csv").read_bytes().split(b"\r\n")
    assert lines[-1] == b"" and len({line.count(b",") for line in lines[:-1]}) == 1  # whole rows only
    assert not (run / target).exists() or target == "metrics.csv"  # never a half-written file


def test_full_disk_keeps_checkpoint_and_student_then_resume_is_exact(tiny, full_disk, interrupt_at, monkeypatch):
    distill(name="reference", checkpoint_every=2, **tiny)
    with monkeypatch.context() as m:
        interrupt_at(m, 6)  # a checkpoint and a student exist (step 7)
        distill(name="full", checkpoint_every=2, **tiny)
    run = Path(tiny["output_dir"]) / "full"
    kept = {name: digest(run / name) for name in ("checkpoints/last.ckpt", "student.safetensors")}

    full_disk.budget(len((run / "metrics.csv").read_bytes()) + 600)  # a few rows fit, the next checkpoint does not
    with pytest.raises(LeapkdError) as err:
        distill(name="full", resume=True, checkpoint_every=2, **tiny)
    assert "No space left on device" in err.value.problem
    assert f"leapkd distill --resume --name full --output-dir {run.parent}" in err.value.fix
    assert {name: digest(run / name) for name in kept} == kept
    assert not stray(run)

    full_disk.clear()
    full_disk.refuse(lambda path: path.name.startswith("student.safetensors"))  # space runs out at the very end
    with pytest.raises(LeapkdError):
        distill(name="full", resume=True, checkpoint_every=2, **tiny)
    assert digest(run / "student.safetensors") == kept["student.safetensors"]  # the old student, whole
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"

    full_disk.clear()
    done = distill(name="full", resume=True, checkpoint_every=2, **tiny)
    assert done.summary.status == "completed" and done.summary.steps == 15
    same_training(run, Path(tiny["output_dir"]) / "reference")


SCRIPT = """
set -u
mount -t tmpfs -o size={size} none {mnt} || exit 90
{cmd} > {out}/first.out 2> {out}/first.err; echo $? > {out}/first.rc
cp -a {mnt}/full {out}/after-failure
mount -o remount,size=64m {mnt}
{cmd} --resume > {out}/second.out 2> {out}/second.err; echo $? > {out}/second.rc
cp -a {mnt}/full {out}/after-resume
"""


def test_a_real_full_filesystem_from_the_command_line(tmp_path):
    """On a tmpfs too small for a third checkpoint (it needs room for two and the new one),
    in a mount namespace of its own: `error:`/`fix:`, the second checkpoint intact, the run
    marked failed; then, with space again, `--resume` ends like an uninterrupted run."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m none {tmp_path}"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode()[-200:]}")
    env = {**os.environ, "LEAPKD_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "leapkd", "distill", "--teacher", "vit-nano", "--allow-random-teacher",
            "--student", "vit-nano", "--image-size", "32", "--subset-per-class", "4", "--batch-size", "8",
            "--epochs", "3", "--checkpoint-every", "1", "--precision", "32", "--no-progress",
            "--name", "full"]  # fmt: skip
    subprocess.run([*args, "--output-dir", str(tmp_path / "ref")], env=env, check=True, capture_output=True)
    checkpoint = (tmp_path / "ref" / "full" / "checkpoints" / "last.ckpt").stat().st_size
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir(), out.mkdir()
    cmd = " ".join([*args, "--output-dir", str(mnt)])
    script = SCRIPT.format(size=int(2.5 * checkpoint) // 4096 * 4096, mnt=mnt, out=out, cmd=cmd)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, check=True, timeout=600)

    err = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "2", err[-3000:]
    assert "error: could not write" in err and "No space left on device" in err and "MB free there" in err
    assert "fix:" in err and "--resume" in err and "Traceback" not in err
    failed = out / "after-failure"
    assert torch.load(failed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not stray(failed)
    assert json.loads((failed / "summary.json").read_text())["status"] == "failed"
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()[-3000:]
    same_training(out / "after-resume", tmp_path / "ref" / "full")


def test_a_refused_config_file_leaves_no_directory_and_no_lock(tiny, full_disk):
    from leapkd.runlock import RunLock

    full_disk.refuse(lambda path: path.name.startswith("config.yaml"))
    with pytest.raises(LeapkdError, match="config.yaml"):
        distill(name="noconfig", **tiny)
    run = Path(tiny["output_dir"]) / "noconfig"
    assert not run.exists()
    lock = RunLock(run)
    lock.acquire()  # nobody holds it
    lock.release()


def test_a_crash_between_the_checkpoint_renames_still_resumes(tiny, interrupt_at, monkeypatch):
    """Only last.ckpt.prev left (a crash after the old checkpoint was set aside), and a stray
    temporary file of the killed process: --resume uses the previous one and removes the stray."""
    with monkeypatch.context() as m:
        interrupt_at(m, 6)
        first = distill(name="renames", checkpoint_every=2, **tiny)
    checkpoints = first.run_dir / "checkpoints"
    (checkpoints / "last.ckpt").unlink()
    assert (checkpoints / "last.ckpt.prev").is_file()
    (checkpoints / "last.ckpt.424242.tmp").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="resuming from the previous one"):
        done = distill(name="renames", resume=True, checkpoint_every=2, **tiny)
    assert done.summary.status == "completed" and done.summary.steps == 15
    assert not stray(first.run_dir)
