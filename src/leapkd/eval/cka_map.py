"""CKA map: linear CKA between every level of one model and every level of another.

Models of different families have levels on different grids: every level's map is
average-pooled to the smallest grid found among the levels of both models (no pooling
when all grids agree, as for two ViTs with the same token grid), and CKA compares the
(images x positions) rows of two levels.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from leapkd.errors import LeapkdError  # noqa: E402
from leapkd.eval.protocol import EvalContext, Protocol, register_protocol  # noqa: E402
from leapkd.metrics import linear_cka  # noqa: E402
from leapkd.models import Backbone, load_backbone  # noqa: E402
from leapkd.plots import save_figure  # noqa: E402


@torch.no_grad()
def level_rows(model: Backbone, images: Tensor, grid: tuple[int, int], batch_size: int = 64) -> list[Tensor]:
    """Normalised patch features of every level, pooled to `grid`, each flattened to (N * P, D).

    `images` may live anywhere: each batch is moved to the model's device, where the rows stay.
    """
    per_level: list[list[Tensor]] = [[] for _ in range(model.num_levels)]
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(device, non_blocking=True)
        outs = model.forward_levels(batch, range(1, model.num_levels + 1))
        for b, feats in outs.items():
            pooled = F.adaptive_avg_pool2d(feats.as_map().float(), grid) if feats.grid != grid else feats.as_map()
            per_level[b - 1].append(pooled.float().flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1]))
    return [torch.cat(chunks) for chunks in per_level]


def common_grid(*models: Backbone) -> tuple[int, int]:
    """The smallest grid among all levels of `models` (rows and columns separately)."""
    grids = [level.grid for model in models for level in model.levels]
    return min(g[0] for g in grids), min(g[1] for g in grids)


def cka_map(rows_model: Backbone, cols_model: Backbone, images: Tensor) -> Tensor:
    """(L_rows, L_cols) matrix (on the CPU) of linear CKA between level outputs on `images`.

    Each model runs on its own device; the CKA is computed on `rows_model`'s and copied
    to the CPU once, not once per pair of levels.
    """
    grid = common_grid(rows_model, cols_model)
    a = level_rows(rows_model, images, grid)
    b = [y.to(a[0].device) for y in level_rows(cols_model, images, grid)]
    return torch.stack([torch.stack([linear_cka(x, y) for y in b]) for x in a]).float().cpu()


def save_cka_map(matrix: Tensor, row_name: str, col_name: str, png: Path, csv_path: Path) -> None:
    """Heat map PNG (block 1 at the bottom left) and a CSV with one row per `row_name` block."""
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"{row_name} level \\ {col_name} level", *range(1, matrix.shape[1] + 1)])
        for i, row in enumerate(matrix.tolist(), start=1):
            w.writerow([i, *(f"{v:.4f}" for v in row)])
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * matrix.shape[1], 1.0 + 0.45 * matrix.shape[0]), dpi=110)
    im = ax.imshow(matrix.numpy(), origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), labels=[str(b) for b in range(1, matrix.shape[1] + 1)])
    ax.set_yticks(range(matrix.shape[0]), labels=[str(b) for b in range(1, matrix.shape[0] + 1)])
    ax.set_xlabel(f"{col_name} level")
    ax.set_ylabel(f"{row_name} level")
    ax.set_title("linear CKA between levels")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_figure(fig, png)


@register_protocol("cka-map")
class CkaMapProtocol(Protocol):
    """CKA map of the model against a reference (`--reference`, default: the run's teacher).

    Computed on `--cka-images` seeded validation images, with the reference on the target's
    (the evaluation's) device; writes cka_map.png and cka_map.csv.
    """

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        opts = ctx.options
        ref_name = opts.reference or ctx.defaults.get("reference")
        if ref_name is None:
            raise LeapkdError("cka-map needs a reference model", "pass `reference` (e.g. the teacher)")
        ref_weights = opts.reference_weights if opts.reference else ctx.defaults.get("reference_weights")
        ref = load_backbone(ref_name, ctx.image_size, weights=ref_weights).to(ctx.device)
        ds = ctx.dataset("val", None)
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ctx.seed))[: opts.cka_images]
        images = torch.stack([ds[int(i)][0] for i in idx])
        matrix = cka_map(ctx.model, ref, images)
        png, csv_path = ctx.output("cka_map.png"), ctx.output("cka_map.csv")
        save_cka_map(matrix, ctx.defaults["name"], Path(ref_name).name, png, csv_path)
        return {
            "reference": ref_name,
            "images": len(images),
            "png": png.name,
            "csv": csv_path.name,
            "matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
        }

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        matrix = result["matrix"]
        return [(f"CKA map vs {result['reference']}", f"{len(matrix)} x {len(matrix[0])} levels, {result['png']}")]
