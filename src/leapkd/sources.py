"""What `leapkd eval` and `leapkd spectrum` accept as a model (a source): a run, a student file, or any
source `load_backbone` accepts (a model name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leapkd.config import read_common_config
from leapkd.errors import LeapkdError
from leapkd.models import Backbone, load_backbone, load_student_file
from leapkd.rundir import RunDirectory


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "student.safetensors").is_file()


def load_source(
    source: str,
    image_size: int | None,
    seed: int = 0,
    patch_size: int | None = None,
    weights: str | Path | None = None,
) -> tuple[Backbone, RunDirectory | None, dict[str, Any]]:
    """The backbone to evaluate, its run directory (if any), and defaults taken from the run.

    `weights` is a weight file for a model name (safetensors, .pth, .bin; timm, hub or HF
    layout). A model name without weights is built with random weights drawn after seeding
    with `seed`, so it is the same model every time.
    """
    path = Path(source)
    if weights is not None and (_is_run(path) or path.suffix == ".safetensors"):
        raise LeapkdError(
            f"`weights` applies to a model name, but {source} already carries its weights",
            "drop `weights`, or give a model name (e.g. vit_small_patch14_dinov2) with `weights` FILE",
        )
    if _is_run(path):
        cfg = read_common_config(path / "config.yaml")
        run = RunDirectory(path)
        size = image_size or cfg.image_size
        model = load_student_file(run.student, size)
        defaults = {
            "data": cfg.eval_data or cfg.data,
            "image_size": size,
            "reference": cfg.teacher,
            "reference_weights": cfg.teacher_weights,
            "name": path.name,
        }
        return model, run, defaults
    if path.suffix == ".safetensors" and path.is_file():
        model = load_student_file(path, image_size)
        return model, None, {"image_size": model.image_size, "name": path.stem}
    if path.exists() and not path.is_dir():
        raise LeapkdError(f"{path} is neither a run directory nor a leapkd student file", "pass a run directory")
    size = image_size or 112
    torch.manual_seed(seed)
    model = load_backbone(source, size, weights=weights, patch_size=patch_size)
    return model, None, {"image_size": size, "name": Path(source).name}
