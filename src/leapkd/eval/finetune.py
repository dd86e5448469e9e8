"""Fine-tuning as an evaluation (`--protocols finetune`): does the model help a task once it is trained whole?

The whole model plus a new linear head is trained on the labelled train split and scored on
the validation split after every epoch. Beside it, with the identical recipe and data order,
each baseline of `finetune_baselines`: the same architecture at random init ("scratch") and
the same architecture from other weight files (an ImageNet checkpoint, say). Every arm is
fine-tuned once per seed of `seeds`; the result is each arm's mean and spread, and the gain
of the model over each baseline.

The recipe (the `finetune_*` keys of `leapkd eval`): AdamW; the LR warms up linearly over a
fraction of the steps, then follows a cosine to 0, per step; token models (ViT, Swin) get
layer-wise LR decay as BEiT fine-tunes them (timm's `param_groups_layer_decay`: the head, the
final norm and the last block at the peak LR, each block below one factor lower, the
embedding one factor below the first block); no weight decay on norms,
biases and what the model's `no_weight_decay()` names; cross-entropy with label smoothing;
the default training augmentation (a resized crop of 50-100% of the image and a flip); the
head (trunc-normal 0.02, bias 0) on the pooled feature of the evaluated level (`pooling`);
the run's device and autocast (`precision`), with a gradient scaler under fp16.

Each fine-tune seeds torch with its seed after its model is built and before the head is
drawn, and draws its batch order from a generator seeded alike: every arm sees the same
images in the same order with the same augmentations, and on the CPU a seed gives the same
figures every time.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from leapkd.data import LabeledImages
from leapkd.engine.optimizers import no_decay_names, weight_decay_groups
from leapkd.errors import LeapkdError
from leapkd.eval.protocol import EvalContext, EvalOptions, Protocol, percent, register_protocol
from leapkd.metrics import top_accuracy
from leapkd.models import Backbone, load_backbone
from leapkd.plots import plot_finetune
from leapkd.schedule import WarmupCosine

SCRATCH = "scratch"  # the baseline built at random init
VAL_BATCH = 256


@dataclass(frozen=True)
class FinetuneData:
    """What every fine-tune of one call trains and scores on."""

    train: LabeledImages  # augmented
    val: LabeledImages
    classes: int


def finetune(model: Backbone, data: FinetuneData, options: EvalOptions, seed: int, desc: str = "fine-tune") -> dict:
    """Fine-tune a copy of `model` (left as it is) with a new head by the recipe of `options`
    (see the module docstring), on the model's device.

    Returns {"top1", "top5"?: the last epoch's on the validation split, "curve": validation
    top-1 after each epoch, "loss": mean training loss of each epoch, "seconds"}.
    """
    device = next(model.parameters()).device
    net = copy.deepcopy(model).train().requires_grad_(True)
    level = options.level or net.num_levels
    torch.manual_seed(seed)
    head = nn.Linear(net.levels[level - 1].width, data.classes, device=device)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    batches = train_loader(data.train, options, seed)
    total = options.finetune_epochs * len(batches)
    optimizer = torch.optim.AdamW(parameter_groups(net, head, options), lr=options.finetune_lr)
    schedule = WarmupCosine(optimizer, total, round(options.finetune_warmup * total))
    scaler = torch.amp.GradScaler(device.type, enabled=options.autocast == torch.float16)
    curve: list[float] = []
    losses: list[float] = []
    scores: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not options.progress, leave=False)
    for _ in range(options.finetune_epochs):
        summed = torch.zeros((), device=device)
        for images, labels in batches:
            with _autocast(device, options):
                logits = head(net.embedding(images.to(device), level, options.pooling))
            loss = F.cross_entropy(logits.float(), labels.to(device), label_smoothing=options.finetune_label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            summed += loss.detach()
            bar.update()
        losses.append(summed.item() / len(batches))
        scores = score(net, head, data.val, options, level)
        curve.append(scores["top1"])
    bar.close()
    return {**scores, "curve": curve, "loss": losses, "seconds": time.perf_counter() - start}


def train_loader(train: LabeledImages, options: EvalOptions, seed: int) -> DataLoader:
    """Shuffled batches of `train`, in an order drawn from `seed` alone (the same for every arm);
    the last partial batch is dropped when there is more than one (batch-norm needs > 1 image)."""
    size = options.finetune_batch_size
    order = RandomSampler(train, generator=torch.Generator().manual_seed(seed))
    workers = options.num_workers
    return DataLoader(
        cast(Dataset, train),  # any map-style dataset; DataLoader is typed for Dataset subclasses
        batch_size=size,
        sampler=order,
        drop_last=len(train) > size,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # the loader processes' seeds
    )


def parameter_groups(net: Backbone, head: nn.Linear, options: EvalOptions) -> list[dict[str, Any]]:
    """AdamW groups, each at its own peak LR: a token model's layer-wise decayed (timm's
    `param_groups_layer_decay` over the model's own `group_matcher`), a CNN's all at the peak,
    the head at the peak; weight decay as `leapkd distill` applies it."""
    wd, lr = options.finetune_weight_decay, options.finetune_lr
    if net.patch_size is not None and options.finetune_layer_decay < 1:
        groups = param_groups_layer_decay(
            net.model,
            wd,
            no_weight_decay_list=no_decay_names(net.model),
            layer_decay=options.finetune_layer_decay,
        )
        inside = {id(p) for p in net.model.parameters()}
        rest = [p for p in net.parameters() if id(p) not in inside]
        if rest:  # a wrapper's own parameters, at the peak
            groups.append({"params": rest, "weight_decay": wd})
    else:
        groups = weight_decay_groups((net,), wd)
    groups += weight_decay_groups((head,), wd)
    return [{**g, "lr": lr * g.pop("lr_scale", 1.0)} for g in groups if g["params"]]


@torch.no_grad()
def score(net: Backbone, head: nn.Linear, val: LabeledImages, options: EvalOptions, level: int) -> dict[str, float]:
    """Top-1 (and top-5) of `head` on `net`'s level `level` over the validation split; `net` is
    left in training mode."""
    device = next(net.parameters()).device
    net.eval()
    logits, labels = [], []
    for images, y in DataLoader(cast(Dataset, val), batch_size=VAL_BATCH, num_workers=options.num_workers):
        with _autocast(device, options):
            logits.append(head(net.embedding(images.to(device), level, options.pooling)).float().cpu())
        labels.append(y)
    net.train()
    return top_accuracy(torch.cat(logits), torch.cat(labels))


def _autocast(device: torch.device, options: EvalOptions) -> Any:
    return torch.autocast(device.type, dtype=options.autocast) if options.autocast is not None else nullcontext()


def baseline_model(model: Backbone, baseline: str, seed: int) -> Backbone:
    """`model`'s architecture at random init drawn from `seed` ("scratch"), or from a weight file,
    on `model`'s device."""
    torch.manual_seed(seed)
    build = model.build
    twin = load_backbone(
        model.name,
        model.image_size,
        weights=None if baseline == SCRATCH else baseline,
        patch_size=build.get("patch_size"),
        model_kwargs=build.get("model_kwargs"),
        random_init=baseline == SCRATCH,
    )
    return twin.to(next(model.parameters()).device)


def check_baselines(baselines: list[str]) -> None:
    """A LeapkdError for a baseline that is neither "scratch" nor an existing file."""
    for b in baselines:
        if b != SCRATCH and not Path(b).is_file():
            raise LeapkdError(
                f"finetune baseline '{b}' is neither {SCRATCH} nor a weight file",
                f"give `finetune_baselines` {SCRATCH} and/or paths of weight files of the same architecture",
            )


def summarise(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One arm over its seeds: the mean top-1 (and top-5), their sample spread, the mean curve, the runs."""
    top1 = [r["top1"] for r in runs]
    out: dict[str, Any] = {"top1": statistics.fmean(top1), "top1_std": _spread(top1)}
    if all("top5" in r for r in runs):
        out["top5"] = statistics.fmean(r["top5"] for r in runs)
    out["curve"] = [statistics.fmean(epoch) for epoch in zip(*(r["curve"] for r in runs))]
    out["runs"] = [{"seed": s, **r} for s, r in zip(seeds, runs)]
    return out


def _spread(values: list[float]) -> float | None:
    """The sample standard deviation (None with one value)."""
    return statistics.stdev(values) if len(values) > 1 else None


def gains(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The model's top-1 minus each baseline's: the mean, and per seed (same seed, same data order)."""
    model = [r["top1"] for r in arms["model"]["runs"]]
    out = {}
    for name, arm in arms.items():
        if name != "model":
            by_seed = [m - r["top1"] for m, r in zip(model, arm["runs"])]
            out[name] = {"top1": statistics.fmean(by_seed), "top1_std": _spread(by_seed), "by_seed": by_seed}
    return out


@register_protocol("finetune")
class FinetuneProtocol(Protocol):
    """The whole model fine-tuned with a new head, next to the same architecture from scratch."""

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        options = ctx.options
        check_baselines(options.finetune_baselines)
        train = ctx.dataset("train", options.train_per_class, augment=True)
        data = FinetuneData(train, ctx.dataset("val", options.val_per_class), len(train.classes))
        seeds = list(options.seeds or [ctx.seed])
        builders: dict[str, Callable[[int], Backbone]] = {"model": lambda seed: ctx.model}
        for b in options.finetune_baselines:
            builders[b] = lambda seed, b=b: baseline_model(ctx.model, b, seed)  # type: ignore[misc]
        arms = {}
        for name, build in builders.items():
            runs = [finetune(build(s), data, options, s, desc=f"fine-tune {name}, seed {s}") for s in seeds]
            arms[name] = summarise(runs, seeds)
        plot_finetune({name: arm["curve"] for name, arm in arms.items()}, ctx.output("finetune.png"))
        model = arms["model"]
        result = {"top1": model["top1"], "top1_std": model["top1_std"]}
        if "top5" in model:
            result["top5"] = model["top5"]
        return (
            result
            | {"epochs": options.finetune_epochs, "seeds": seeds, "recipe": recipe(options)}
            | {
                "arms": arms,
                "gain": gains(arms),
            }
        )

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        n, epochs = len(result["seeds"]), result["epochs"]
        detail = f"{epochs} epoch{'s' * (epochs > 1)}" + (f", mean of {n} seeds" if n > 1 else "")
        rows = [(f"fine-tune top-1 ({detail})", _with_spread(result["top1"], result["top1_std"]))]
        for name, gain in result["gain"].items():
            label = name if name == SCRATCH else Path(name).name
            arm = result["arms"][name]
            rows.append((f"fine-tune top-1, from {label}", _with_spread(arm["top1"], arm["top1_std"])))
            rows.append((f"fine-tune gain over {label}", _points(gain)))
        return rows


def recipe(options: EvalOptions) -> dict[str, Any]:
    """The fine-tune keys of the call, as recorded with its result."""
    return {k.removeprefix("finetune_"): v for k, v in options.model_dump().items() if k.startswith("finetune_")}


def _with_spread(mean: float, std: float | None) -> str:
    return percent(mean) + ("" if std is None else f" ± {100 * std:.2f}")


def _points(gain: dict[str, Any]) -> str:
    text = f"{100 * gain['top1']:+.2f} points"
    if len(gain["by_seed"]) > 1:
        low, high = min(gain["by_seed"]), max(gain["by_seed"])
        text += f" ({100 * low:+.2f} to {100 * high:+.2f} over seeds)"
    return text
