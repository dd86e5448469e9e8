"""Helpers for the data tests: tiny image folders built with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save_grey(path: Path, value: int = 128, size: int = 8) -> Path:
    """Write a small uniform greyscale PNG/JPEG (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)
    return path


@pytest.fixture(name="save_grey")
def save_grey_fixture():  # noqa: ANN201
    """The `save_grey` helper, as a fixture."""
    return save_grey


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,ant,bee}/ with 3 train and 1 val image per class."""
    root = tmp_path / "tiny"
    for split, n in (("train", 3), ("val", 1)):
        for ci, name in enumerate(("cat", "ant", "bee")):
            for i in range(n):
                save_grey(root / split / name / f"{i}.png", value=40 * ci + i)
    return root
