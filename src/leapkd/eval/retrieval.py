"""Instance retrieval: the revisited Oxford/Paris protocol and a labelled-data stand-in.

Rankings follow the revisitop convention: an integer array of shape (num_ranked,
num_queries) whose column q lists database indices from best to worst match. All scores
are fractions in [0, 1] (the paper tables print percentages). The `retrieval` protocol
scores revisited Oxford/Paris when the data is `roxford5k` / `rparis6k`, else class
retrieval on the labelled validation split.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from leapkd.data.transforms import build_transform
from leapkd.errors import LeapkdError, closest_names
from leapkd.eval.protocol import EvalContext, Protocol, percent, register_protocol
from leapkd.feature_cache import extract_levels

REVISITED = ("roxford5k", "rparis6k")

# setting -> (ground-truth keys of the positives, keys of the junk)
SETTINGS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def rank_database(query_feats: Tensor, db_feats: Tensor, chunk: int = 1024) -> Tensor:
    """Rankings (num_db, num_queries) by dot product of L2-normalised features, best first."""
    if query_feats.ndim != 2 or db_feats.ndim != 2 or query_feats.shape[1] != db_feats.shape[1]:
        raise ValueError(
            f"features must be (Q, D) and (N, D), got {tuple(query_feats.shape)} and {tuple(db_feats.shape)}"
        )
    db = F.normalize(db_feats.float(), dim=1)
    cols = [
        (F.normalize(query_feats[s : s + chunk].float().to(db.device), dim=1) @ db.T).argsort(dim=1, descending=True)
        for s in range(0, query_feats.shape[0], chunk)
    ]
    return torch.cat(cols).T if cols else torch.zeros(db.shape[0], 0, dtype=torch.long)


def _indices(entry: dict[str, Any], keys: Sequence[str], q: int) -> np.ndarray:
    parts = []
    for key in keys:
        if key not in entry:
            raise ValueError(f"gnd[{q}] has no '{key}' list (need 'easy', 'hard' and 'junk')")
        parts.append(np.asarray(entry[key], dtype=np.int64).reshape(-1))
    return np.unique(np.concatenate(parts))


def _trapezoid_ap(pos: np.ndarray, num_pos: int) -> float:
    """Revisitop AP: positive j (0-based) at 0-based rank r adds (j/r + (j+1)/(r+1)) / (2 num_pos).

    j/r is taken as 1 when r = 0. Positives missing from the ranking add nothing.
    """
    j = np.arange(len(pos), dtype=np.float64)
    r = pos.astype(np.float64)
    before = np.divide(j, r, out=np.ones_like(j), where=r > 0)
    return float(((before + (j + 1) / (r + 1)) / 2).sum() / num_pos)


def revisited_map(
    ranks: Tensor | np.ndarray, gnd: Sequence[dict[str, Any]], kappas: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[str, float]]:
    """mAP and mP@k for the Easy, Medium and Hard settings of revisited Oxford/Paris.

    `ranks` is (num_ranked, num_queries), column q = database indices best first (a partial
    ranking, num_ranked < num_db, is allowed). `gnd[q]` holds 'easy', 'hard', 'junk' index
    lists. Easy: positives easy, junk junk + hard; Medium: positives easy + hard, junk junk;
    Hard: positives hard, junk junk + easy (an index that is both counts as positive).
    Junk is deleted from the ranking first, so later positives move up. AP uses the
    protocol's trapezoidal rule (`_trapezoid_ap`). P@k is the fraction of positives among
    the first min(k, rank of the last ranked positive) junk-free results (revisitop's cap;
    0 if no positive is ranked). Queries without positives in a setting are left out of
    that setting's means; a setting with none at all scores nan. Values lie in [0, 1].
    Returns {"easy": {"map": .., "mp@1": .., ...}, "medium": {...}, "hard": {...}}.
    """
    ranks = ranks.detach().cpu().numpy() if isinstance(ranks, Tensor) else np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(
            f"ranks must be (num_ranked, num_queries) with one column per gnd entry "
            f"({len(gnd)}), got shape {ranks.shape}; transpose a (num_queries, num_db) ranking"
        )
    if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"ranks must hold integer database indices, got dtype {ranks.dtype}")
    kappas = [int(k) for k in kappas]
    if any(k < 1 for k in kappas):
        raise ValueError(f"kappas must be positive, got {kappas}")

    result = {}
    for setting, (pos_keys, junk_keys) in SETTINGS.items():
        aps, precisions = [], []
        for q, entry in enumerate(gnd):
            positives = _indices(entry, pos_keys, q)
            if positives.size == 0:
                continue
            column = ranks[:, q]
            junk = np.isin(column, _indices(entry, junk_keys, q)) & ~np.isin(column, positives)
            pos = np.flatnonzero(np.isin(column[~junk], positives))  # 0-based, junk removed
            aps.append(_trapezoid_ap(pos, positives.size))
            last = pos[-1] + 1 if pos.size else math.inf
            precisions.append([np.count_nonzero(pos < min(last, k)) / min(last, k) for k in kappas])
        scores = {"map": float(np.mean(aps)) if aps else math.nan}
        mean_p = np.mean(precisions, axis=0) if precisions else [math.nan] * len(kappas)
        scores.update({f"mp@{k}": float(p) for k, p in zip(kappas, mean_p)})
        result[setting] = scores
    return result


def class_retrieval_map(features: Tensor, labels: Tensor, chunk: int = 256) -> float:
    """Mean average precision when every item queries all the others (the offline stand-in).

    Relevant = same label; ranking by dot product of L2-normalised features; the query itself
    is excluded. AP is the standard non-interpolated one: the mean, over the relevant items,
    of the precision at each one's rank. Items whose class has no other member are skipped
    (nan if all are). Queries go `chunk` at a time, so memory is O(chunk * N).
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"need (N, D) features and (N,) labels, got {tuple(features.shape)}, {tuple(labels.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    feats = F.normalize(features.float(), dim=1)
    labels = labels.long().to(feats.device)
    n = feats.shape[0]
    ranks = torch.arange(1, n + 1, device=feats.device, dtype=torch.float64)
    total, counted = 0.0, 0
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=feats.device)
        sims = feats[idx] @ feats.T
        sims[torch.arange(len(idx), device=feats.device), idx] = -math.inf  # the query itself goes last...
        order = sims.argsort(dim=1, descending=True)
        hits = labels[order] == labels[idx, None]
        hits[:, -1] = False  # ...and is not counted as relevant
        num_rel = hits.sum(dim=1)
        precision = hits.cumsum(dim=1) / ranks
        ap = (precision * hits).sum(dim=1) / num_rel.clamp(min=1)
        total += ap[num_rel > 0].sum().item()
        counted += int((num_rel > 0).sum())
    return total / counted if counted else math.nan


def load_revisited(
    root: str | Path, name: str
) -> tuple[list[Path], list[Path], list[tuple[float, float, float, float]], list[dict[str, Any]]]:
    """(database paths, query paths, query boxes [x1, y1, x2, y2], gnd) of a revisited set.

    Expects the revisited Oxford/Paris release unpacked as `root/<name>/jpg/*.jpg` and
    `root/<name>/gnd_<name>.pkl` ('imlist', 'qimlist', 'gnd' with 'bbx', 'easy', 'hard',
    'junk'). Nothing is downloaded.
    """
    if name not in REVISITED:
        hint = closest_names(name, REVISITED)
        raise LeapkdError(
            f"unknown revisited dataset '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            f"use one of {', '.join(REVISITED)}",
        )
    base = Path(root).expanduser() / name
    gnd_file = base / f"gnd_{name}.pkl"
    fix = (
        f"get the revisited Oxford/Paris release (images and gnd_{name}.pkl, "
        f"http://cmp.felk.cvut.cz/revisitop/) and lay it out as {base}/jpg/*.jpg and {gnd_file}; "
        "leapkd never downloads data"
    )
    if not (base / "jpg").is_dir() or not gnd_file.is_file():
        missing = base / "jpg" if not (base / "jpg").is_dir() else gnd_file
        raise LeapkdError(f"{name}: {missing} does not exist", fix)
    try:
        with open(gnd_file, "rb") as f:
            cfg = pickle.load(f)
        imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
        boxes = [tuple(float(v) for v in g["bbx"]) for g in gnd]
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise LeapkdError(f"{gnd_file} is not a valid revisited ground-truth file: {err!r}", fix) from err
    if len(gnd) != len(qimlist) or any(len(b) != 4 for b in boxes):
        raise LeapkdError(f"{gnd_file}: need one 'gnd' entry with a 4-number 'bbx' per query", fix)

    def paths(names: list[str]) -> list[Path]:
        return [base / "jpg" / (n if n.lower().endswith(".jpg") else f"{n}.jpg") for n in names]

    db_paths, query_paths = paths(imlist), paths(qimlist)
    absent = [p for p in db_paths + query_paths if not p.is_file()]
    if absent:
        raise LeapkdError(f"{name}: {len(absent)} listed images are missing, e.g. {absent[0]}", fix)
    return db_paths, query_paths, cast(list[tuple[float, float, float, float]], boxes), gnd  # lengths checked above


class RetrievalImages(Dataset):
    """Images by path, as RGB, each cropped to its box [x1, y1, x2, y2] (clamped to the image) when
    `boxes` is given.

    No EXIF rotation is applied, so boxes refer to the stored pixel grid (as in the protocol).
    Items are `transform(image)`, or the PIL image when `transform` is None.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        boxes: Sequence[Sequence[float]] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if boxes is not None and len(boxes) != len(paths):
            raise ValueError(f"need one box per image, got {len(boxes)} boxes for {len(paths)} images")
        self.paths = [Path(p) for p in paths]
        self.boxes = None if boxes is None else [tuple(round(float(v)) for v in b) for b in boxes]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        with Image.open(self.paths[i]) as img:
            image = img.convert("RGB")
        if self.boxes is not None:  # clamped to the image: a box past an edge crops no black border
            x1, y1, x2, y2 = self.boxes[i]
            w, h = image.size
            image = image.crop((max(0, x1), max(0, y1), min(w, x2), min(h, y2)))
        return image if self.transform is None else self.transform(image)


class _Unlabelled(Dataset):
    """(image, index) pairs, so unlabelled images go through the feature extraction."""

    def __init__(self, images: RetrievalImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.images[i], i


def _revisited_map_of(ctx: EvalContext) -> dict[str, dict[str, float]]:
    """Revisited Oxford/Paris: queries cropped to their boxes, ranking by dot product.

    A fixed-grid ViT needs square inputs: images go through the call's deterministic transform
    (`evaluate` makes it the reference's bicubic centre crop unless told otherwise).
    """
    name, root, opts = ctx.data, ctx.options.data_root, ctx.options
    if root is None:
        raise LeapkdError(f"{name} needs `data_root`", f"pass the directory that holds {name}/jpg and gnd_{name}.pkl")
    db_paths, q_paths, boxes, gnd = load_revisited(root, name)
    model, size = ctx.model, ctx.image_size
    transform = build_transform(size, augment=False, mean=model.mean, std=model.std, eval_transform=opts.transform)
    key = {"data": name, "root": str(Path(root).resolve()), "size": size, "mean": model.mean, "std": model.std}
    if opts.transform != "resize":  # the default stays out of the key: earlier caches hold
        key["transform"] = opts.transform
    level = opts.level or model.num_levels
    feats = {}
    for part, paths, crops in (("database", db_paths, None), ("queries", q_paths, boxes)):
        found = extract_levels(  # with the call's precision, loader workers and devices, as ctx.features
            model,
            _Unlabelled(RetrievalImages(paths, crops, transform)),
            [level],
            opts.pooling,
            cache_key={**key, "part": part},
            progress=opts.progress,
            desc=f"{name} {part}",
            autocast_dtype=opts.autocast,
            num_workers=opts.num_workers,
            devices=opts.devices,
        )
        feats[part] = found[level][0]
    return revisited_map(rank_database(feats["queries"], feats["database"]), gnd)


@register_protocol("retrieval")
class RetrievalProtocol(Protocol):
    """Revisited Oxford/Paris mAP and mP@k, or class-retrieval mAP on the validation split."""

    labels = False

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        if ctx.data in REVISITED:
            return _revisited_map_of(ctx)
        val_x, val_y = ctx.features("val", ctx.options.val_per_class)
        return {"class_map": class_retrieval_map(val_x, val_y), "queries": len(val_y)}

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        if "class_map" in result:
            return [("class-retrieval mAP", percent(result["class_map"]))]
        return [
            (f"revisited {setting} (%)", ", ".join(f"{_label(k)} {100 * v:.2f}" for k, v in figures.items()))
            for setting, figures in result.items()
        ]


def _label(figure: str) -> str:
    """'map' -> 'mAP', 'mp@5' -> 'mP@5'."""
    return figure.replace("map", "mAP").replace("mp@", "mP@")
