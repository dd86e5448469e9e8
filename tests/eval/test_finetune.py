"""`--protocols finetune`: the whole model trained with a new head, against the same architecture from scratch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler

from leapkd.cli import main
from leapkd.data import build_dataset
from leapkd.eval.finetune import FinetuneData, baseline_model, finetune, parameter_groups
from leapkd.eval.knn import KnnProtocol
from leapkd.eval.protocol import EvalOptions
from leapkd.eval.runner import evaluate
from leapkd.metrics import top_accuracy
from leapkd.models import load_backbone

SMALL = dict(data="fashion-mnist", image_size=32, train_per_class=3, val_per_class=2, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))


def _data(augment: bool, size: int = 32) -> FinetuneData:
    train = build_dataset("fashion-mnist", "train", size, augment=augment, subset_per_class=2)
    val = build_dataset("fashion-mnist", "val", size, augment=False, subset_per_class=2)
    return FinetuneData(train, val, len(train.classes))


def test_one_epoch_by_hand():
    """20 images, batch 8: two AdamW steps (the last 4 images dropped), the LR a cosine without
    warm-up (peak, then half), label-smoothed cross-entropy on the CLS token, no weight decay
    on what the ViT excludes; then the validation split scored."""
    data = _data(augment=False)
    model = load_backbone("vit-nano", 32, patch_size=8)
    options = EvalOptions(
        finetune_epochs=1, finetune_batch_size=8, finetune_warmup=0.0, finetune_layer_decay=1.0, progress=False
    )
    result = finetune(model, data, options, seed=3)

    net = copy.deepcopy(model).train()
    torch.manual_seed(3)
    head = nn.Linear(net.width, 10)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    excluded = {f"model.{n}" for n in net.model.no_weight_decay()}
    named = [*net.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
    decay = [p for n, p in named if p.ndim > 1 and n not in excluded]
    rest = [p for n, p in named if not (p.ndim > 1 and n not in excluded)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}])
    order = list(RandomSampler(range(20), generator=torch.Generator().manual_seed(3)))
    losses = []
    for step, lr in enumerate((1e-3, 0.5e-3)):
        idx = order[8 * step : 8 * step + 8]
        images = torch.stack([data.train[i][0] for i in idx])
        labels = torch.tensor([data.train[i][1] for i in idx])
        loss = F.cross_entropy(head(net.embedding(images)), labels, label_smoothing=0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        images = torch.stack([data.val[i][0] for i in range(len(data.val))])
        expected = top_accuracy(head(net.embedding(images)), torch.tensor(data.val.targets))
    assert result["loss"] == pytest.approx([sum(losses) / 2], rel=1e-6)
    assert result["top1"] == pytest.approx(expected["top1"]) and result["curve"] == [result["top1"]]
    assert losses[1] != losses[0]  # the second step saw the first's update


def test_layer_decay_lowers_each_block_below_the_one_above():
    options = EvalOptions(finetune_lr=1e-3, finetune_layer_decay=0.5)
    vit = load_backbone("vit-nano", 32, patch_size=8)
    head = nn.Linear(vit.width, 10)
    lr_of = {id(p): g["lr"] for g in parameter_groups(vit, head, options) for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in parameter_groups(vit, head, options) for p in g["params"]}
    blocks = len(vit.model.blocks)
    for i, block in enumerate(vit.model.blocks):
        assert {lr_of[id(p)] for p in block.parameters()} == {1e-3 * 0.5 ** (blocks - 1 - i)}  # the last at the peak
    assert lr_of[id(vit.model.cls_token)] == 1e-3 * 0.5**blocks  # the embedding, below the first block
    assert lr_of[id(head.weight)] == lr_of[id(vit.model.norm.weight)] == 1e-3
    assert wd_of[id(vit.model.pos_embed)] == wd_of[id(head.bias)] == 0.0 and wd_of[id(head.weight)] == 0.05
    assert len(lr_of) == sum(1 for _ in vit.parameters()) + 2  # every parameter, once
    cnn = load_backbone("resnet18", 32)
    cnn_head = nn.Linear(cnn.width, 10)
    assert {g["lr"] for g in parameter_groups(cnn, cnn_head, options)} == {1e-3}  # CNNs: no layer decay


def test_every_arm_sees_the_same_images_in_the_same_order_with_the_same_augmentation():
    data = _data(augment=True)
    seen: list[float] = []
    base = data.train.base  # the subset's images
    transform = base.transform

    def recorded(image):
        out = transform(image)
        seen.append(float(out.sum()))
        return out

    base.transform = recorded
    options = EvalOptions(finetune_epochs=2, finetune_batch_size=8, progress=False)
    model = load_backbone("vit-nano", 32, patch_size=8, model_kwargs={"drop_path_rate": 0.1})
    finetune(model, data, options, seed=5)
    first, seen[:] = list(seen), []
    finetune(baseline_model(model, "scratch", 5), data, options, seed=5)
    assert seen == first and len(first) == 2 * 16  # 2 epochs x 2 batches of 8 (the rest dropped)
    seen.clear()
    finetune(model, data, options, seed=6)
    assert seen != first  # another seed, another order and other crops


def test_scratch_is_the_same_architecture_at_a_seeded_random_init():
    model = load_backbone("vit-nano", 32, patch_size=8, model_kwargs={"depth": 2})
    a, b = baseline_model(model, "scratch", 1), baseline_model(model, "scratch", 1)
    assert a.describe() == model.describe()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.pos_embed, baseline_model(model, "scratch", 2).model.pos_embed)
    assert not torch.equal(a.model.pos_embed, model.model.pos_embed)


def test_evaluate_is_deterministic_and_compares_with_scratch(tmp_path):
    keys = dict(SMALL, protocols=["finetune"], finetune_epochs=2, finetune_batch_size=8, seeds=[0, 1], patch_size=8)
    first = evaluate("vit-nano", out_dir=tmp_path / "a", **keys)["finetune"]
    again = evaluate("vit-nano", out_dir=tmp_path / "b", **keys)["finetune"]

    def without_seconds(result):
        return json.dumps({k: v for k, v in result.items() if k != "arms"}) + json.dumps(
            {
                a: [{k: v for k, v in r.items() if k != "seconds"} for r in arm["runs"]]
                for a, arm in result["arms"].items()
            }
        )

    assert without_seconds(first) == without_seconds(again)
    assert set(first["arms"]) == {"model", "scratch"} and first["seeds"] == [0, 1] and first["epochs"] == 2
    for arm in first["arms"].values():
        assert len(arm["runs"]) == 2 and all(len(r["curve"]) == 2 == len(r["loss"]) for r in arm["runs"])
    by_seed = [m["top1"] - s["top1"] for m, s in zip(first["arms"]["model"]["runs"], first["arms"]["scratch"]["runs"])]
    assert first["gain"]["scratch"]["by_seed"] == by_seed
    assert first["top1"] == pytest.approx(sum(r["top1"] for r in first["arms"]["model"]["runs"]) / 2)
    assert (tmp_path / "a" / "finetune.png").is_file()


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "resnet18"])
def test_every_family_fine_tunes(tmp_path, name):
    swin = {"embed_dim": 24, "num_heads": [1, 2, 2, 4], "depths": [1, 1, 2, 1]}
    model = load_backbone(name, 64, model_kwargs=swin if "swin" in name else None)
    options = EvalOptions(finetune_epochs=1, finetune_batch_size=8, progress=False)
    before = [p.clone() for p in model.parameters()]
    result = finetune(model, _data(augment=True, size=64), options, seed=0)
    assert 0 <= result["top1"] <= 1 and len(result["loss"]) == 1
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))  # the evaluated model is left as it was


def test_a_student_of_a_run_of_several_and_a_weight_file_baseline(tmp_path, capsys):
    from leapkd.training import distill

    run = distill(
        name="two",
        teacher="vit-nano",
        allow_random_teacher=True,
        student="vit-nano,resnet18",
        image_size=32,
        subset_per_class=2,
        batch_size=8,
        max_steps=2,
        precision="32",
        progress=False,
        output_dir=str(tmp_path / "runs"),
    ).run_dir
    weights = run / "students" / "resnet18" / "student.safetensors"
    code = main(
        [
            "eval",
            str(run),
            "--student",
            "resnet18",
            "--protocols",
            "finetune",
            "--finetune_epochs",
            "1",
            "--finetune_batch_size",
            "8",
            "--finetune_baselines",
            f"scratch,{weights}",
            "--train_per_class",
            "2",
            "--val_per_class",
            "2",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fine-tune gain over scratch" in out and "fine-tune gain over student.safetensors" in out
    book = json.loads((run / "students" / "resnet18" / "eval.json").read_text())
    result = book["fashion-mnist"]["finetune"]
    assert set(result["arms"]) == {"model", "scratch", str(weights)}
    # the student from its own file is the student: the same fine-tune, to the bit
    assert result["arms"][str(weights)]["runs"][0]["loss"] == result["arms"]["model"]["runs"][0]["loss"]


def test_a_baseline_that_is_no_file_is_refused(tmp_path, capsys):
    code = main(
        [
            "eval",
            "vit-nano",
            "--protocols",
            "finetune",
            "--finetune_baselines",
            "nothing.pth",
            "--out_dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "error:" in err and "fix:" in err and "nothing.pth" in err
    assert not (tmp_path / "eval.json").exists()


def test_report_and_model_card_show_the_fine_tune_beside_the_frozen_protocols(tmp_path):
    from leapkd.deploy import export
    from leapkd.report import write_report
    from leapkd.training import distill

    run = distill(
        name="r", teacher="vit-nano", allow_random_teacher=True, student="vit-nano", image_size=32,
        subset_per_class=2, batch_size=4, epochs=1, method="fixed", output_dir=str(tmp_path / "runs"), progress=False,
    ).run_dir  # fmt: skip
    r = evaluate(
        str(run), protocols=["knn", "finetune"], finetune_epochs=1, finetune_batch_size=8, seeds=[0, 1],
        train_per_class=2, val_per_class=2, progress=False,
    )  # fmt: skip
    tuned, gain = r["finetune"], r["finetune"]["gain"]["scratch"]
    tuned_cell = f"{100 * tuned['top1']:.2f}% ± {100 * tuned['top1_std']:.2f}"
    gain_cell = f"{100 * gain['top1']:+.2f} points"
    knn_label = KnnProtocol().rows(r["knn"])[0][0]

    md = write_report(run)[1].read_text()
    assert f"| fine-tune top-1 (1 epoch, mean of 2 seeds) | {tuned_cell} |" in md
    assert f"| fine-tune gain over scratch | {gain_cell}" in md and f"| {knn_label} |" in md
    assert "Fine-tuned whole" in md and "finetune.png" in md

    card = Path(export(run, "safetensors", out_dir=tmp_path / "export")["card"]).read_text()
    header = next(line for line in card.splitlines() if line.startswith("| dataset |"))
    assert knn_label in header and "fine-tune top-1 (1 epoch, mean of 2 seeds)" in header
    assert "fine-tune gain over scratch" in header
    row = next(line for line in card.splitlines() if line.startswith("| fashion-mnist |"))
    assert tuned_cell in row and gain_cell in row
