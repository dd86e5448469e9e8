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
import warnings
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from leapkd.data import LabeledImages
from leapkd.models import Backbone, Pooling
from leapkd.paths import cache_dir


def model_fingerprint(backbone: Backbone) -> str:
    """A hash of the backbone's weights and shape facts."""
    h = hashlib.sha1(json.dumps(backbone.describe(), sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return h.hexdigest()[:16]


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    dataset: Dataset | LabeledImages,
    kind: Pooling = "cls",
    block: int | None = None,
    batch_size: int = 128,
    cache_key: dict | None = None,
    progress: bool = True,
    desc: str = "features",
    autocast_dtype: torch.dtype | None = None,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32, labels (N,)) of `dataset` through `backbone`.

    `block` selects an intermediate level (default: the last); `kind` pools it: the CLS
    token where the level has one ("cls"), else the mean over positions ("avgpool").
    With `cache_key` (a JSON-able description of the data and transform), results are
    cached under the leapkd cache directory (written atomically, safe with concurrent
    writers). The model runs on its own device, under autocast when `autocast_dtype` is
    set, fed by `num_workers` loader processes.
    """
    level = block or backbone.num_levels
    found = extract_levels(
        backbone, dataset, [level], kind, batch_size, cache_key, progress, desc, autocast_dtype, num_workers
    )
    return found[level]


@torch.no_grad()
def extract_levels(
    backbone: Backbone,
    dataset: Dataset | LabeledImages,
    levels: list[int],
    kind: Pooling = "cls",
    batch_size: int = 128,
    cache_key: dict | None = None,
    progress: bool = True,
    desc: str = "features",
    autocast_dtype: torch.dtype | None = None,
    num_workers: int = 0,
    devices: int = 1,
) -> dict[int, tuple[Tensor, Tensor]]:
    """`extract_features` of several levels, from one pass over the data (stopping after the
    deepest level); each level is cached on its own, and levels found in the cache are not
    computed again. `devices` > 1 splits every batch over that many CUDA devices."""
    fingerprint = model_fingerprint(backbone) if cache_key is not None else ""
    paths = {b: _cache_path(fingerprint, kind, b, cache_key, autocast_dtype) for b in levels}
    found = {b: _read(p) for b, p in paths.items() if p is not None and p.is_file()}
    todo = [b for b in levels if b not in found]
    if not todo:
        return found
    backbone.eval()
    device = next(backbone.parameters()).device
    # DataLoader reads any map-style dataset (len and [int]) but is typed for Dataset subclasses
    loader = DataLoader(
        cast(Dataset, dataset),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    pooled: nn.Module = PooledLevels(backbone, todo, kind, autocast_dtype)
    if devices > 1:  # the batch split over the devices, the results gathered on the first
        pooled = nn.DataParallel(pooled, device_ids=list(range(devices)))
    feats: dict[int, list[Tensor]] = {b: [] for b in todo}
    labels = []
    for images, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        outs = pooled(images.to(device, non_blocking=True))  # autocast is entered inside, in every replica
        for b in todo:
            feats[b].append(outs[str(b)].float().cpu())
        labels.append(torch.as_tensor(y))
    targets = torch.cat(labels).long()
    for b in todo:
        found[b] = torch.cat(feats[b]), targets
        path = paths[b]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:  # written from the tensors (no copy of the file in memory), then renamed
                save_file({"features": found[b][0].contiguous(), "labels": targets.contiguous()}, str(tmp))
                tmp.replace(path)
            except Exception as err:  # a full cache disk: the features are still here, just not cached
                tmp.unlink(missing_ok=True)
                warnings.warn(f"features not cached in {path.parent}: {err}", stacklevel=2)
    return found


class PooledLevels(nn.Module):
    """A backbone's pooled features at some levels as a module (what `nn.DataParallel` splits):
    images -> {"<level>": (B, D)}, computed under autocast to `autocast_dtype` when it is set.

    The module enters autocast itself, on the device of its input: `nn.DataParallel` runs
    each replica in a thread of its own, autocast's state (its dtype included) belongs to
    each thread, and torch re-enters autocast in those threads without the dtype, so an
    autocast entered by the caller would reach the replicas as the device's default dtype
    (float16 on CUDA) instead of the one asked for.
    """

    def __init__(
        self, backbone: Backbone, levels: list[int], kind: Pooling, autocast_dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.backbone, self.levels, self.kind, self.autocast_dtype = backbone, levels, kind, autocast_dtype

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        dtype = self.autocast_dtype
        with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outs = self.backbone.forward_levels(images, self.levels)
            return {str(b): outs[b].pooled(self.kind) for b in self.levels}


def _cache_path(
    fingerprint: str, kind: str, level: int, cache_key: dict | None, autocast_dtype: torch.dtype | None
) -> Path | None:
    if cache_key is None:
        return None
    key = {"model": fingerprint, "kind": kind, "block": level, **cache_key}
    if autocast_dtype is not None:
        key["autocast"] = str(autocast_dtype)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "features" / f"{digest}.safetensors"


def _read(path: Path) -> tuple[Tensor, Tensor]:
    cached = load_file(str(path))
    return cached["features"], cached["labels"]
