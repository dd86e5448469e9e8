import math

import pytest
import torch

from leapkd.eval import knn_accuracy, knn_classify


def _clusters(per_class: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 10
    labels = torch.arange(classes).repeat_interleave(per_class)
    feats = centres[labels] + torch.randn(len(labels), dim, generator=gen)
    return feats, labels


def test_separable_clusters_are_classified_perfectly() -> None:
    train, train_y = _clusters(30, 6, 16, seed=0)
    query, query_y = _clusters(10, 6, 16, seed=1)
    acc = knn_accuracy(train, train_y, query, query_y, k=20, chunk=7)
    assert acc == {"top1": 1.0, "top5": 1.0}


def test_top5_only_with_five_classes_or_more() -> None:
    train, train_y = _clusters(10, 3, 8, seed=0)
    assert set(knn_accuracy(train, train_y, train, train_y, k=5)) == {"top1"}


def test_weighted_vote_by_hand() -> None:
    # Query [1, 0]; neighbours: [1, 0] (class 0, sim 1), [1, 1] (class 1, sim 1/sqrt 2),
    # [0, 3] (class 1, sim 0). Features are normalised, so the scale of [0, 3] is irrelevant.
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])
    s = 1 / math.sqrt(2)

    scores = knn_classify(train, labels, query, k=3, temperature=1.0)
    assert torch.allclose(scores, torch.tensor([[math.e, math.exp(s) + 1.0]]))
    assert scores.argmax(1).item() == 1  # two weaker votes outweigh the nearest neighbour

    scores = knn_classify(train, labels, query, k=2, temperature=1.0)
    assert torch.allclose(scores, torch.tensor([[math.e, math.exp(s)]]))
    assert scores.argmax(1).item() == 0

    # A low temperature sharpens the weights: the nearest neighbour wins again at k=3.
    scores = knn_classify(train, labels, query, k=3, temperature=0.07)
    assert scores.argmax(1).item() == 0
    assert scores[0, 0] / scores[0, 1] == pytest.approx(math.exp((1 - s) / 0.07), rel=1e-3)


def test_chunking_and_num_classes() -> None:
    train, train_y = _clusters(20, 4, 8, seed=2)
    query, _ = _clusters(9, 4, 8, seed=3)
    whole = knn_classify(train, train_y, query, k=50, num_classes=6)  # k capped at N = 80
    assert whole.shape == (36, 6)
    assert torch.all(whole[:, 4:] == 0)
    assert torch.allclose(knn_classify(train, train_y, query, k=50, num_classes=6, chunk=5), whole)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        knn_classify(torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 5))
    with pytest.raises(ValueError):
        knn_classify(torch.zeros(4, 3), torch.zeros(3), torch.zeros(2, 3))
