"""The LEAP reference's evaluation, as options: its linear probe, its eval transform, clamped boxes."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from leapkd.cli import main
from leapkd.data.transforms import build_transform
from leapkd.eval.linear_reference import reference_linear_probe
from leapkd.eval.retrieval import RetrievalImages


def test_one_epoch_of_the_reference_probe_by_hand():
    """Zero init: the first SGD step is -lr * the mean of (uniform softmax - one-hot) x."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=gen), torch.arange(40) % 4
    vx, vy = torch.randn(30, 8, generator=gen), torch.arange(30) % 4
    result = reference_linear_probe(x, y, vx, vy, num_classes=4, epochs=1)
    grad = (torch.full((40, 4), 0.25) - F.one_hot(y, 4).float()) / 40
    weight, bias = -0.1 * grad.T @ x, -0.1 * grad.sum(0)
    expected = ((vx @ weight.T + bias).argmax(1) == vy).float().mean().item()
    assert result["top1"] == expected and result["best_top1"] == expected and result["best_epoch"] == 1


def test_the_reference_probe_reports_its_last_and_its_best_epoch():
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 16, generator=gen) * 3
    y = torch.arange(90) % 3
    x = centres[y] + torch.randn(90, 16, generator=gen)
    vy = torch.arange(60) % 3
    vx = centres[vy] + torch.randn(60, 16, generator=gen)
    r = reference_linear_probe(x, y, vx, vy, epochs=20)
    assert r["top1"] > 0.9 and r["best_top1"] >= r["top1"] and 1 <= r["best_epoch"] <= 20 and r["epochs"] == 20


def test_center_crop_is_resize_to_256_over_224_bicubic_then_the_centre():
    image = Image.fromarray(torch.randint(0, 256, (100, 200, 3), dtype=torch.uint8).numpy())
    out = build_transform(112, augment=False, eval_transform="center-crop", output="uint8")(image)
    by_hand = TF.center_crop(
        TF.resize(TF.pil_to_tensor(image), 128, interpolation=TF.InterpolationMode.BICUBIC, antialias=True), [112, 112]
    )
    assert out.shape == (3, 112, 112) and torch.equal(out, by_hand)
    plain = build_transform(112, augment=False, output="uint8")(image)
    assert not torch.equal(plain, out)  # the default keeps more of the image


def test_query_boxes_are_clamped_to_the_image(tmp_path):
    path = tmp_path / "q.png"
    Image.new("RGB", (20, 10), (255, 0, 0)).save(path)
    crop = RetrievalImages([path], boxes=[(-5, -3, 30, 8)])[0]
    assert crop.size == (20, 8)
    assert crop.getextrema() == ((255, 255), (0, 0), (0, 0))  # red only: no black border from outside


def test_the_reference_probe_reads_the_references_data_unless_told_otherwise():
    """linear-reference: every image of both splits, centre-cropped; the user's values win; other
    protocols keep 100 / 50 / resize."""
    from leapkd.eval.protocol import PROTOCOLS
    from leapkd.eval.runner import _chosen_options

    unset = dict(train_per_class=None, val_per_class=None, transform=None)
    reference, knn = PROTOCOLS.get("linear-reference")(), PROTOCOLS.get("knn")()
    assert _chosen_options([reference], **unset) == {"train_per_class": None, "val_per_class": None,
                                                     "transform": "center-crop"}  # fmt: skip
    assert _chosen_options([knn], **unset) == {"train_per_class": 100, "val_per_class": 50, "transform": "resize"}
    given = _chosen_options([knn, reference], train_per_class=6, val_per_class="all", transform="resize")
    assert given == {"train_per_class": 6, "val_per_class": None, "transform": "resize"}


def test_reference_probe_and_transform_from_the_cli(tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["eval", "vit-nano", "--protocols", "linear-reference", "--image-size", "28",
                 "--train-per-class", "6", "--val-per-class", "3", "--out-dir", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "reference linear probe top-1 (last epoch)" in printed and "best epoch" in printed
    entry = json.loads((out / "eval.json").read_text())["fashion-mnist"]
    assert entry["transform"] == "center-crop" and entry["linear_reference"]["epochs"] == 100  # its preference
    assert (entry["train_per_class"], entry["val_per_class"]) == (6, 3)  # the user's counts
