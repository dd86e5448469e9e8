"""CKA map: linear CKA between every block of one model and every block of another."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from leapkd.errors import LeapkdError  # noqa: E402
from leapkd.eval.protocol import EvalContext, Protocol, register_protocol  # noqa: E402
from leapkd.metrics import linear_cka  # noqa: E402
from leapkd.models import Backbone, load_backbone  # noqa: E402


@torch.no_grad()
def block_tokens(model: Backbone, images: Tensor, batch_size: int = 64) -> list[Tensor]:
    """Normed patch tokens of every block, each flattened to (N * P, D)."""
    per_block: list[list[Tensor]] = [[] for _ in range(model.num_blocks)]
    model.eval()
    for i in range(0, len(images), batch_size):
        outs = model.forward_blocks(images[i : i + batch_size], range(1, model.num_blocks + 1))
        for b, tokens in outs.items():
            patches = model.patch_tokens(tokens).float()
            per_block[b - 1].append(patches.reshape(-1, patches.shape[-1]))
    return [torch.cat(chunks) for chunks in per_block]


def cka_map(rows_model: Backbone, cols_model: Backbone, images: Tensor) -> Tensor:
    """(L_rows, L_cols) matrix of linear CKA between block outputs on `images`.

    Both models must see the same token grid (the patch tokens are compared row by row).
    """
    a = block_tokens(rows_model, images)
    b = block_tokens(cols_model, images)
    if a[0].shape[0] != b[0].shape[0]:
        raise ValueError(f"token counts differ: {a[0].shape[0]} vs {b[0].shape[0]} (different patch grids)")
    return torch.tensor([[float(linear_cka(x, y)) for y in b] for x in a])


def save_cka_map(matrix: Tensor, row_name: str, col_name: str, png: Path, csv_path: Path) -> None:
    """Heat map PNG (block 1 at the bottom left) and a CSV with one row per `row_name` block."""
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"{row_name} block \\ {col_name} block", *range(1, matrix.shape[1] + 1)])
        for i, row in enumerate(matrix.tolist(), start=1):
            w.writerow([i, *(f"{v:.4f}" for v in row)])
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * matrix.shape[1], 1.0 + 0.45 * matrix.shape[0]), dpi=110)
    im = ax.imshow(matrix.numpy(), origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), labels=[str(b) for b in range(1, matrix.shape[1] + 1)])
    ax.set_yticks(range(matrix.shape[0]), labels=[str(b) for b in range(1, matrix.shape[0] + 1)])
    ax.set_xlabel(f"{col_name} block")
    ax.set_ylabel(f"{row_name} block")
    ax.set_title("linear CKA between blocks")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


@register_protocol("cka-map")
class CkaMapProtocol(Protocol):
    """CKA map of the model against a reference (`--reference`, default: the run's teacher).

    Computed on `--cka-images` seeded validation images; writes cka_map.png and cka_map.csv.
    """

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        opts = ctx.options
        ref_name = opts.reference or ctx.defaults.get("reference")
        if ref_name is None:
            raise LeapkdError("cka-map needs a reference model", "pass --reference (e.g. the teacher)")
        ref_weights = opts.reference_weights if opts.reference else ctx.defaults.get("reference_weights")
        ref = load_backbone(ref_name, ctx.image_size, weights=ref_weights)
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
        return [(f"CKA map vs {result['reference']}", f"{len(matrix)} x {len(matrix[0])} blocks, {result['png']}")]
