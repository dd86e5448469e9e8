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

BASE = ["--teacher", "vit-nano", "--student", "vit-nano", "--image-size", "32", "--batch-size", "4",
        "--epochs", "1", "--no-progress"]  # fmt: skip


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


def test_corrupt_jpeg_and_truncated_png_are_skipped_and_counted(world, capsys, tmp_path):
    good = grey()
    truncated = tmp_path / "t.png"
    good.save(truncated)
    data = folder(tmp_path / "d", {"a": [good, good, b"\xff\xd8\xff not a jpeg"], "b": [good, good]})
    (data / "train" / "b" / "9.png").write_bytes(truncated.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match="unreadable image skipped"):
        code, out, _ = run_cli(world, capsys, "--data", str(data), "--batch-size", "2", name="corrupt")
    assert code == 0
    summary = json.loads((world["root"] / "runs" / "corrupt" / "summary.json").read_text())
    assert summary["skipped_images"] >= 1


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
    save_file(load_backbone("vit-tiny", 32).vit.state_dict(), tmp_path / "tiny.safetensors")
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
    from leapkd.methods.base import FeatureDistillation

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


def test_sigint_mid_epoch_saves_and_stops_cleanly(world, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "leapkd", "distill", *BASE, "--subset-per-class", "20", "--epochs", "3",
           "--output-dir", str(out), "--name", "sigint"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LEAPKD_CACHE": str(world["root"] / "cache")})  # fmt: skip
    metrics = out / "sigint" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) > 8):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "SIGINT: saving a checkpoint" in stdout and "continue with --resume" in stdout
    summary = json.loads((out / "sigint" / "summary.json").read_text())
    assert summary["completed"] is False and 8 <= summary["steps"] < 150
    assert (out / "sigint" / "checkpoints" / "last.ckpt").is_file()
