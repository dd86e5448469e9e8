"""A run that fails before its first step leaves no directory (a resume: its directory as it
was); a run that fails after training marks itself failed."""

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leapkd import distill
from leapkd.cli import main
from leapkd.engine.module import DistillModule


def snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}  # fmt: skip


def fail_at_step(monkeypatch, step: int, error: BaseException) -> None:
    real = DistillModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            raise error
        return real(self, batch, batch_idx)

    monkeypatch.setattr(DistillModule, "training_step", training_step)


def fail_in_teacher_head(monkeypatch) -> dict:
    import leapkd.training

    def broken(*args, **kwargs):
        raise RuntimeError("teacher head fitting failed")

    monkeypatch.setattr(leapkd.training, "fit_linear_head", broken)
    return {"method": "spectralkd", "ce_weight": 0.1, "kd_weight": 0.9}


def fail_saving_the_image_list(monkeypatch, root: Path) -> dict:
    """A folder of images (their list is saved in the run directory), whose list cannot be saved."""
    from leapkd.data.image_files import ImageFiles

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")

    def broken(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ImageFiles, "save_index", broken)
    return {"data": str(root), "subset_per_class": "all"}


STARTS = {
    "first step (compile, device)": lambda m, _: fail_at_step(m, 0, RuntimeError("compile failed")) or {},
    "Ctrl-C twice while starting": lambda m, _: fail_at_step(m, 0, KeyboardInterrupt()) or {},
    "teacher head fitting": lambda m, _: fail_in_teacher_head(m),
    "the image list": fail_saving_the_image_list,
}


@pytest.mark.parametrize("where", list(STARTS))
def test_a_new_run_that_fails_before_its_first_step_leaves_no_directory(tiny, monkeypatch, tmp_path, where):
    extra = STARTS[where](monkeypatch, tmp_path / "images")
    sigint = signal.getsignal(signal.SIGINT)
    with pytest.raises((RuntimeError, SystemExit, OSError)):  # Lightning ends a KeyboardInterrupt with exit 1
        distill(name="start", **{**tiny, **extra})
    signal.signal(signal.SIGINT, sigint)  # which Lightning left ignored
    assert not (Path(tiny["output_dir"]) / "start").exists()
    monkeypatch.undo()
    assert distill(name="start", **{**tiny, **extra}).summary.status == "completed"  # the same command now works


def test_a_resume_that_fails_before_its_first_step_leaves_the_run_as_it_was(tiny, monkeypatch, interrupt_at):
    with monkeypatch.context() as m:
        interrupt_at(m, 6)
        first = distill(name="resumed", **tiny)
    before = snapshot(first.run_dir)
    with monkeypatch.context() as m:
        fail_at_step(m, 7, RuntimeError("compile failed"))
        with pytest.raises(RuntimeError):
            distill(name="resumed", resume=True, **tiny)
    assert snapshot(first.run_dir) == before
    assert distill(name="resumed", resume=True, **tiny).summary.steps == 15


def test_a_run_that_fails_after_training_is_marked_failed(tiny, monkeypatch, capsys):
    fail_at_step(monkeypatch, 4, RuntimeError("device lost"))
    with pytest.raises(RuntimeError, match="device lost"):
        distill(name="crashed", checkpoint_every=2, **tiny)
    run = Path(tiny["output_dir"]) / "crashed"
    summary = json.loads((run / "summary.json").read_text())
    assert summary == {"status": "failed", "failed_after_step": 4, "error": "RuntimeError: device lost"}
    assert main(["report", str(run)]) == 2  # a clear error, not a KeyError on the missing figures
    err = capsys.readouterr().err
    assert "failed after step 4 (RuntimeError: device lost)" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.undo()
    done = distill(name="crashed", checkpoint_every=2, resume=True, **tiny)  # from the step-4 checkpoint
    assert done.summary.status == "completed" and done.summary.error is None
    assert not {"failed_after_step", "error"} & set(json.loads((run / "summary.json").read_text()))
