from pathlib import Path

import pytest

TINY = dict(
    teacher="vit-nano",
    allow_random_teacher=True,
    student="vit-nano",
    image_size=64,
    data="fashion-mnist",
    subset_per_class=4,
    batch_size=8,
    epochs=3,
    warmup_steps=2,
    progress=False,
)


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """Settings of a seconds-long run: 6-block nano teacher and student, 40 images, 5 steps an epoch."""
    return dict(TINY, output_dir=str(tmp_path / "runs"))
