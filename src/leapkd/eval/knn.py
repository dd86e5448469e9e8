"""Weighted k-nearest-neighbour classification on frozen features (the DINO protocol).

Features are L2-normalised and compared by cosine similarity; each of the k nearest
training samples votes for its label with weight exp(similarity / temperature).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapkd.eval.protocol import EvalContext, Protocol, accuracy_rows, register_protocol
from leapkd.metrics import top_accuracy


def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    query_feats: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> Tensor:
    """Class scores (Q, C) for each query; `scores.argmax(1)` is the predicted label.

    `train_feats` (N, D), `train_labels` (N,) integers in 0..C-1, `query_feats` (Q, D).
    `num_classes` defaults to max(train_labels) + 1. Queries are processed `chunk` at a
    time so memory stays at O(chunk * N). k is capped at N.
    """
    if train_feats.ndim != 2 or query_feats.ndim != 2 or train_feats.shape[1] != query_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (Q, D), got {tuple(train_feats.shape)} and {tuple(query_feats.shape)}"
        )
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(f"train_labels must be ({train_feats.shape[0]},), got {tuple(train_labels.shape)}")
    if train_feats.shape[0] == 0:
        raise ValueError("kNN needs at least one training sample")
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ValueError(f"need k >= 1, temperature > 0, chunk >= 1 (got {k}, {temperature}, {chunk})")
    labels = train_labels.long().to(train_feats.device)
    classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, query_feats.shape[0], chunk):
        query = F.normalize(query_feats[start : start + chunk].float().to(train.device), dim=1)
        sims, idx = (query @ train.T).topk(k, dim=1)
        votes = torch.zeros(query.shape[0], classes, device=train.device)
        votes.scatter_add_(1, labels[idx], (sims / temperature).exp())
        scores.append(votes)
    if not scores:
        return torch.zeros(0, classes, device=train.device)
    return torch.cat(scores)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    query_feats: Tensor,
    query_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[str, float]:
    """kNN top-1 accuracy (and top-5 when there are at least 5 classes) on labelled queries."""
    if num_classes is None:
        num_classes = int(max(train_labels.max(), query_labels.max())) + 1
    if query_labels.shape != (query_feats.shape[0],) or query_labels.numel() == 0:
        raise ValueError(f"need one label per query and at least one query, got {tuple(query_labels.shape)}")
    return top_accuracy(
        knn_classify(train_feats, train_labels, query_feats, k, temperature, num_classes, chunk), query_labels
    )


@register_protocol("knn")
class KnnProtocol(Protocol):
    """kNN accuracy of the validation split against the training split (k = `--k`)."""

    headline = True

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        return {**knn_accuracy(*ctx.train_and_val(), k=ctx.options.k), "k": ctx.options.k}

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        return accuracy_rows("kNN", result, f" (k={result['k']})" if "k" in result else "")
