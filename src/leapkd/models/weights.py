"""Reading weight files and fitting them onto a timm VisionTransformer.

Accepted files: `.safetensors`, `.pth`/`.pt`/`.bin` (torch pickles, loaded with
`weights_only=True`). Accepted layouts: timm, the DINOv2 torch.hub layout (including
chunked `blocks.<chunk>.<i>` keys), and HF Dinov2. Position embeddings are resampled to
the model's grid once, at load time, with bicubic interpolation the way the DINOv2 family
does it at run time: without antialiasing for plain models (DINOv2, HF Dinov2, the embedded
teacher), with antialiasing for models with register tokens (DINOv2 `_reg` hub models and
HF Dinov2WithRegisters). One rule per model, whatever the resolution.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from leapkd.errors import LeapkdError
from leapkd.models.hf_dinov2 import hf_to_timm, is_hf_dinov2

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_CONTAINER_KEYS = ("state_dict", "model", "model_state", "module", "student", "teacher")


def read_weight_file(path: str | Path) -> dict[str, Tensor]:
    """A flat name -> tensor dict from a weight file; clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        raise LeapkdError(
            f"weight file {path} does not exist", "check the path (relative paths start from the current directory)"
        )
    if path.suffix not in WEIGHT_SUFFIXES:
        raise LeapkdError(
            f"weight file {path} has suffix '{path.suffix}'",
            f"use one of {', '.join(WEIGHT_SUFFIXES)}",
        )
    try:
        if path.suffix == ".safetensors":
            sd: object = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or not a weight file at all
        raise LeapkdError(
            f"cannot read weight file {path}: {type(err).__name__}: {err}",
            "the file is corrupt, truncated or not a PyTorch/safetensors weight file",
        ) from err
    return _unwrap(sd, path)


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    for _ in range(3):  # checkpoints nest the weights at most a couple of levels deep
        if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise LeapkdError(f"{path} holds no tensors", "pass a state dict or a checkpoint holding one")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _flatten_block_chunks(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINOv2 chunked keys `blocks.<chunk>.<i>.x` -> `blocks.<i>.x` (i is already global)."""
    if not any(re.match(r"blocks\.\d+\.\d+\.", k) for k in sd):
        return sd
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}


def _strip_module_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("module.", "backbone.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def to_timm_layout(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Convert any accepted layout to the keys and shapes of `model` (a timm model).

    ViTs also accept the DINOv2 hub (chunked blocks, registers) and Hugging Face layouts;
    every family goes through its timm module's `checkpoint_filter_fn` when it has one
    (position embeddings resampled to the model's grid, renamed keys).
    """
    sd = _strip_module_prefix(dict(state_dict))
    if isinstance(model, VisionTransformer):
        if is_hf_dinov2(sd):
            sd = hf_to_timm(sd)
        sd = _flatten_block_chunks(sd)
        if "register_tokens" in sd and "mask_token" not in sd:
            sd["mask_token"] = torch.zeros(1, sd["register_tokens"].shape[-1])
        antialias = getattr(model, "num_reg_tokens", 0) > 0
        sd = checkpoint_filter_fn(sd, model, interpolation="bicubic", antialias=antialias)
    else:
        family_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        if family_filter is not None:
            sd = family_filter(sd, model)
    # Classifier heads are not part of a backbone.
    return {k: v for k, v in sd.items() if not _is_head(k, model)}


def _is_head(key: str, model: nn.Module) -> bool:
    """Whether `key` belongs to a classifier the backbone (built without one) does not have; a
    model built with a classifier (`num_classes` > 0: a teacher whose own head gives KD logits)
    keeps its head's keys."""
    return not getattr(model, "num_classes", 0) and _head_key(key, model)


def _head_key(key: str, model: nn.Module) -> bool:
    """Whether `key` names a parameter of the model's classifier (timm's `classifier` names)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ("head", "fc", "classifier")
    heads = (names,) if isinstance(names, str) else tuple(names)
    return key.startswith(tuple(f"{h}." for h in heads)) or key.startswith(("head_drop.", "head_dist.", "fc_norm."))


def without_classifier(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """`state_dict` of `model` without its classifier's keys."""
    return {k: v for k, v in state_dict.items() if not _head_key(k, model) or k.startswith("fc_norm.")}


def load_into(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load converted weights strictly; on mismatch, name the keys that disagree."""
    sd = to_timm_layout(state_dict, model)
    reset_classifier = getattr(model, "reset_classifier", None)
    if (
        getattr(model, "num_classes", 0)
        and reset_classifier is not None
        and len(without_classifier(sd, model)) == len(sd)
    ):
        reset_classifier(0)  # built with a classifier the file does not hold: the backbone alone
    own = {k: v for k, v in model.state_dict().items() if not _is_head(k, model)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(sd) & set(own)
        if sd[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        lines = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        shape = (
            f" (the file has {_depth(sd)} blocks of width {_width(sd)}, the model {_depth(own)} of width {_width(own)})"
            if _depth(own)
            else ""
        )
        heads_only = not missing and not unexpected and all(_head_key(k.split(":")[0], model) for k in shapes)
        raise LeapkdError(
            f"weights from {source} do not fit the model{shape}:\n" + "\n".join(lines),
            "the file's classifier has other classes: set num_classes in the model's kwargs to its count, or "
            "leave num_classes out for the backbone alone"
            if heads_only
            else "pass the model name that matches the checkpoint (its width, depth, patch size and registers)",
        )
    model.load_state_dict(sd, strict=False)


def _depth(sd: dict[str, Tensor]) -> int:
    return sum(bool(re.fullmatch(r"blocks\.\d+\.norm1\.weight", k)) for k in sd)


def _width(sd: dict[str, Tensor]) -> int | str:
    cls = sd.get("cls_token")
    return int(cls.shape[-1]) if cls is not None else "?"
