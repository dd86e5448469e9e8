"""Is the embedded teacher a real pretrained model? kNN top-1 of its CLS features vs random init.

Usage: python bench/teacher_knn.py [--data fashion-mnist] [--image-size 112] [--train 100] [--val 50]
(--train / --val are images per class; the default is the seeded 1,000 / 500 split).
Prints a table and writes it to docs/results/teacher_knn-<data>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from leapkd.data import build_dataset
from leapkd.eval import knn_accuracy
from leapkd.models import Backbone, load_backbone
from leapkd.models.imgfocus import convert_onnx, onnx_path


def stacked(data: str, split: str, size: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = build_dataset(data, split=split, image_size=size, augment=False, subset_per_class=per_class, seed=0)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


@torch.no_grad()
def cls_features(model: Backbone, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    return torch.cat([Backbone.cls_token(model(images[i : i + batch])) for i in range(0, len(images), batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--val", type=int, default=50)
    args = p.parse_args()

    t = time.perf_counter()
    convert_onnx(onnx_path())
    convert_seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LEAPKD_CACHE"] = cache
        t = time.perf_counter()
        load_backbone("dinov2-vits14-imgfocus", args.image_size)  # converts and caches
        first_load = time.perf_counter() - t
        t = time.perf_counter()
        teacher = load_backbone("dinov2-vits14-imgfocus", args.image_size).eval()  # from the cache
        cached_load = time.perf_counter() - t
    torch.manual_seed(0)
    random = load_backbone("vit_small_patch14_dinov2", args.image_size).eval()

    train_x, train_y = stacked(args.data, "train", args.image_size, args.train)
    val_x, val_y = stacked(args.data, "val", args.image_size, args.val)
    result: dict[str, object] = {
        "data": args.data,
        "image_size": args.image_size,
        "train_images": len(train_x),
        "val_images": len(val_x),
        "onnx_conversion_seconds": round(convert_seconds, 2),
        "first_load_seconds": round(first_load, 2),
        "cached_load_seconds": round(cached_load, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    for name, model in (("teacher", teacher), ("random_init", random)):
        t = time.perf_counter()
        feats = cls_features(model, torch.cat([train_x, val_x]))
        acc = knn_accuracy(feats[: len(train_x)], train_y, feats[len(train_x) :], val_y, k=20)
        result[f"{name}_knn_top1"] = round(float(acc["top1"]), 4)
        result[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
    for k, v in result.items():
        print(f"{k:28} {v}")
    out = Path(__file__).resolve().parent.parent / "docs" / "results" / f"teacher_knn-{args.data}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
