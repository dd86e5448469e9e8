"""`evaluate()`: kNN, linear probe, retrieval and CKA maps for any backbone or run.

TARGET is a run directory (its distilled student), a student `.safetensors` written by
leapkd, or anything `load_backbone` accepts (so a teacher and a random-init model are
evaluated the same way). Features are extracted once per (model, data, transform) and
cached; every protocol of one call shares them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from leapkd.config import load_config
from leapkd.data import build_dataset
from leapkd.data.transforms import build_transform
from leapkd.errors import LeapkdError
from leapkd.eval.cka_map import cka_map, save_cka_map
from leapkd.eval.features import FeatureKind, extract_features
from leapkd.eval.knn import knn_accuracy
from leapkd.eval.linear import linear_probe
from leapkd.eval.retrieval import (
    REVISITED,
    RetrievalImages,
    class_retrieval_map,
    load_revisited,
    rank_database,
    revisited_map,
)
from leapkd.models import Backbone, load_backbone, load_student_file
from leapkd.rundir import RunDirectory, write_text_atomic

PROTOCOLS = ("knn", "linear", "retrieval", "cka-map")


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "student.safetensors").is_file()


def load_target(
    target: str,
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
    path = Path(target)
    if weights is not None and (_is_run(path) or path.suffix == ".safetensors"):
        raise LeapkdError(
            f"--weights applies to a model name, but {target} already carries its weights",
            "drop --weights, or give a model name (e.g. vit_small_patch14_dinov2) with --weights FILE",
        )
    if _is_run(path):
        cfg = load_config(path / "config.yaml")
        run = RunDirectory(path)
        size = image_size or cfg.image_size
        model = load_student_file(run.student, size)
        defaults = {
            "data": cfg.data,
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
    model = load_backbone(target, size, weights=weights, patch_size=patch_size)
    return model, None, {"image_size": size, "name": Path(target).name}


def evaluate(
    target: str,
    data: str | None = None,
    protocols: tuple[str, ...] = ("knn", "linear", "retrieval"),
    features: FeatureKind = "cls",
    image_size: int | None = None,
    train_per_class: int | None = 100,
    val_per_class: int | None = 50,
    block: int | None = None,
    k: int = 20,
    reference: str | None = None,
    reference_weights: str | Path | None = None,
    weights: str | Path | None = None,
    cka_images: int = 64,
    data_root: str | Path | None = None,
    patch_size: int | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `target` with the chosen protocols; returns (and writes) the results.

    Results go to `eval.json` in the run directory (and are merged into its summary.json
    under "eval"), or into `out_dir` for other targets. `weights` loads a weight file into
    a model-name target; `reference_weights` into the CKA map's reference (default: the
    run's teacher with its weights).
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise LeapkdError(f"unknown protocol(s) {', '.join(unknown)}", f"choose from {', '.join(PROTOCOLS)}")
    model, run, defaults = load_target(target, image_size, seed, patch_size, weights)
    if block is not None and not 1 <= block <= model.num_blocks:
        raise LeapkdError(
            f"--block {block} is outside the {model.num_blocks} blocks of {model.name}",
            f"choose a block between 1 and {model.num_blocks} (default: the last)",
        )
    data = data or defaults.get("data", "fashion-mnist")
    size = defaults["image_size"]
    if data in REVISITED:
        return _evaluate_revisited(model, data, data_root, size, features, block, run, defaults, out_dir, progress)

    def split(name: str, per_class: int | None) -> Any:
        return build_dataset(
            data,
            split=name,
            image_size=size,
            augment=False,
            mean=model.mean,
            std=model.std,
            subset_per_class=per_class,
            seed=seed,
        )

    def feats(name: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        key = {
            "data": data,
            "split": name,
            "per_class": per_class,
            "seed": seed,
            "size": size,
            "mean": model.mean,
            "std": model.std,
        }
        return extract_features(
            model, split(name, per_class), features, block, cache_key=key, progress=progress, desc=f"{name} features"
        )

    results: dict[str, Any] = {
        "target": str(target),
        "model": model.describe(),
        "data": data,
        "image_size": size,
        "features": features,
        "block": block or model.num_blocks,
        "weights": str(weights) if weights is not None else None,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "seed": seed,
    }
    out = Path(out_dir) if out_dir else (run.path if run else Path("evals") / defaults["name"])
    out.mkdir(parents=True, exist_ok=True)
    if any(p in protocols for p in ("knn", "linear")):
        tr_x, tr_y = feats("train", train_per_class)
        va_x, va_y = feats("val", val_per_class)
        if "knn" in protocols:
            results["knn"] = {**knn_accuracy(tr_x, tr_y, va_x, va_y, k=k), "k": k}
        if "linear" in protocols:
            results["linear"] = linear_probe(tr_x, tr_y, va_x, va_y, seed=seed)
    if "retrieval" in protocols:
        va_x, va_y = feats("val", val_per_class)
        results["retrieval"] = {"class_map": class_retrieval_map(va_x, va_y), "queries": len(va_y)}
    if "cka-map" in protocols:
        ref_name = reference or defaults.get("reference")
        if ref_name is None:
            raise LeapkdError("cka-map needs a reference model", "pass --reference (e.g. the teacher)")
        ref_weights = reference_weights if reference else defaults.get("reference_weights")
        ref = load_backbone(ref_name, size, weights=ref_weights)
        ds = split("val", None)
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:cka_images]
        images = torch.stack([ds[int(i)][0] for i in idx])
        matrix = cka_map(model, ref, images)
        png, csv_path = out / "cka_map.png", out / "cka_map.csv"
        save_cka_map(matrix, defaults["name"], Path(ref_name).name, png, csv_path)
        results["cka_map"] = {
            "reference": ref_name,
            "images": len(images),
            "png": png.name,
            "csv": csv_path.name,
            "matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
        }
    _record(out / "eval.json", run, data, results)
    results["out_dir"] = str(out)
    return results


def _record(path: Path, run: RunDirectory | None, data: str, results: dict[str, Any]) -> None:
    """Merge results into `path` (one entry per dataset) and into the run's summary.json.

    Protocols evaluated earlier on the same data are kept unless evaluated again.
    """
    book = json.loads(path.read_text()) if path.is_file() else {}
    book[data] = {**book.get(data, {}), **results}
    write_text_atomic(path, json.dumps(book, indent=2) + "\n")
    if run is not None and run.summary.is_file():
        summary = run.read_summary()
        entry = summary.setdefault("eval", {}).setdefault(data, {})
        entry.update({k: v for k, v in results.items() if k in ("knn", "linear", "retrieval", "cka_map")})
        run.write_summary(summary)


class _Unlabelled(Dataset):
    """(image, index) pairs, so unlabelled images go through `extract_features`."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.images[i], i


def _evaluate_revisited(
    model: Backbone,
    name: str,
    root: str | Path | None,
    size: int,
    features: FeatureKind,
    block: int | None,
    run: RunDirectory | None,
    defaults: dict[str, Any],
    out_dir: str | Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Revisited Oxford/Paris: queries cropped to their boxes, ranking by dot product.

    A fixed-grid ViT needs square inputs: images are resized (short side) and centre-cropped.
    """
    if root is None:
        raise LeapkdError(f"{name} needs --data-root", f"pass the directory that holds {name}/jpg and gnd_{name}.pkl")
    db_paths, q_paths, boxes, gnd = load_revisited(root, name)
    transform = build_transform(size, augment=False, mean=model.mean, std=model.std)
    key = {"data": name, "root": str(Path(root).resolve()), "size": size, "mean": model.mean, "std": model.std}
    feats = {}
    for part, paths, crops in (("database", db_paths, None), ("queries", q_paths, boxes)):
        feats[part], _ = extract_features(
            model,
            _Unlabelled(RetrievalImages(paths, crops, transform)),
            features,
            block,
            cache_key={**key, "part": part},
            progress=progress,
            desc=f"{name} {part}",
        )
    results = {
        "target": defaults["name"],
        "model": model.describe(),
        "data": name,
        "image_size": size,
        "features": features,
        "block": block or model.num_blocks,
        "retrieval": revisited_map(rank_database(feats["queries"], feats["database"]), gnd),
    }
    out = Path(out_dir) if out_dir else (run.path if run else Path("evals") / defaults["name"])
    out.mkdir(parents=True, exist_ok=True)
    _record(out / "eval.json", run, name, results)
    results["out_dir"] = str(out)
    return results
