"""Frozen-backbone features, extracted once per (model, data, transform) and cached.

The cache key hashes the model's weights and architecture facts, the dataset's identity
(name or path, split, subset, seed), the image size and normalisation, the feature type
and the block. A second extraction with the same inputs reads the cache instead of
running the model, so every protocol of one `leapkd eval` call, later calls, and the
teacher-head fit of `leapkd distill` share one extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from leapkd.data import LabeledImages
from leapkd.models import Backbone, Pooling
from leapkd.paths import cache_dir

FeatureKind = Pooling


def model_fingerprint(backbone: Backbone) -> str:
    """A hash of the backbone's weights and shape facts."""
    h = hashlib.sha1(json.dumps(backbone.describe(), sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    dataset: Dataset | LabeledImages,
    kind: FeatureKind = "cls",
    block: int | None = None,
    batch_size: int = 128,
    cache_key: dict | None = None,
    progress: bool = True,
    desc: str = "features",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32, labels (N,)) of `dataset` through `backbone`.

    `block` selects an intermediate level (default: the last); `kind` pools it: the CLS
    token where the level has one ("cls"), else the mean over positions ("avgpool").
    With `cache_key` (a JSON-able description of the data and transform), results are
    cached under the leapkd cache directory (written atomically, safe with concurrent
    writers). The model runs on its own device, under autocast when `autocast_dtype` is set.
    """
    block = block or backbone.num_levels
    path = None
    if cache_key is not None:
        key = {"model": model_fingerprint(backbone), "kind": kind, "block": block, **cache_key}
        if autocast_dtype is not None:
            key["autocast"] = str(autocast_dtype)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        path = cache_dir() / "features" / f"{digest}.safetensors"
        if path.is_file():
            cached = load_file(str(path))
            return cached["features"], cached["labels"]
    backbone.eval()
    device = next(backbone.parameters()).device
    # DataLoader reads any map-style dataset (len and [int]) but is typed for Dataset subclasses
    loader = DataLoader(cast(Dataset, dataset), batch_size=batch_size, shuffle=False)
    feats, labels = [], []
    for images, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            pooled = backbone.embedding(images.to(device), block, kind)
        feats.append(pooled.float().cpu())
        labels.append(torch.as_tensor(y))
    out = torch.cat(feats), torch.cat(labels).long()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"features": out[0].contiguous(), "labels": out[1].contiguous()}, str(tmp))
        tmp.replace(path)
    return out
