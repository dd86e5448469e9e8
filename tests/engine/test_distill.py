"""End-to-end runs on tiny models: the run directory, early exit, FLOPs, resume."""

import csv
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import leapkd.training as distill_module
from leapkd import LeapkdError
from leapkd.engine.callbacks.metrics_log import metric_columns
from leapkd.models import load_backbone, load_student_file
from leapkd.rundir import read_metrics
from leapkd.summary import SUMMARY_VERSION, RunSummary
from leapkd.training import distill


def rows_of(run_dir):
    return read_metrics(run_dir / "metrics.csv")


def test_leap_run_directory_contract(tiny):
    result = distill(name="leap", method="leap", threshold=0.5, **tiny)
    d = result.run_dir
    for rel in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/last.ckpt",
        "plots/curriculum.png",
        "plots/loss.png",
        "student.safetensors",
    ):
        assert (d / rel).is_file(), rel
    with (d / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert header == metric_columns(["feature"], ("ema",))  # core + what leap declares
    rows = rows_of(d)
    assert [r["step"] for r in rows] == list(range(15))  # one row per optimizer step
    s = RunSummary.model_validate_json((d / "summary.json").read_text())  # the file reads back typed
    assert s.version == SUMMARY_VERSION and s.steps == 15 and s.epochs == 3
    for key in (
        "teacher_flops",
        "student_flops",
        "baseline_flops",
        "flops_saving",
        "wall_seconds",
        "teacher_seconds",
        "student_seconds",
        "final_block",
        "level_ups",
    ):
        assert key in s.model_fields_set, key  # written, not a default
    # the teacher ran exactly as deep as the target, every step
    assert all(r["teacher_blocks_run"] == r["target_block"] for r in rows)
    # level-ups recorded in the summary are where the target changed in metrics.csv
    changes = [int(r["step"]) + 1 for r, nxt in zip(rows, rows[1:]) if nxt["target_block"] != r["target_block"]]
    assert set(changes) <= set(s.level_ups)
    assert s.final_block == int(rows[-1]["target_block"]) or s.final_block > rows[-1]["target_block"]


def test_fixed_runs_the_whole_teacher_and_saves_nothing(tiny):
    result = distill(name="fixed", method="fixed", **tiny)
    rows = rows_of(result.run_dir)
    assert all(r["target_block"] == 6 and r["teacher_blocks_run"] == 6 for r in rows)
    s = result.summary
    assert s.teacher_flops + s.student_flops == s.baseline_flops
    assert s.flops_saving == 0.0


def test_leap_flops_follow_the_blocks_run(tiny):
    result = distill(name="leap", method="leap", threshold=0.99, max_epochs_per_block=1, calibrate=False, **tiny)
    rows = rows_of(result.run_dir)
    assert [r["target_block"] for r in rows] == [1] * 5 + [2] * 5 + [3] * 5  # one block per epoch
    s = result.summary
    assert 0 < s.flops_saving < 1
    assert s.teacher_flops < s.baseline_flops - s.student_flops


def test_loss_falls(tiny):
    result = distill(name="fixed", method="fixed", lr=2e-3, **{**tiny, "epochs": 6})
    losses = [r["loss"] for r in rows_of(result.run_dir)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_teacher_is_early_exited(tiny, monkeypatch):
    """Count teacher block calls: steps run only `target_block` blocks."""
    calls = []
    real = distill_module.load_backbone

    def counting(source, *args, **kwargs):
        bb = real(source, *args, **kwargs)
        if not calls:  # the first backbone loaded is the teacher
            calls.append(0)
            for block in bb.level_modules():
                block.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        return bb

    monkeypatch.setattr(distill_module, "load_backbone", counting)
    result = distill(name="count", method="leap", threshold=0.99, calibrate=True, **tiny)
    rows = rows_of(result.run_dir)
    # FLOP table (one pass per depth: 1 + 2 + ... + L) + student-step count (target block at start: 1)
    # + calibration (L) + the steps
    expected = 21 + 1 + 6 + int(sum(r["teacher_blocks_run"] for r in rows))
    assert calls[0] == expected
    assert sum(r["teacher_blocks_run"] for r in rows) < 6 * len(rows)


@pytest.mark.parametrize(
    "stop_step,workers",
    [(4, 0), (7, 0), (4, 2), (7, 2)],  # at an epoch end and mid-epoch; loader in-process and in workers
)
def test_interrupt_and_resume_reproduce_the_uninterrupted_run(tiny, monkeypatch, interrupt_at, stop_step, workers):
    tiny = {**tiny, "num_workers": workers}
    full = distill(name="full", method="leap", threshold=0.6, **tiny)
    with monkeypatch.context() as m:
        interrupt_at(m, stop_step)
        part = distill(name="part", method="leap", threshold=0.6, **tiny)
    assert part.summary.status == "interrupted" and part.summary.steps == stop_step + 1
    resumed = distill(name="part", method="leap", threshold=0.6, resume=True, **tiny)
    a, b = rows_of(full.run_dir), rows_of(resumed.run_dir)
    assert len(b) == len(a) == 15
    assert [r["target_block"] for r in a] == [r["target_block"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["step"] == rb["step"] and ra["epoch"] == rb["epoch"]
        assert abs(ra["metric"] - rb["metric"]) < 1e-6
        assert abs(ra["loss"] - rb["loss"]) < 1e-6
        assert abs(ra["lr"] - rb["lr"]) < 1e-12
        assert ra["flops"] == rb["flops"]
    assert resumed.summary.status == "completed"
    assert full.summary.level_ups == resumed.summary.level_ups
    assert full.summary.teacher_flops == resumed.summary.teacher_flops
    wa = load_file(full.run_dir / "student.safetensors")
    wb = load_file(resumed.run_dir / "student.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)


def test_snapshots_record_the_student_along_the_way(tiny):
    result = distill(name="snap", method="leap", threshold=0.6, snapshot_every=5, **tiny)
    files = sorted((result.run_dir / "snapshots").iterdir())
    assert [f.name for f in files] == [f"step-{n:06d}.safetensors" for n in (0, 5, 10, 15)]
    rows = rows_of(result.run_dir)
    flops = [r["flops"] for r in rows]
    walls = [r["wall_seconds"] for r in rows]
    assert flops == sorted(flops) and flops[-1] == result.summary.teacher_flops + result.summary.student_flops
    assert walls == sorted(walls) and 0 < walls[-1] <= result.summary.wall_seconds
    metas = []
    for f in files:
        with safe_open(str(f), "pt") as h:
            metas.append({k: json.loads(v) for k, v in h.metadata().items()})
    assert [m["step"] for m in metas] == [0, 5, 10, 15]
    assert metas[0]["flops"] == 0
    assert [m["flops"] for m in metas[1:]] == [rows[n - 1]["flops"] for n in (5, 10, 15)]
    first, last = load_file(files[0]), load_file(files[-1])
    final = load_file(result.run_dir / "student.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)  # the last snapshot is the final student
    assert not all(torch.equal(first[k], final[k]) for k in final)  # step 0 is the untrained student
    assert load_student_file(files[1]).num_levels == 6


def test_student_file_loads_back(tiny):
    result = distill(name="s", method="fixed", **{**tiny, "epochs": 1})
    student = load_backbone("vit-nano", 64, weights=result.run_dir / "student.safetensors", patch_size=16)
    x = torch.randn(2, 3, 64, 64)
    sd = load_file(result.run_dir / "student.safetensors")
    assert torch.equal(student.model.pos_embed, sd["pos_embed"])
    assert student(x).shape == (2, 17, 128)


def test_existing_run_needs_resume_or_overwrite(tiny):
    distill(name="x", method="fixed", **{**tiny, "epochs": 1})
    with pytest.raises(LeapkdError, match="already exists"):
        distill(name="x", method="fixed", **{**tiny, "epochs": 1})
    distill(name="x", method="fixed", overwrite=True, **{**tiny, "epochs": 1})


def test_resume_without_a_run(tiny):
    with pytest.raises(LeapkdError, match="cannot resume"):
        distill(name="nothing", resume=True, **tiny)


def test_resume_refuses_a_changed_method(tiny):
    distill(name="x", method="fixed", **{**tiny, "epochs": 1})
    with pytest.raises(LeapkdError, match="cannot change method"):
        distill(name="x", method="leap", resume=True, **tiny)


def test_a_folder_is_used_whole_unless_asked(tiny, tmp_path):
    import numpy as np
    from PIL import Image

    for split, n in (("train", 85), ("val", 2)):
        for cls in ("a", "b"):
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), i, np.uint8)).save(d / f"{i}.png")
    folder = {**tiny, "data": str(tmp_path / "data"), "max_steps": 1}
    del folder["subset_per_class"]  # the default: auto
    assert distill(name="whole", **folder).summary.train_images == 170  # not 80 per class
    assert distill(name="some", subset_per_class=10, **folder).summary.train_images == 20
    builtin = {**tiny, "max_steps": 1}
    del builtin["subset_per_class"]
    assert distill(name="demo", **builtin).summary.train_images == 800  # the demo's 80 per class


def test_final_block_is_the_last_block_trained_on(tiny):
    result = distill(name="final", method="leap", threshold=0.99, calibrate=False, **tiny)
    rows = rows_of(result.run_dir)
    assert result.summary.level_ups == [5, 10, 15]  # the last one at the final epoch end
    assert rows[-1]["target_block"] == 3
    assert result.summary.final_block == 3 and result.summary.pending_block == 4


def test_teacher_head_is_fitted_under_the_run_precision(tiny, monkeypatch, tmp_path):
    """Logit KD's teacher head: features on the training device, in the run's autocast dtype."""
    from leapkd.models import Backbone

    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))  # extract, not read a cache
    seen, inside = [], []
    real_forward, real_extract = Backbone.forward_levels, distill_module.extract_features

    def forward_levels(self, images, levels, **kwargs):
        if inside:
            seen.append((images.device.type, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real_forward(self, images, levels, **kwargs)

    def extract_features(*args, **kwargs):
        inside.append(1)
        try:
            return real_extract(*args, **kwargs)
        finally:
            inside.clear()

    monkeypatch.setattr(Backbone, "forward_levels", forward_levels)
    monkeypatch.setattr(distill_module, "extract_features", extract_features)
    result = distill(name="kd", method="fixed", kd_weight=0.5, **{**tiny, "epochs": 1, "precision": "bf16-mixed"})
    assert seen and all(s == ("cpu", True, torch.bfloat16) for s in seen)  # 40 images: one batch
    assert result.summary.steps == 5
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    head = ckpt["state_dict"]["method.teacher_head.weight"]
    assert head.shape == (10, 128) and head.abs().sum() > 0  # fitted, and saved with the run
