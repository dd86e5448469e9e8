"""Evaluation protocols as plug-ins: the `Protocol` base class, its registry, and `EvalContext`.

A protocol is one registered class; `leapkd eval --protocols NAME` runs it, its results are
stored under its `key` in eval.json and summary.json, and the CLI table, the report and the
model card show its `rows`:

    @register_protocol("feature-norm")
    class FeatureNorm(Protocol):
        def run(self, ctx: EvalContext) -> dict:
            feats, _ = ctx.features("val", ctx.options.val_per_class)
            return {"mean": feats.norm(dim=1).mean().item()}

        def rows(self, result: dict) -> list[tuple[str, str]]:
            return [("mean feature norm", f"{result['mean']:.3f}")]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict
from torch import Tensor

from leapkd.data import LabeledImages, build_dataset
from leapkd.data.transforms import EvalTransform
from leapkd.eval.options import EvalArgs
from leapkd.feature_cache import extract_levels
from leapkd.models import Backbone
from leapkd.plugins import Registry

Split = Literal["train", "val"]


class EvalOptions(EvalArgs):
    """The options of one `evaluate` call, resolved; each protocol reads the ones it uses.

    Every key of `EvalArgs` (a new option is one field there), with what `evaluate` settled:
    the transform and per-class counts a protocol prefers, the data workers, the autocast
    dtype, and the level this context evaluates."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    transform: EvalTransform = "resize"  # or "center-crop" (resize to S * 256 / 224, bicubic; centre crop)
    train_per_class: int | None = 100  # None: all
    val_per_class: int | None = 50
    num_workers: int = 0  # data loader processes of the feature extraction
    level: int | None = None  # the level this context evaluates (None: the last)
    blocks: tuple[int, ...] = ()  # every level of the call, extracted in one pass
    autocast: torch.dtype | None = None  # the feature extraction's autocast dtype


@dataclass
class EvalContext:
    """What a protocol gets: the model, the data, the options, and features shared by all protocols.

    `defaults` are the target's defaults ("name"; for a run also "data", "reference" and
    "reference_weights"). `labelled` is False for data without class labels (revisited
    Oxford/Paris), where only protocols with `labels = False` run.
    """

    model: Backbone
    data: str
    image_size: int
    seed: int
    options: EvalOptions
    out_dir: Path
    defaults: dict[str, Any]
    labelled: bool = True
    _features: dict[tuple[Split, int | None], tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def device(self) -> torch.device:
        """The device the evaluation runs on: the model's (`evaluate` moves it there)."""
        return next(self.model.parameters()).device

    def output(self, name: str) -> Path:
        """The path of a file a protocol writes into the output directory (created on demand)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def dataset(self, split: Split, per_class: int | None, augment: bool = False) -> LabeledImages:
        """`split` of the data, normalised for the model, `per_class` seeded images per class;
        `augment`: with the default random training transform (a resized crop and a flip)."""
        return build_dataset(
            self.data,
            split=split,
            image_size=self.image_size,
            augment=augment,
            mean=self.model.mean,
            std=self.model.std,
            subset_per_class=per_class,
            seed=self.seed,
            eval_transform=self.options.transform,
        )

    def train_and_val(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(train features, train labels, val features, val labels) at the call's per-class sizes."""
        return (
            *self.features("train", self.options.train_per_class),
            *self.features("val", self.options.val_per_class),
        )

    def features(self, split: Split, per_class: int | None) -> tuple[Tensor, Tensor]:
        """(features (N, D), labels (N,)) of `dataset(split, per_class)`; do not modify them in place.

        Extracted once per call (then shared by every protocol) through the on-disk feature cache.
        """
        if (split, per_class) not in self._features:
            key = {
                "data": self.data,
                "split": split,
                "per_class": per_class,
                "seed": self.seed,
                "size": self.image_size,
                "mean": self.model.mean,
                "std": self.model.std,
            }
            if self.options.transform != "resize":  # the default stays out of the key: earlier caches hold
                key["transform"] = self.options.transform
            level = self.options.level or self.model.num_levels
            found = extract_levels(
                self.model,
                self.dataset(split, per_class),
                sorted({level, *self.options.blocks}),  # the call's other levels from the same pass
                self.options.pooling,
                cache_key=key,
                progress=self.options.progress,
                desc=f"{split} features",
                autocast_dtype=self.options.autocast,
                num_workers=self.options.num_workers,
                devices=self.options.devices,
            )
            self._features[split, per_class] = found[level]
        return self._features[split, per_class]


class Protocol(ABC):
    """An evaluation of a frozen backbone; subclass it and register it with `@register_protocol(name)`."""

    name: ClassVar[str]  # set by the decorator, e.g. "cka-map"
    labels: ClassVar[bool] = True  # needs a labelled dataset (revisited Oxford/Paris has none)
    headline: ClassVar[bool] = False  # its first row is a headline figure of the report
    # `evaluate` options (train_per_class, val_per_class, transform) this protocol's reference uses,
    # taken when the user leaves them unset
    preferred: ClassVar[dict[str, Any]] = {}

    @property
    def key(self) -> str:
        """Where the results go in eval.json and summary.json: the name with '-' -> '_' (a subclass may set it)."""
        return self.name.replace("-", "_")

    @abstractmethod
    def run(self, ctx: EvalContext) -> dict[str, Any]:
        """The results (JSON-able) of this protocol on `ctx`."""

    @abstractmethod
    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        """(label, value) rows that show `result` in the CLI table, the report and the model card."""


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol")
register_protocol = PROTOCOLS.register


def evaluated(entry: Mapping[str, Any]) -> list[tuple[Protocol, dict[str, Any]]]:
    """(protocol, its result) for each registered protocol's results in `entry` (one dataset's), in entry order."""
    by_key = {p.key: p for p in (cls() for cls in PROTOCOLS)}
    return [(by_key[key], result) for key, result in entry.items() if key in by_key]


def accuracy_rows(label: str, result: dict[str, Any], detail: str = "") -> list[tuple[str, str]]:
    """Rows for a {"top1", "top5"?} result: "<label> top-1<detail>" and "<label> top-5"."""
    rows = [(f"{label} top-1{detail}", percent(result["top1"]))]
    if "top5" in result:
        rows.append((f"{label} top-5", percent(result["top5"])))
    return rows


def percent(x: float | None) -> str:
    """A fraction as a percentage for `rows` ("n/a" for None)."""
    return "n/a" if x is None else f"{100 * x:.2f}%"
