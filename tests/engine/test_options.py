"""Every loss and curriculum option runs end to end and does what it says."""

import math

import pytest
import torch

from leapkd.errors import LeapkdError
from leapkd.methods import StudentOutput, load_config
from leapkd.rundir import read_metrics
from leapkd.training import distill


def test_all_loss_terms_and_metric_subset(tiny):
    r = distill(name="opts", cls_weight=0.05, patch_embed_weight=0.1, metric_images=3, **{**tiny, "epochs": 1})
    rows = read_metrics(r.run_dir / "metrics.csv")
    for row in rows:
        assert row["loss_cls"] is not None and row["loss_patch_embed"] is not None
        expected = row["loss_feature"] + 0.05 * row["loss_cls"] + 0.1 * row["loss_patch_embed"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5)


def test_fixed_last_n_concatenates_blocks(tiny):
    r = distill(name="last2", method="fixed", fixed_last_n=2, **{**tiny, "epochs": 1})
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"]["method.aligner.projectors.256.weight"].shape == (2 * 128, 128)
    assert all(row["teacher_blocks_run"] == 6 for row in read_metrics(r.run_dir / "metrics.csv"))


def test_fixed_last_two_with_a_cls_term(tiny):
    """The LEAP paper's concatenation baseline: last two blocks' patch and CLS tokens."""
    r = distill(name="last2cls", method="fixed", fixed_last_n=2, cls_weight=1.0, **{**tiny, "epochs": 1})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert all(row["loss"] == pytest.approx(row["loss_feature"] + row["loss_cls"], rel=1e-5) for row in rows)


def test_fixed_level_runs_the_teacher_that_deep_only(tiny):
    last = distill(name="last", method="fixed", **{**tiny, "epochs": 1})
    level = distill(name="level3", method="fixed", fixed_level=3, **{**tiny, "epochs": 1})
    rows = read_metrics(level.run_dir / "metrics.csv")
    assert all(row["teacher_blocks_run"] == 3 and row["target_block"] == 3 for row in rows)
    # 3 of 6 blocks: about half the teacher FLOPs, counted as a saving against the last-block baseline
    assert 0.4 < level.summary.teacher_flops / last.summary.teacher_flops < 0.6
    assert level.summary.flops_saving > 0 and last.summary.flops_saving == pytest.approx(0.0, abs=1e-9)


def test_fixed_average_is_the_mean_of_every_level():
    from leapkd.methods import build_method, load_config
    from leapkd.models import load_backbone

    teacher = load_backbone("vit-nano", 32).eval()
    student = load_backbone("vit-nano", 32, patch_size=teacher.patch_size)
    method = build_method(load_config(None, {"method": "fixed", "fixed_average": True}), teacher, student, None)
    images = torch.randn(2, 3, 32, 32)
    targets = method.targets(teacher, images)
    with torch.no_grad():
        raw = teacher.forward_levels(images, range(1, 7), norm=False)
        expected = torch.stack([teacher.normalize(b, raw[b]).patches for b in range(1, 7)]).mean(0)
    assert targets.depth == 6 and torch.allclose(targets.patch, expected, atol=1e-6)
    assert method.target_width() == teacher.width


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_all_layers_pairs_every_level_with_its_own_projector(reduce):
    """The LEAP reference's --all-layers: student level i (raw) against teacher level i (normed),
    one Linear each, patch and CLS MSEs summed (or averaged) over the levels."""
    import torch.nn.functional as F

    from leapkd.methods import StudentOutput, build_method
    from leapkd.models import load_backbone

    teacher = load_backbone("vit-nano", 32).eval()
    student = load_backbone("vit_tiny_patch16_224", 32, patch_size=8, model_kwargs={"depth": 6, "embed_dim": 64,
                                                                                     "num_heads": 2})  # fmt: skip
    cfg = {"method": "fixed", "fixed_all_layers": True, "fixed_all_layers_reduce": reduce, "cls_weight": 0.5}
    method = build_method(load_config(None, cfg), teacher, student, None)
    assert (
        len(method.layerwise.projectors) == 6 and method.aligner is None and method.student_taps() == [1, 2, 3, 4, 5, 6]
    )
    images = torch.randn(2, 3, 32, 32)
    targets = method.targets(teacher, images)
    raw = student.forward_levels(images, range(1, 7), norm=False)
    out = method.loss_from(StudentOutput(student.normalize(6, raw[6]), taps=raw), targets)
    with torch.no_grad():
        normed = {
            b: teacher.normalize(b, f) for b, f in teacher.forward_levels(images, range(1, 7), norm=False).items()
        }
        heads = method.layerwise.projectors
        patch = torch.stack([F.mse_loss(heads[b - 1](raw[b].resampled(normed[b].grid).patches), normed[b].patches)
                             for b in range(1, 7)])  # fmt: skip
        cls = torch.stack([F.mse_loss(heads[b - 1](raw[b].cls), normed[b].cls) for b in range(1, 7)])
    combine = torch.mean if reduce == "mean" else torch.sum
    assert targets.depth == 6 and set(out.parts) == {"loss_feature", "loss_cls"}
    assert torch.allclose(out.parts["loss_feature"], combine(patch), atol=1e-5)
    assert torch.allclose(out.loss, combine(patch) + 0.5 * combine(cls), atol=1e-5)
    deeper = load_backbone("vit-tiny", 32, patch_size=8)
    with pytest.raises(LeapkdError, match="pairs student level i with teacher level i"):
        build_method(load_config(None, {"method": "fixed", "fixed_all_layers": True}), teacher, deeper, None)


def test_all_layers_trains_with_every_projector_and_the_whole_teacher(tiny):
    r = distill(name="all", method="fixed", fixed_all_layers=True, cls_weight=0.05, **{**tiny, "epochs": 1})
    assert r.summary.flops_saving == pytest.approx(0.0, abs=1e-9) and r.summary.steps == 5
    state = torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert sum(k.startswith("method.layerwise.projectors.") and k.endswith(".weight") for k in state) == 6


def test_concat_last_targets_the_block_and_the_last_one():
    """The LEAP reference's --curriculum-concat-teacher-last: target = [block b, block L] along
    channels through one projector of twice the width; the curriculum stops at L - 1; the metric
    reads the block's half; the teacher runs whole."""
    from leapkd.methods import StudentOutput, build_method
    from leapkd.models import load_backbone

    teacher = load_backbone("vit-nano", 32).eval()
    student = load_backbone("vit-nano", 32, patch_size=8)
    cfg = load_config(None, {"method": "leap", "concat_last": True, "cls_weight": 0.05, "calibrate": False})
    method = build_method(cfg, teacher, student, None)
    assert method.curriculum.num_blocks == 5 and method.target_blocks() == [1, 6] and method.target_block == 1
    assert list(method.aligner.projectors) == ["256"]  # 128 + 128, one projector for every block
    images = torch.randn(2, 3, 32, 32)
    targets = method.targets(teacher, images)
    with torch.no_grad():
        levels = teacher.forward_levels(images, [1, 6])
    assert targets.depth == 6 and torch.equal(targets.patch, torch.cat([levels[1].patches, levels[6].patches], -1))
    assert torch.equal(targets.cls, torch.cat([levels[1].cls, levels[6].cls], -1))
    raw = student.forward_levels(images, [6], norm=False)
    out = method.loss_from(StudentOutput(student.normalize(6, raw[6])), targets)
    expected = method.progress_metric.fn(out.saved["projected"][..., :128].detach(), levels[1].patches)
    assert torch.allclose(method.progress(out, targets), expected)
    with pytest.raises(LeapkdError, match="snap_to_last"):
        build_method(load_config(None, {"method": "leap", "concat_last": True, "snap_to_last": 6}), teacher, student,
                     None)  # fmt: skip
    swin = load_backbone("swin_tiny_patch4_window7_224", 64, model_kwargs={"embed_dim": 24, "num_heads": [1, 2, 2, 4]})
    with pytest.raises(LeapkdError, match="differ in grid"):
        build_method(load_config(None, {"method": "leap", "concat_last": True}), swin, student, None)


def test_a_per_rank_curriculum_refuses_what_would_split_the_ranks():
    for key, value in (("lr_reset", "peak"), ("reset_projector", True)):
        with pytest.raises(LeapkdError, match="drift apart"):
            load_config(None, {"method": "leap", "curriculum_sync": False, key: value})


def test_concat_last_trains_and_calibrates(tiny):
    r = distill(name="concat", concat_last=True, **{**tiny, "epochs": 1})
    assert len(r.summary.calibration_scores) == 5
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert all(row["teacher_blocks_run"] == 6 and row["target_block"] < 6 for row in rows)  # the curriculum's block
    assert r.summary.flops_saving < 0  # the whole teacher each step, the calibration and a wider projector


def test_one_fixed_target_at_a_time():
    from leapkd.errors import LeapkdError
    from leapkd.methods import load_config

    with pytest.raises(LeapkdError, match="choose one fixed target"):
        load_config(None, {"method": "fixed", "fixed_level": 2, "fixed_average": True})


def test_checkpoint_never_holds_the_teacher(tiny):
    r = distill(name="ck", **{**tiny, "epochs": 1})
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith(("student.", "method.")) for k in keys)
    student_and_projector = sum(v.numel() for k, v in ckpt["state_dict"].items() if k.endswith(("weight", "bias")))
    n_opt = sum(len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"])
    assert n_opt == sum(1 for k in keys if not k.endswith("_extra_state"))
    assert student_and_projector > 0
    assert "curriculum" in ckpt["state_dict"]["method._extra_state"]


def test_lr_restarts_at_level_up(tiny):
    r = distill(name="lr", threshold=0.99, calibrate=False, lr_reset="peak", **{**tiny, "warmup_steps": 0})
    rows = read_metrics(r.run_dir / "metrics.csv")
    level_ups = r.summary.level_ups
    assert level_ups == [5, 10, 15]  # epoch cap of 1, five steps an epoch (the last after the final step)
    assert rows[5]["lr"] == pytest.approx(5e-4) and rows[10]["lr"] == pytest.approx(5e-4)
    assert rows[4]["lr"] < 5e-4 and rows[9]["lr"] < rows[5]["lr"]


def test_the_references_restarts_in_a_run(tiny):
    """lr_restart_style reference: epoch-end level-ups after 5 and 10 steps restart the cosine at
    steps 5 and 10, first applied one step later; the reference's warm-up-free schedule from step 0."""
    r = distill(name="lr", threshold=0.99, calibrate=False, lr_reset="peak", lr_restart_style="reference",
                **{**tiny, "warmup_steps": 0})  # fmt: skip
    lr = [row["lr"] for row in read_metrics(r.run_dir / "metrics.csv")]
    assert r.summary.level_ups == [5, 10, 15] and lr[0] == pytest.approx(5e-4)
    total, floor = 15, 0.01

    def segment(step, start):
        return 5e-4 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - start) / (total - start))))

    assert lr[5] == pytest.approx(segment(5, 0)) and lr[6] == pytest.approx(segment(6, 5))  # not at 5: at 6
    assert lr[10] == pytest.approx(segment(10, 5)) and lr[11] == pytest.approx(segment(11, 10))
    with pytest.raises(LeapkdError, match="snap_to_last runs one cosine from step 0 without warm-up"):
        load_config(None, {"method": "leap", "lr_restart_style": "reference", "snap_to_last": 3})
    assert load_config(None, {"method": "leap", "lr_restart_style": "reference", "snap_to_last": 3,
                              "warmup_steps": 0}).snap_to_last == 3  # fmt: skip


def test_reset_projector_at_level_up(tiny, monkeypatch):
    from leapkd.methods.align import Aligner

    resets = []
    real = Aligner.reset
    monkeypatch.setattr(Aligner, "reset", lambda self, width: (resets.append(width), real(self, width)))
    r = distill(name="rp", threshold=0.99, calibrate=False, reset_projector=True, **tiny)
    assert resets == [128] * len(r.summary.level_ups) and len(resets) == 3


def test_bf16_mixed_precision_runs(tiny):
    r = distill(name="bf16", **{**tiny, "epochs": 1, "precision": "bf16-mixed"})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert all(0.0 <= row["metric"] <= 1.0 for row in rows)


def test_cosine_metric(tiny):
    r = distill(name="cos", metric="cosine", **{**tiny, "epochs": 1})
    assert all(-1.0 <= row["metric"] <= 1.0 for row in read_metrics(r.run_dir / "metrics.csv"))


def test_tensorboard_logs_the_same_scalars(tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = distill(name="tb", logger="tensorboard", **{**tiny, "epochs": 1})
    events = EventAccumulator(str(r.run_dir / "tensorboard"))
    events.Reload()
    rows = read_metrics(r.run_dir / "metrics.csv")
    for key in ("loss", "metric", "target_block", "lr"):
        logged = [e.value for e in events.Scalars(key)]
        assert logged == pytest.approx([row[key] for row in rows], rel=1e-6), key


def test_patch_embedding_targets_are_the_raw_conv_outputs():
    """The reference's --embed-loss compares patch-projection outputs: no position embedding, no prefix."""
    import copy

    from leapkd.methods import build_method, load_config
    from leapkd.models import freeze, load_backbone

    teacher = freeze(load_backbone("vit-nano", 32))
    student = copy.deepcopy(teacher)
    cfg = load_config(None, {"method": "fixed", "patch_embed_weight": 1.0, "image_size": 32})
    method = build_method(cfg, teacher, student, num_classes=None)
    images = torch.randn(4, 3, 32, 32)
    targets = method.targets(teacher, images)
    assert targets.embed.patches.shape == (4, 4, 128)  # 2 x 2 patches, no prefix tokens, before pos_embed
    assert torch.equal(targets.embed.patches, teacher.model.patch_embed.proj(images).flatten(2).transpose(1, 2))
    out = method.loss_from(StudentOutput(student.forward_to(images, 6), student.patch_projection(images)), targets)
    assert set(out.parts) == {"loss_feature", "loss_patch_embed"}
    trained = [n for n, p in method.named_parameters() if p.requires_grad and n.startswith("patch_embed_loss.")]
    assert len(trained) == 6  # P_e, LN_s and LN_t, each with weight and bias: all in the optimizer
