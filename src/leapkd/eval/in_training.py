"""Scoring the student while it trains (`eval_every`): kNN, on request the linear probe, and the
top-1 / top-5 of the student's own classification head when the method trains one.

The images are fixed and un-augmented (`transform`: "resize", or the reference's bicubic
"center-crop"): `images_per_class` seeded images of each class of the labelled data's
`train` split (the kNN bank, the probe's training set; not read when no protocol needs it)
and as many of its `val` split (the queries), or every image of them (None). Small sets are
decoded once and kept in memory, so an evaluation costs two forward passes of the student
and the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from leapkd.data import LabeledImages, LabeledSubset, build_dataset, subset_indices
from leapkd.data.transforms import EvalTransform
from leapkd.errors import LeapkdError
from leapkd.eval.knn import knn_accuracy
from leapkd.eval.linear import linear_probe
from leapkd.feature_cache import extract_features
from leapkd.metrics import top_accuracy
from leapkd.models import Backbone

IN_MEMORY_BYTES = 512 * 2**20  # decoded evaluation images up to this size are kept in memory


class StudentScorer:
    """`scorer(student, autocast_dtype)` -> {"knn_top1": ..., "knn_top5": ..., "linear_top1": ...}.

    Built before training (so bad evaluation data fails before the run starts); the model
    runs on its own device, under autocast when a dtype is given.
    """

    def __init__(
        self,
        data: str,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        images_per_class: int | None,
        protocols: Sequence[str] = ("knn",),
        seed: int = 0,
        data_root: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        k: int = 20,
        in_memory_bytes: int = IN_MEMORY_BYTES,
        classifier: bool = False,
        transform: EvalTransform = "resize",
    ) -> None:
        self.protocols, self.batch_size, self.num_workers, self.k = tuple(protocols), batch_size, num_workers, k
        self.classifier = classifier  # the student has a head: its top-1 / top-5 are figures too
        splits: dict[str, Dataset] = {}
        for split in ("train", "val") if self.protocols else ("val",):
            images = build_dataset(
                data, split, image_size, augment=False, mean=mean, std=std, root=data_root, eval_transform=transform
            )
            if not images.classes:
                raise LeapkdError(
                    f"evaluation during training needs class labels, and {data} has none",
                    "give a labelled set with `eval_data` (a built-in name or a folder with train/ and val/)",
                )
            chosen = (
                images
                if images_per_class is None
                else LabeledSubset(images, subset_indices(images.targets, images_per_class, seed))
            )
            splits[split] = _in_memory(chosen, in_memory_bytes)
        self.bank, self.queries = splits.get("train"), splits["val"]
        self.num_classes = len(images.classes)

    @property
    def figures(self) -> list[str]:
        """The names of the figures each call returns, in order."""
        tops = ["top1", "top5"] if self.num_classes >= 5 else ["top1"]
        sources = [*self.protocols, *(["student"] if self.classifier else [])]
        return [f"{source}_{top}" for source in sources for top in tops]

    def __call__(
        self, student: Backbone, autocast_dtype: torch.dtype | None = None, classifier: nn.Module | None = None
    ) -> dict[str, float]:
        """The figures of `student` (and of its `classifier` on the queries' pooled features)."""
        queries, query_labels = self._features(student, self.queries, autocast_dtype)
        figures: dict[str, float] = {}
        if classifier is not None:
            figures |= {f"student_{top}": v for top, v in _classified(classifier, queries, query_labels).items()}
        if self.bank is None:
            return figures
        bank, bank_labels = self._features(student, self.bank, autocast_dtype)
        if "knn" in self.protocols:
            knn = knn_accuracy(bank, bank_labels, queries, query_labels, k=self.k, num_classes=self.num_classes)
            figures |= {f"knn_{top}": value for top, value in knn.items()}
        if "linear" in self.protocols:
            probe = linear_probe(bank, bank_labels, queries, query_labels, num_classes=self.num_classes)
            figures |= {f"linear_{top}": probe[top] for top in ("top1", "top5") if top in probe}
        return figures

    def classify(
        self, student: Backbone, classifier: nn.Module, autocast_dtype: torch.dtype | None = None
    ) -> dict[str, float]:
        """{"top1", "top5"?} of the student's own head on the validation images."""
        queries, query_labels = self._features(student, self.queries, autocast_dtype)
        return _classified(classifier, queries, query_labels)

    def _features(
        self, student: Backbone, images: Dataset, dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        workers = 0 if isinstance(images, TensorDataset) else self.num_workers
        return extract_features(
            student,
            images,
            "cls",
            batch_size=self.batch_size,
            progress=False,
            autocast_dtype=dtype,
            num_workers=workers,
        )


def _classified(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    parameter = next(classifier.parameters())
    with torch.no_grad():
        logits = classifier(features.to(parameter.device, parameter.dtype)).float().cpu()
    return top_accuracy(logits, labels)


def _in_memory(images: LabeledImages, limit: int) -> Dataset:
    """The decoded images as one tensor dataset when they take at most `limit` bytes, else `images`."""
    if len(images) == 0:
        return cast(Dataset, images)
    first, _ = images[0]
    if len(images) * first.numel() * first.element_size() > limit:
        return cast(Dataset, images)
    pairs = [images[i] for i in range(len(images))]
    return TensorDataset(torch.stack([x for x, _ in pairs]), torch.tensor([int(y) for _, y in pairs]))
