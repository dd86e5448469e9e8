"""One linear layer on frozen features, trained by SGD with closed-form gradients.

Shared by the linear probe (`leapkd eval`) and the teacher head of `leapkd distill`.
Features are standardised with the mean and std of the samples the layer is trained on;
the initial weights and the batch order come from a seeded CPU generator, so results are
the same on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LinearModel = tuple[Tensor, Tensor, Tensor, Tensor]  # weights (L, D, C), biases (L, C), mean (D,), std (D,)


def train_linear(
    x: Tensor, y: Tensor, classes: int, lrs: Tensor, epochs: int, batch_size: int, seed: int
) -> LinearModel:
    """(weights (L, D, C), biases (L, C), mean, std), one linear layer per lr, trained at once.

    Minibatch SGD on the softmax cross-entropy, momentum 0.9, no weight decay, lr decayed per
    step by a cosine to 0 (as torch's SGD + CosineAnnealingLR); gradients are computed in
    closed form, which is much faster than autograd for a single layer.
    """
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    device = x.device
    lrs = lrs.to(device)
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp(min=1e-6)
    x = (x - mean) / std
    n, dim = x.shape
    weight = (torch.randn(dim, classes, generator=gen) * 0.01).to(device).expand(len(lrs), dim, classes).clone()
    bias = torch.zeros(len(lrs), classes, device=device)
    mom_w, mom_b = torch.zeros_like(weight), torch.zeros_like(bias)
    onehot = F.one_hot(y, classes).float()
    batch_size = min(batch_size, n)
    total, step = epochs * math.ceil(n / batch_size), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            grad = ((xb @ weight + bias[:, None]).softmax(dim=-1) - onehot[idx]) / len(idx)  # (L, B, C)
            mom_w.mul_(0.9).add_(xb.T @ grad)
            mom_b.mul_(0.9).add_(grad.sum(dim=1))
            lr = (lrs * (0.5 * (1 + math.cos(math.pi * step / total))))[:, None]
            weight.sub_(lr[:, :, None] * mom_w)
            bias.sub_(lr * mom_b)
            step += 1
    return weight, bias, mean, std


def linear_logits(model: LinearModel, x: Tensor) -> Tensor:
    """Logits (L, M, C) of every layer of `model` on raw features `x` (M, D)."""
    weight, bias, mean, std = model
    return ((x - mean) / std) @ weight + bias[:, None]


def fit_linear_head(
    feats: Tensor, labels: Tensor, num_classes: int, lr: float = 0.1, epochs: int = 100, seed: int = 0
) -> torch.nn.Linear:
    """A linear classifier on frozen features, as one `nn.Linear` on the raw features.

    Trained like the probe (standardised features, SGD with momentum, cosine schedule) on
    the features' device; the standardisation is folded into the layer's weights, so it
    applies to raw features.
    """
    x, y = feats.detach().float(), labels.detach().long().to(feats.device)
    weight, bias, mean, std = train_linear(x, y, num_classes, torch.tensor([lr]), epochs, 256, seed)
    w = weight[0] / std[:, None]  # (D, C)
    layer = torch.nn.Linear(x.shape[1], num_classes, device=x.device)
    with torch.no_grad():
        layer.weight.copy_(w.T)
        layer.bias.copy_(bias[0] - mean @ w)
    return layer
