"""The LEAP reference's linear probe (`--protocols linear-reference`), as its eval script trains it.

One `nn.Linear` on the raw frozen features (no standardisation), initialised at zero,
trained with SGD (lr 0.1, momentum 0.9, no weight decay) on shuffled batches of 256 for
100 epochs, the LR following a cosine over the epochs (stepped once per epoch). The
validation split is scored after every epoch. The reference reports its best epoch; leapkd
reports the last epoch as the figure and the best epoch beside it, labelled as such (the
best epoch is chosen on the validation split itself, so it is optimistic). Unless told
otherwise, `evaluate` then reads the reference's data: every image of both splits, resized
to S * 256 / 224 (bicubic) and centre-cropped.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapkd.eval.protocol import EvalContext, Protocol, accuracy_rows, percent, register_protocol
from leapkd.metrics import top_accuracy


def reference_linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    val_feats: Tensor,
    val_labels: Tensor,
    num_classes: int | None = None,
    epochs: int = 100,
    lr: float = 0.1,
    momentum: float = 0.9,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """{"top1", "top5"?: the last epoch's; "best_top1", "best_top5"?, "best_epoch": the epoch with
    the highest validation top-1 (the first one on ties); "epochs"}; accuracies in [0, 1]."""
    x, y = train_feats.detach().float().cpu(), train_labels.detach().long().cpu()
    vx, vy = val_feats.detach().float().cpu(), val_labels.detach().long().cpu()
    classes = num_classes if num_classes is not None else int(max(y.max(), vy.max())) + 1
    layer = nn.Linear(x.shape[1], classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=momentum, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    best: dict[str, Any] = {}
    last: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
        with torch.no_grad():
            last = top_accuracy(layer(vx), vy)
        if not best or last["top1"] > best["best_top1"]:
            best = {f"best_{k}": v for k, v in last.items()} | {"best_epoch": epoch}
    return {**last, **best, "epochs": epochs}


@register_protocol("linear-reference")
class ReferenceLinearProbeProtocol(Protocol):
    """The LEAP reference's linear probe: raw features, zero init, SGD 0.1, 100 epochs, cosine."""

    preferred: ClassVar[dict[str, Any]] = {"train_per_class": "all", "val_per_class": "all", "transform": "center-crop"}

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        return reference_linear_probe(*ctx.train_and_val(), seed=ctx.seed)

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        rows = accuracy_rows("reference linear probe", result, " (last epoch)")
        rows.append(
            (
                f"reference linear probe top-1 (best epoch, {result['best_epoch']} of {result['epochs']}; "
                "chosen on val)",
                percent(result["best_top1"]),
            )
        )
        return rows
