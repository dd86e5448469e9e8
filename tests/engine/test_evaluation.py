"""Evaluation during training: the steps, the best student, early stopping, resume, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from leapkd import distill
from leapkd.deploy import export
from leapkd.errors import LeapkdError
from leapkd.eval.in_training import StudentScorer
from leapkd.rundir import RunDirectory, read_metrics
from leapkd.summary import load_summary

FIGURES = ("knn_top1", "knn_top5")


def _eval_rows(run_dir: Path) -> dict[int, dict]:
    """metrics.csv rows that carry evaluation figures, by steps done (row step + 1)."""
    return {int(r["step"]) + 1: r for r in read_metrics(run_dir / "metrics.csv") if r["eval_knn_top1"] is not None}


@pytest.mark.parametrize(("every", "expected"), [(4, [0, 4, 8, 12, 15]), ("1 epoch", [0, 5, 10, 15])])
def test_evaluations_run_at_their_steps_and_reach_the_metrics_log(tiny, every, expected):
    r = distill(name="ev", eval_every=every, eval_images_per_class=5, **tiny)  # 3 epochs of 5 steps
    evaluation = r.summary.evaluation
    assert [e["step"] for e in evaluation.history] == expected  # before the first step, on schedule, after the last
    rows = _eval_rows(r.run_dir)
    assert sorted(rows) == expected[1:]  # step 0 has no row: it precedes the first step
    for entry in evaluation.history[1:]:
        row = rows[entry["step"]]
        for figure in FIGURES:
            assert row[f"eval_{figure}"] == pytest.approx(entry[figure], abs=1e-7)
        assert row["flops"] == entry["flops"]
    assert 0 < evaluation.share_of_wall < 1 and evaluation.seconds > 0
    assert (r.run_dir / "plots" / "evaluation.png").is_file()
    report = (r.run_dir / "report.md").read_text()
    assert "## Evaluation during training" in report and "evaluation.png" in report


def test_the_figures_are_the_scorers_on_the_saved_student(tiny):
    """The last evaluation is the kNN of the saved student, recomputed from its file."""
    from leapkd.models import load_student_file

    r = distill(name="ev", eval_every=5, eval_images_per_class=5, **tiny)
    student = load_student_file(r.run_dir / "student.safetensors")
    scorer = StudentScorer("fashion-mnist", 64, student.mean, student.std, 5)
    again = scorer(student)
    last = r.summary.evaluation.last
    assert again["knn_top1"] == pytest.approx(last["knn_top1"], abs=1e-6)
    assert again["knn_top5"] == pytest.approx(last["knn_top5"], abs=1e-6)


def test_evaluating_does_not_change_what_is_trained(tiny):
    """Same weights with and without evaluations (the student has stochastic depth, which
    draws from the global RNG that data loaders also draw from)."""
    settings = dict(tiny, student_kwargs={"drop_path_rate": 0.2}, epochs=2)
    plain = distill(name="plain", **settings)
    evaluated = distill(name="evaluated", eval_every=3, eval_images_per_class=5, **settings)
    a, b = load_file(plain.run_dir / "student.safetensors"), load_file(evaluated.run_dir / "student.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("ema_decay", [None, 0.8])
def test_best_student_is_the_snapshot_at_the_best_step(tiny, ema_decay):
    r = distill(name="best", eval_every=2, eval_images_per_class=5, snapshot_every=1, ema_decay=ema_decay, **tiny)
    evaluation = r.summary.evaluation
    best = evaluation.best
    assert best["knn_top1"] == max(e["knn_top1"] for e in evaluation.history)
    first_best = next(e for e in evaluation.history if e["knn_top1"] == best["knn_top1"])
    assert best["step"] == first_best["step"]  # ties keep the earlier student
    saved = load_file(r.run_dir / "student_best.safetensors")
    snapshot = load_file(r.run_dir / "snapshots" / f"step-{best['step']:06d}.safetensors")
    assert saved.keys() == snapshot.keys() and all(torch.equal(saved[k], snapshot[k]) for k in saved)
    if best["step"] > 0:  # best.ckpt: the full checkpoint of that step
        ckpt = torch.load(r.run_dir / "checkpoints" / "best.ckpt", weights_only=False)
        assert ckpt["global_step"] == best["step"]


def _scripted_scores(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """The scorer returns `values` in turn (kNN top-1), so the best and the patience are known."""
    queue = list(values)

    def score(self, student, autocast_dtype=None, classifier=None):
        value = queue.pop(0)
        return {"knn_top1": value, "knn_top5": value}

    monkeypatch.setattr(StudentScorer, "__call__", score)


def test_early_stopping_stops_and_says_why(tiny, monkeypatch):
    _scripted_scores(monkeypatch, [0.5, 0.6, 0.55, 0.6, 0.9, 0.9])  # evaluations at steps 0, 1, 2, 3, ...
    r = distill(name="early", eval_every=1, early_stop_patience=2, early_stop_min_delta=0.0, **tiny)
    s = r.summary
    stop = s.evaluation.early_stop
    assert s.steps == 3 and stop.step == 3  # 0.55 and 0.6 do not beat 0.6 at step 1
    assert "knn_top1 did not rise above 0.6000 (step 1)" in stop.reason and "early_stop_patience 2" in stop.reason
    assert s.status == "completed" and s.evaluation.best == {"step": 1, "knn_top1": 0.6}
    assert torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert "early stop after step 3" in (r.run_dir / "report.md").read_text()


def test_min_delta_decides_what_counts_as_better(tiny, monkeypatch):
    _scripted_scores(monkeypatch, [0.5, 0.52, 0.53, 0.7, 0.7])
    r = distill(name="delta", eval_every=1, early_stop_patience=2, early_stop_min_delta=0.05, **tiny)
    assert r.summary.evaluation.early_stop.step == 2  # +0.02 and +0.03 are below the 0.05 needed
    assert r.summary.evaluation.best["step"] == 0


def _figures(history: list[dict]) -> list[tuple]:
    return [(e["step"], e["flops"], *(e[f] for f in FIGURES)) for e in history]


def test_resume_keeps_the_best_and_the_history(tiny, monkeypatch, interrupt_at):
    full = distill(name="full", eval_every=3, eval_images_per_class=5, **tiny)
    with monkeypatch.context() as m:
        interrupt_at(m, 7)  # stops after 8 steps: evaluations at 0, 3, 6 done
        stopped = distill(name="cut", eval_every=3, eval_images_per_class=5, **tiny)
    assert stopped.summary.status == "interrupted"
    assert [e["step"] for e in stopped.summary.evaluation.history] == [0, 3, 6]
    resumed = distill(name="cut", eval_every=3, eval_images_per_class=5, resume=True, **tiny)
    assert _figures(resumed.summary.evaluation.history) == _figures(full.summary.evaluation.history)
    assert resumed.summary.evaluation.best == full.summary.evaluation.best
    assert _eval_rows(resumed.run_dir).keys() == _eval_rows(full.run_dir).keys()
    a, b = load_file(full.run_dir / "student_best.safetensors"), load_file(resumed.run_dir / "student_best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_best_or_last(tiny, tmp_path):
    r = distill(name="exp", eval_every=2, eval_images_per_class=5, **tiny)
    best = export(r.run_dir, "safetensors", out_dir=tmp_path / "best", which="best")
    last = export(r.run_dir, "safetensors", out_dir=tmp_path / "last", which="last")
    expected = {"best": r.run_dir / "student_best.safetensors", "last": r.run_dir / "student.safetensors"}
    for which, result in (("best", best), ("last", last)):
        written = load_file(next(f for f in result["files"] if f.endswith(".safetensors")))
        source = load_file(expected[which])
        assert all(torch.equal(written[k], source[k]) for k in source)
    step = r.summary.evaluation.best["step"]
    assert f"at step {step})" in (tmp_path / "best" / "README.md").read_text()
    plain = distill(name="plain", **tiny)
    with pytest.raises(LeapkdError) as err:
        export(plain.run_dir, "safetensors", which="best")
    assert "no best student" in str(err.value) and "`eval_every`" in err.value.fix


def test_checkpoint_every_minutes(tiny, monkeypatch):
    """A clock at 25 s per step: with 1 minute, a checkpoint once 60 s passed since the last
    one, whatever wrote it (epoch ends write one too)."""
    from leapkd.engine.callbacks import checkpoints
    from leapkd.engine.module import DistillModule

    now = [0.0]
    real_step = DistillModule.training_step

    def step(self, batch, batch_idx):
        now[0] = 25.0 * (self.global_step + 1)
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(DistillModule, "training_step", step)
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    saved: list[int] = []
    real_save = checkpoints.AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        saved.append(checkpoint["global_step"])
        return real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpoints.AtomicCheckpointIO, "save_checkpoint", record)
    distill(name="minutes", checkpoint_every_minutes=1, **dict(tiny, epochs=2))
    assert saved == [3, 5, 8, 10]  # 75 s after the start; epoch end; 75 s after step 5; epoch end


def test_evaluation_needs_labels(tiny, tmp_path):
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(folder / f"{i}.png")
    settings = dict(tiny, data=str(folder), subset_per_class="all", batch_size=4)
    with pytest.raises(LeapkdError) as err:
        distill(name="unl", eval_every=2, **settings)
    assert "needs class labels" in str(err.value) and "`eval_data`" in err.value.fix
    assert not (Path(tiny["output_dir"]) / "unl").exists()  # refused before the run directory
    r = distill(name="unl", eval_every=3, eval_data="fashion-mnist", eval_images_per_class=3, **settings)
    assert r.summary.evaluation.data == "fashion-mnist" and [e["step"] for e in r.summary.evaluation.history] == [
        0,
        3,
        6,
        9,
    ]


def test_summary_records_the_evaluation_settings(tiny):
    r = distill(name="sum", eval_every="1 epoch", eval_images_per_class=5, eval_protocols=["knn", "linear"],
                eval_metric="linear_top1", **dict(tiny, epochs=1))  # fmt: skip
    evaluation = load_summary(RunDirectory(r.run_dir)).evaluation  # as written to summary.json
    assert evaluation is not None and evaluation.every == "1 epoch"
    assert evaluation.metric == "linear_top1" and {"linear_top1", "knn_top1"} <= set(evaluation.last)
    assert evaluation.images_per_class == 5


def test_the_references_evaluation_every_validation_image_centre_cropped_head_only(tmp_path):
    """SpectralKD's evaluation: all validation images, Resize(S * 256 / 224, bicubic) + CenterCrop,
    the student's own head alone (no kNN bank: the train split is not read)."""
    import numpy as np
    from PIL import Image
    from torch import nn

    from leapkd.data.transforms import build_transform
    from leapkd.models import load_backbone

    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 3)):
        for name in ("ant", "bee"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # not square: the crop matters
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    student = load_backbone("vit-nano", 32)
    scorer = StudentScorer(str(tmp_path), 32, student.mean, student.std, None, protocols=(), classifier=True,
                           transform="center-crop")  # fmt: skip
    assert scorer.bank is None and len(scorer.queries) == 6 and scorer.figures == ["student_top1"]
    first = Image.open(tmp_path / "val" / "ant" / "0.png")
    expected = build_transform(32, augment=False, mean=student.mean, std=student.std, eval_transform="center-crop")
    assert torch.equal(scorer.queries[0][0], expected(first))
    assert not torch.equal(scorer.queries[0][0], build_transform(32, False, student.mean, student.std)(first))
    figures = scorer(student, classifier=nn.Linear(student.width, 2))
    assert set(figures) == {"student_top1"} and 0.0 <= figures["student_top1"] <= 1.0
