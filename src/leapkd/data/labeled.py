"""`LabeledImages`: the shape of every dataset leapkd trains on, evaluates or analyses."""

from __future__ import annotations

from typing import Any, Protocol


class LabeledImages(Protocol):
    """Indexable (image, label) items with the class names and every item's label.

    `build_dataset` returns one; any object with these members works in its place.
    """

    classes: list[str]
    targets: list[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...
