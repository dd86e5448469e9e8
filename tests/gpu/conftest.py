"""Tests that need a CUDA device: marked `gpu`, skipped where torch sees none.

Run them on a GPU machine with `python -m pytest -m gpu tests` (bench/gpu.py does, first).
"""

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture
def tiny_cuda(tiny: dict) -> dict:
    """`tiny` on the GPU, in the precision each test asks for (`auto` unless told)."""
    settings = {**tiny, "accelerator": "cuda"}
    del settings["precision"]
    return settings
