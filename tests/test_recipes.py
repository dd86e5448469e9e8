"""Named recipes resolve, keep any key the user gives, and run (shrunk to tiny widths)."""

import pytest
from safetensors.torch import save_file

from leapkd import LeapkdError
from leapkd.cli import main
from leapkd.methods import load_config
from leapkd.models import load_backbone
from leapkd.recipes import RECIPES
from leapkd.rundir import read_metrics
from leapkd.training import distill

# Narrower versions of the recipes' models: the same depths (so the recipes' layer pairs hold).
TINY = {
    "spectralkd-deit": dict(
        teacher_kwargs={"embed_dim": 48, "num_heads": 2}, student_kwargs={"embed_dim": 48, "num_heads": 2}, size=32
    ),
    "spectralkd-swin": dict(
        teacher_kwargs={"embed_dim": 24, "num_heads": [1, 2, 2, 4]},
        student_kwargs={"embed_dim": 24, "num_heads": [1, 2, 2, 4]},
        size=64,
    ),
    "leap-paper": dict(
        teacher_kwargs={"embed_dim": 48, "num_heads": 2, "depth": 4},
        student_kwargs={"embed_dim": 32, "num_heads": 2, "depth": 3},
        size=28,
    ),
    "leap-paper-in1k": dict(
        teacher_kwargs={"embed_dim": 48, "num_heads": 2, "depth": 4},
        student_kwargs={"embed_dim": 32, "num_heads": 2, "depth": 3},
        size=28,
    ),
    "spectralkd-deit-small": dict(
        teacher_kwargs={"embed_dim": 48, "num_heads": 2}, student_kwargs={"embed_dim": 48, "num_heads": 2}, size=32
    ),
    "demo": dict(size=56),
    "demo-cnn": dict(size=56),
}


def test_every_recipe_is_tested():
    assert set(RECIPES) == set(TINY)


def test_a_recipe_sets_its_keys_and_yields_to_the_users():
    cfg = load_config(None, {"recipe": "spectralkd-swin", "epochs": 3})
    assert cfg.method == "spectralkd" and cfg.spectral_weight == 0.05 and cfg.epochs == 3
    assert cfg.student_layers == [2, 4, 10, 12] and cfg.teacher_layers == [2, 4, 22, 24]
    with pytest.raises(LeapkdError, match="unknown recipe 'spectralkd-swim'"):
        load_config(None, {"recipe": "spectralkd-swim"})


def test_recipes_and_print_config_from_the_cli(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)
    assert main(["distill", "--recipe", "spectralkd-deit", "--epochs", "2", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "teacher: cait_s24_224" in out and "epochs: 2" in out and "spectral_weight: 0.2" in out


def test_a_recipe_with_a_random_teacher_is_refused(tmp_path):
    with pytest.raises(LeapkdError, match="randomly initialised"):
        distill(recipe="spectralkd-deit", output_dir=str(tmp_path), progress=False)


@pytest.mark.parametrize("name", list(TINY))
def test_every_recipe_runs_three_steps(name, tmp_path):
    recipe = RECIPES[name].values
    tiny = dict(TINY[name])
    size = tiny.pop("size")
    extra = dict(tiny)
    if "teacher_kwargs" in tiny:  # a local weight file for the teacher, as a user would pass
        teacher = load_backbone(recipe["teacher"], size, model_kwargs=tiny["teacher_kwargs"])
        save_file(teacher.model.state_dict(), tmp_path / "teacher.safetensors")
        extra["teacher_weights"] = str(tmp_path / "teacher.safetensors")
    r = distill(recipe=name, image_size=size, subset_per_class=2, batch_size=4, max_steps=3, warmup_steps=1,
                eval_images_per_class=2, output_dir=str(tmp_path), progress=False, **extra)  # fmt: skip
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert len(rows) == 3 and r.summary.method == recipe["method"]
    assert r.summary.teacher.name == recipe["teacher"] and r.summary.student.name == recipe["student"]
    if recipe["method"] == "spectralkd":
        assert r.summary.loss_terms == ["spectral", "ce", "kd"]
    if name == "leap-paper":  # LARS at the sqrt-scaled LR, its groups as the reference's
        import torch

        assert r.summary.peak_lr == pytest.approx(6.0 * (4 / 1536) ** 0.5)
        groups = torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]
        assert [g["trust_coeff"] for g in groups["param_groups"]] == [0.001, 0.001]
        assert [g["always_adapt"] for g in groups["param_groups"]] == [True, False]
        assert [g["weight_decay"] for g in groups["param_groups"]] == [1e-6, 0.0]


def test_the_papers_baseline_reuses_the_papers_recipe():
    """`--recipe leap-paper --method fixed`: the fixed target under the paper's training, the
    curriculum's keys dropped with a warning naming them."""
    with pytest.warns(UserWarning, match="dropped threshold, alpha, max_epochs_per_block"):
        cfg = load_config(None, {"recipe": "leap-paper", "method": "fixed"})
    assert (cfg.method, cfg.lr, cfg.cls_weight, cfg.optimizer, cfg.epochs) == ("fixed", 6.0, 0.05, "lars", 100)


def test_restarts_need_the_per_step_schedule():
    with pytest.raises(LeapkdError, match="lr_reset"):
        load_config(None, {"method": "leap", "lr_reset": "peak", "lr_interval": "epoch"})
