"""The bad-input matrix: every mistake gets an exit code, a message naming the problem and
the fix, and never costs an existing checkpoint. Mirrored in docs/reliability.md."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from leapkd.cli import main
from leapkd.models import load_backbone

BASE = ["--teacher", "vit-nano", "--allow-random-teacher", "--student", "vit-nano", "--image-size", "32",
        "--batch-size", "4", "--epochs", "1", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An output directory holding one finished run ('victim') whose checkpoint must survive."""
    root = tmp_path_factory.mktemp("bad")
    os.environ["LEAPKD_CACHE"] = str(root / "cache")
    assert main(["distill", *BASE, "--subset-per-class", "2", "--output-dir", str(root / "runs"),
                 "--name", "victim"]) == 0  # fmt: skip
    ckpt = root / "runs" / "victim" / "checkpoints" / "last.ckpt"
    return {"root": root, "ckpt": ckpt, "sha": hashlib.sha1(ckpt.read_bytes()).hexdigest()}


def folder(root: Path, images: dict[str, list[Image.Image | bytes]]) -> Path:
    """train/ and val/ class folders holding the given images (bytes = a raw broken file)."""
    for split in ("train", "val"):
        for cls, items in images.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, item in enumerate(items):
                if isinstance(item, bytes):
                    (d / f"{i}.jpg").write_bytes(item)
                else:
                    item.save(d / f"{i}.png")
    return root


def grey(size=32, value=128):
    return Image.fromarray(np.full((size, size), value, np.uint8))


def run_cli(world, capsys, *args, name="case"):
    code = main(["distill", *BASE, "--output-dir", str(world["root"] / "runs"), "--name", name, *args])
    out = capsys.readouterr()
    assert hashlib.sha1(world["ckpt"].read_bytes()).hexdigest() == world["sha"], "a checkpoint was touched"
    return code, out.out, out.err


def expect_error(world, capsys, *args, says, name="case"):
    code, _, err = run_cli(world, capsys, *args, name=name)
    assert code == 2, err
    assert "error:" in err and "fix:" in err and "Traceback" not in err
    for words in says:
        assert words in err, (words, err)
    return err


def test_nonexistent_data_path(world, capsys):
    expect_error(world, capsys, "--data", "/no/such/folder", says=["/no/such/folder", "does not exist"])


def test_empty_folder(world, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(world, capsys, "--data", str(tmp_path / "empty"), says=["empty"])


def test_folder_without_images(world, capsys, tmp_path):
    d = tmp_path / "noimg" / "train" / "cat"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("no pictures here")
    expect_error(world, capsys, "--data", str(tmp_path / "noimg"), says=["no images"])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_and_truncated_png_are_skipped_and_counted(world, capsys, tmp_path, workers):
    good = grey()
    truncated = tmp_path / "t.png"
    good.save(truncated)
    data = folder(tmp_path / "d", {"a": [good, good, b"\xff\xd8\xff not a jpeg"], "b": [good, good]})
    (data / "train" / "b" / "9.png").write_bytes(truncated.read_bytes()[:40])
    name = f"corrupt{workers}"
    args = ["--data", str(data), "--batch-size", "2", "--epochs", "2", "--num-workers", str(workers)]
    if workers == 0:  # with workers the warning is raised inside the worker processes
        with pytest.warns(RuntimeWarning, match="unreadable image skipped"):
            code, _, err = run_cli(world, capsys, *args, name=name)
    else:
        code, _, err = run_cli(world, capsys, *args, name=name)
    assert code == 0, err
    summary = json.loads((world["root"] / "runs" / name / "summary.json").read_text())
    assert summary["skipped_images"] == 2  # each bad file once, whichever worker met it, whatever the epoch


def test_rgba_sixteen_bit_and_palette_images_train(world, capsys, tmp_path):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 128))
    sixteen = Image.fromarray(np.full((32, 32), 40000, np.uint16))
    palette = grey().convert("P")
    data = folder(tmp_path / "modes", {"a": [rgba, sixteen], "b": [palette, rgba]})
    code, _, err = run_cli(world, capsys, "--data", str(data), "--batch-size", "2", name="modes")
    assert code == 0, err


def test_image_smaller_than_one_patch_is_upscaled(world, capsys, tmp_path):
    data = folder(tmp_path / "tiny", {"a": [grey(4), grey(4)], "b": [grey(4, 9), grey(4, 9)]})
    code, _, err = run_cli(world, capsys, "--data", str(data), "--batch-size", "2", name="tinyimg")
    assert code == 0, err


def test_unknown_teacher(world, capsys):
    expect_error(
        world, capsys, "--teacher", "dinov2-vits14-imgfocuss", says=["unknown model", "dinov2-vits14-imgfocus"]
    )


def test_weight_file_of_another_architecture(world, capsys, tmp_path):
    save_file(load_backbone("vit-tiny", 32).model.state_dict(), tmp_path / "tiny.safetensors")
    expect_error(world, capsys, "--teacher-weights", str(tmp_path / "tiny.safetensors"),
                 says=["do not fit", "the file has 12 blocks of width 192"])  # fmt: skip


def test_missing_weight_file(world, capsys, tmp_path):
    expect_error(world, capsys, "--student-weights", str(tmp_path / "nope.pth"), says=["does not exist"])


def test_grid_that_cannot_be_matched(world, capsys):
    expect_error(world, capsys, "--image-size", "40", says=["not a multiple of the teacher's patch size 16", "32"])


def test_unknown_config_key(world, capsys):
    expect_error(world, capsys, "--treshold", "0.9", says=["unknown config key 'treshold'", "threshold"])


def test_yaml_syntax_error(world, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    expect_error(world, capsys, "--config", str(tmp_path / "bad.yaml"), says=["not valid YAML"])


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_threshold_out_of_range(world, capsys, value):
    expect_error(world, capsys, "--threshold", value, says=["threshold"])


def test_negative_epochs(world, capsys):
    expect_error(world, capsys, "--epochs", "-2", says=["epochs"])


def test_batch_size_zero(world, capsys):
    expect_error(world, capsys, "--batch-size", "0", says=["batch_size"])


def test_batch_larger_than_the_data(world, capsys):
    expect_error(world, capsys, "--subset-per-class", "1", "--batch-size", "64", says=["do not fill one global batch"])


def test_existing_run_without_resume(world, capsys):
    expect_error(world, capsys, "--subset-per-class", "2", name="victim", says=["already exists", "--resume"])


def test_resume_without_checkpoint(world, capsys):
    expect_error(world, capsys, "--resume", name="never-ran", says=["cannot resume"])


def test_unwritable_output_directory(world, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["distill", *BASE, "--subset-per-class", "2", "--output-dir", str(blocker), "--name", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to the run directory" in err and "fix:" in err


def poison_loss(monkeypatch, poisoned_call) -> None:
    """Make the loss NaN on the calls for which `poisoned_call(n)` is true (n counts from 1;
    the FLOP count runs the loss once before step 0)."""
    from leapkd.methods import FeatureDistillation

    real = FeatureDistillation.loss
    calls = []

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if poisoned_call(len(calls)):
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(FeatureDistillation, "loss", poisoned)


def test_nan_loss_stops_naming_step_and_keeps_the_checkpoint(world, capsys, monkeypatch):
    poison_loss(monkeypatch, lambda n: n > 4)  # from step 3 on
    err = expect_error(world, capsys, "--subset-per-class", "4", "--checkpoint-every", "1", name="nan",
                       says=["the loss is nan at step 3", "loss", "--nan_policy skip"])  # fmt: skip
    ckpt = torch.load(world["root"] / "runs" / "nan" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3  # the last good step's checkpoint is in place
    assert err


def test_nan_policy_skip_goes_on(world, capsys, monkeypatch):
    poison_loss(monkeypatch, lambda n: n == 3)  # step 1 only
    code, _, err = run_cli(world, capsys, "--subset-per-class", "4", "--nan-policy", "skip", name="skip")
    assert code == 0, err
    assert json.loads((world["root"] / "runs" / "skip" / "summary.json").read_text())["skipped_batches"] == 1


def test_damaged_latest_checkpoint_falls_back_to_the_previous(world, capsys):
    args = ["--subset-per-class", "4", "--checkpoint-every", "2", "--epochs", "2"]
    assert run_cli(world, capsys, *args, name="damaged")[0] == 0
    last = world["root"] / "runs" / "damaged" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="damaged"):
        code, _, err = run_cli(world, capsys, *args, "--epochs", "3", "--resume", name="damaged")
    assert code == 0, err
    assert (last.parent / "last.ckpt.corrupt").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_saves_and_stops_cleanly(world, tmp_path, sig):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "leapkd", "distill", *BASE, "--subset-per-class", "20", "--epochs", "3",
           "--output-dir", str(out), "--name", "sigint"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LEAPKD_CACHE": str(world["root"] / "cache")})  # fmt: skip
    metrics = out / "sigint" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) > 8):
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"{sig.name}: saving a checkpoint" in stdout and "continue with --resume" in stdout
    assert f"leapkd distill --resume --name sigint --output-dir {out}" in stdout
    summary = json.loads((out / "sigint" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 8 <= summary["steps"] < 150
    assert (out / "sigint" / "checkpoints" / "last.ckpt").is_file()
    assert (out / "sigint" / "student.safetensors").is_file()


def test_timm_teacher_without_weights_is_refused(world, capsys):
    args = [a for a in BASE if a != "--allow-random-teacher"]
    args[args.index("--teacher") + 1] = "vit_small_patch14_reg4_dinov2"
    args[args.index("--image-size") + 1] = "28"  # a multiple of its patch size: only the weights are missing
    code = main(["distill", *args, "--output-dir", str(world["root"] / "runs"), "--name", "random-teacher"])
    err = capsys.readouterr().err
    assert code == 2 and "randomly initialised" in err
    assert "--teacher_weights" in err and "--allow_random_teacher" in err and "Traceback" not in err
    assert not (world["root"] / "runs" / "random-teacher").exists()


def test_fixed_last_n_beyond_the_teacher(world, capsys):
    expect_error(world, capsys, "--method", "fixed", "--fixed-last-n", "99",
                 says=["fixed_last_n is 99", "6 levels", "between 1 and 6"])  # fmt: skip
    assert not (world["root"] / "runs" / "case").exists()


def test_eval_block_beyond_the_model(capsys):
    code = main(["eval", "vit-nano", "--block", "99", "--image-size", "32", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "block 99 is outside the 6 levels" in err and "fix:" in err and "Traceback" not in err


def test_gpu_asked_for_on_a_machine_without_one(world, capsys, monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    for _ in range(2):  # the same command again says the same: no run directory was left behind
        expect_error(world, capsys, "--accelerator", "gpu", "--subset-per-class", "2", name="gpu",
                     says=["cannot train with --accelerator gpu", "--accelerator cpu"])  # fmt: skip
        assert not (world["root"] / "runs" / "gpu").exists()


def test_resume_with_another_number_of_processes(world, capsys):
    runs = world["root"] / "runs"
    assert main(["distill", *BASE, "--subset-per-class", "2", "--output-dir", str(runs), "--name", "one-process"]) == 0
    ckpt = runs / "one-process" / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    # in a subprocess: were the check to fail, DDP would relaunch this command, not pytest
    cmd = [sys.executable, "-m", "leapkd", "distill", *BASE, "--subset-per-class", "2", "--output-dir", str(runs),
           "--name", "one-process", "--resume", "--devices", "2", "--strategy", "ddp",
           "--accelerator", "cpu"]  # fmt: skip
    env = {**os.environ, "LEAPKD_CACHE": str(world["root"] / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for words in ("trained by 1 process(es)", "resumed with 2", "--devices 1"):
        assert words in done.stderr, done.stderr
    assert ckpt.read_bytes() == before


def test_eval_of_revisited_data_without_its_root_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "never"
    args = ["--data", "roxford5k", "--image-size", "32", "--out-dir", str(out), "--no-progress"]
    code = main(["eval", "vit-nano", *args])
    err = capsys.readouterr().err
    assert code == 2 and "needs --data_root" in err and "fix:" in err
    assert not out.exists()


def test_evaluation_keys_that_cannot_work_together(world, capsys):
    expect_error(world, capsys, "--early-stop-patience", "3",
                 says=["early_stop_patience needs eval_every"])  # fmt: skip
    expect_error(world, capsys, "--eval-every", "2", "--eval-metric", "linear_top1",
                 says=["eval_metric linear_top1 needs linear in eval_protocols"])  # fmt: skip
    expect_error(world, capsys, "--eval-every", "two", says=["eval_every", "`1 epoch`"])
    assert not (world["root"] / "runs" / "case").exists()


def test_evaluation_on_unlabelled_images(world, capsys, tmp_path):
    for i in range(8):
        grey(value=i * 30).save(tmp_path / f"{i}.png")
    expect_error(world, capsys, "--data", str(tmp_path), "--eval-every", "2",
                 says=["evaluation during training needs class labels", "--eval_data"])  # fmt: skip
    assert not (world["root"] / "runs" / "case").exists()


def test_a_tracker_without_its_package(world, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    expect_error(world, capsys, "--logger", "csv,wandb", says=["--logger wandb needs", "pip install 'leapkd[wandb]'"])


def test_export_best_of_a_run_evaluated_never(world, capsys):
    code = main(["export", str(world["root"] / "runs" / "victim"), "--which", "best"])
    err = capsys.readouterr().err
    assert code == 2 and "no best student" in err and "Traceback" not in err
    assert "export --which last" in err and "train with `eval_every`" in err  # a flag of export; a key of distill


def test_top5_asked_of_two_classes(world, capsys, tmp_path):
    data = folder(
        tmp_path, {"a": [grey(value=v) for v in (10, 20, 30, 40)], "b": [grey(value=v) for v in (200, 210, 220, 230)]}
    )
    expect_error(world, capsys, "--data", str(data), "--eval-every", "2", "--eval-metric", "knn_top5",
                 says=["eval_metric knn_top5 is not measured", "2 classes", "--eval_metric knn_top1"])  # fmt: skip
