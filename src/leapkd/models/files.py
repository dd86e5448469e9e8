"""Student files: the backbone's weights as safetensors, with the metadata that rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from leapkd.disk import write_bytes_atomic
from leapkd.errors import LeapkdError
from leapkd.models.contract import Backbone
from leapkd.models.registry import load_backbone


def save_student_file(backbone: Backbone, path: str | Path, **metadata: Any) -> Path:
    """Write the backbone's weights (the wrapped model's keys, timm's for timm models) with
    the "leapkd" metadata `load_student_file` rebuilds it from; extra `metadata` values are
    stored as given when they are text, else as JSON."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    meta = {
        "leapkd": json.dumps(backbone.describe()),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    }
    write_bytes_atomic(Path(path), save(state, metadata=meta))
    return Path(path)


def read_student_metadata(path: str | Path) -> dict[str, Any]:
    """The "leapkd" metadata of a student file (name, family, image size, how it was built)."""
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get("leapkd")
    if meta is None:
        raise LeapkdError(
            f"{path} carries no leapkd metadata, so its architecture is unknown",
            "pass a run directory or a student file written by `leapkd distill` or `leapkd export`",
        )
    info: dict[str, Any] = json.loads(meta)
    return info


def load_student_file(path: str | Path, image_size: int | None = None) -> Backbone:
    """A student written by leapkd (`student.safetensors`), rebuilt from its own metadata;
    `image_size` rebuilds it at another resolution."""
    info = read_student_metadata(path)
    size = image_size or int(info["image_size"])
    build = info.get("build")
    if build is None:  # files written before the build record: a ViT with its patch size
        build = {"patch_size": info.get("patch_size")}
    return load_backbone(info["name"], size, weights=path, **build)


def head_file_of(student_file: str | Path) -> Path:
    """Where the classification head of a student file lives: `<stem>_head.safetensors` beside it."""
    path = Path(student_file)
    return path.with_name(f"{path.stem}_head.safetensors")


def save_head_file(head: nn.Module, path: str | Path, classes: list[str]) -> Path:
    """A student's linear classification head (on its pooled last-level features), with its class names."""
    state = {k: v.detach().float().cpu().contiguous().clone() for k, v in head.state_dict().items()}
    meta = {"classes": json.dumps(classes), "pooling": "cls"}
    write_bytes_atomic(Path(path), save(state, metadata=meta))
    return Path(path)


def load_head_file(path: str | Path) -> tuple[nn.Linear, list[str]]:
    """(the head as an nn.Linear, its class names) from `save_head_file`'s file."""
    with safe_open(str(path), "pt") as f:
        classes = json.loads((f.metadata() or {}).get("classes", "[]"))
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return head, classes
