"""Spectral analysis of a ViT's layers (SpectralKD, docs/method.md, section 2).

Every block's un-normed output is taken as a feature map (patch tokens on their grid,
prefix tokens dropped, shape B x C x H x W) and summarised over a batch of images:

- **grid spectrum**: `|rfft2(map, norm="ortho")|` over (H, W), averaged over images and
  channels, then binned by radial frequency. A stored bin at integer frequency indices
  (ky, kx), ky in fftfreq(H) * H (signed) and kx in rfftfreq(W) * W, has radius
  r = sqrt(ky² + kx²) and goes to band round(r) (halves round up). Bands run 0..F-1 with
  F = round(r_max) + 1, one per integer radius up to the largest; none is empty. A band's
  value is the mean over its bins. For a 4x4 grid F = 4; for 14x14, F = 11.
- **layer intensity**: the mean of `|rfft2|` over all stored bins, channels and images.
- **channel intensity**: `|rfft(token, norm="ortho")|` over the channel axis of every
  patch token, averaged over channel frequencies, tokens and images.

The embedding output (block 0) is summarised too so block 1 has a predecessor when
ranking layers by spectral change (`layer_change_scores`).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from torch import Tensor  # noqa: E402

from leapkd.errors import LeapkdError  # noqa: E402
from leapkd.models import Backbone  # noqa: E402
from leapkd.plots import save_figure  # noqa: E402

_EPS = 1e-12


@dataclass
class SpectrumResult:
    """Per-layer spectra of one model; row l-1 is level l (1..L).

    Frequencies are in cycles per image, so levels on different grids share one band axis;
    a band finer than a level's grid can hold is NaN for that level.
    """

    grid_bands: Tensor  # (L, F) mean |FFT| per radial frequency band
    layer_intensity: Tensor  # (L,) mean |FFT| over the token grid
    channel_intensity: Tensor  # (L,) mean |FFT| over the channel axis
    model_name: str
    embed_bands: Tensor | None = None  # (F,) the same for the embedding output (block 0)
    embed_intensity: float | None = None

    @property
    def num_layers(self) -> int:
        return int(self.grid_bands.shape[0])


def radial_bands(h: int, w: int) -> tuple[Tensor, int]:
    """Band index (H, W//2+1) of every rfft2 bin of an H x W grid, and the band count F."""
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)
    kx = torch.fft.rfftfreq(w, d=1.0 / w, dtype=torch.float64)
    radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    band = torch.floor(radius + 0.5).long()
    return band, int(band.max()) + 1


class _Accumulator:
    """Running sums of one layer's spectra over image batches."""

    def __init__(self) -> None:
        self.grid: Tensor | None = None
        self.maps = 0
        self.channel_sum = 0.0
        self.channel_count = 0

    def add(self, fmap: Tensor) -> None:
        fmap = fmap.float()
        mag = torch.fft.rfft2(fmap, dim=(-2, -1), norm="ortho").abs().double()
        total = mag.sum(dim=(0, 1)).cpu()
        self.grid = total if self.grid is None else self.grid + total
        self.maps += fmap.shape[0] * fmap.shape[1]
        ch = torch.fft.rfft(fmap, dim=1, norm="ortho").abs().double()
        self.channel_sum += float(ch.sum())
        self.channel_count += ch.numel()

    def summary(self, band: Tensor, n_bands: int) -> tuple[Tensor, float, float]:
        """(mean |FFT| per band, NaN where the grid has no bin; mean |FFT|; mean channel |FFT|)."""
        assert self.grid is not None
        mean_grid = self.grid / self.maps
        sums = torch.zeros(n_bands, dtype=torch.float64).index_add_(0, band.flatten(), mean_grid.flatten())
        counts = torch.bincount(band.flatten(), minlength=n_bands)
        bands = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
        return bands, float(mean_grid.mean()), self.channel_sum / self.channel_count


@torch.no_grad()
def layer_spectra(model: Backbone, images: Tensor, batch_size: int = 64) -> SpectrumResult:
    """Spectra of levels 1..L (and of the embedding, where the family has one) of `model`
    over `images` (N, 3, H, W), each level's feature map on its own grid, un-normalised."""
    if len(images) == 0:
        raise LeapkdError("no images to analyse", "pass at least one image")
    model.eval()
    device = next(model.parameters()).device
    levels = range(1, model.num_levels + 1)
    acc = {b: _Accumulator() for b in [0, *levels]}
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(device)
        outs = dict(model.forward_levels(batch, levels, norm=False))
        stem = model.stem(batch)
        if stem is not None:
            outs[0] = stem
        for b, feats in outs.items():
            acc[b].add(feats.as_map())
    grids = {b: model.levels[b - 1].grid for b in levels}
    if acc[0].maps:
        grids[0] = model.levels[0].grid
    n_bands = max(radial_bands(*g)[1] for g in grids.values())
    summaries = {b: acc[b].summary(*_bands_of(grids[b], n_bands)) for b in grids}
    embed = summaries.get(0)
    return SpectrumResult(
        grid_bands=torch.stack([summaries[b][0] for b in levels]).float(),
        layer_intensity=torch.tensor([summaries[b][1] for b in levels]),
        channel_intensity=torch.tensor([summaries[b][2] for b in levels]),
        model_name=model.name,
        embed_bands=embed[0].float() if embed else None,
        embed_intensity=embed[1] if embed else None,
    )


def _bands_of(grid: tuple[int, int], n_bands: int) -> tuple[Tensor, int]:
    band, _ = radial_bands(*grid)
    return band, n_bands


def _spectral_distance(bands_a: Tensor, bands_b: Tensor, int_a: float, int_b: float) -> float:
    """A band a level's grid cannot hold counts as no energy."""
    bands_a, bands_b = bands_a.double().nan_to_num(0.0), bands_b.double().nan_to_num(0.0)
    pa = bands_a / bands_a.sum().clamp_min(_EPS)
    pb = bands_b / bands_b.sum().clamp_min(_EPS)
    return float((pa - pb).abs().sum()) + abs(int_a - int_b) / max(int_a, int_b, _EPS)


def layer_change_scores(result: SpectrumResult) -> Tensor:
    """(L,) spectral change of every block from its predecessor.

    score(l) = || p_l - p_{l-1} ||_1 + |I_l - I_{l-1}| / max(I_l, I_{l-1}), where p is the
    band profile normalised to sum 1 and I the layer intensity; the first term is in
    [0, 2], the second in [0, 1]. Block 1's predecessor is the embedding output when the
    result has it, otherwise block 2 (its only neighbour); a single block scores 0.
    """
    bands, inten = result.grid_bands, result.layer_intensity.tolist()
    scores = []
    for i in range(result.num_layers):
        if i > 0:
            scores.append(_spectral_distance(bands[i], bands[i - 1], inten[i], inten[i - 1]))
        elif result.embed_bands is not None and result.embed_intensity is not None:
            scores.append(_spectral_distance(bands[0], result.embed_bands, inten[0], result.embed_intensity))
        elif result.num_layers > 1:
            scores.append(_spectral_distance(bands[0], bands[1], inten[0], inten[1]))
        else:
            scores.append(0.0)
    return torch.tensor(scores)


def propose_layer_pairs(teacher: SpectrumResult, student: SpectrumResult | None, n_pairs: int) -> list[tuple[int, int]]:
    """Up to `n_pairs` (student_block, teacher_block) pairs, 1-based, sorted by depth.

    Teacher blocks are visited by decreasing `layer_change_scores` (ties: shallower first);
    block t maps to student block s = floor(t * L_s / L_t + 0.5) clamped to 1..L_s
    (L_s = L_t without a student). A pair whose student block is already taken is skipped,
    so every student block is distilled at most once; fewer than `n_pairs` pairs come back
    only when the student has fewer than `n_pairs` blocks.
    """
    if n_pairs < 1:
        raise LeapkdError(f"n_pairs must be at least 1, got {n_pairs}")
    lt = teacher.num_layers
    ls = student.num_layers if student is not None else lt
    scores = layer_change_scores(teacher).tolist()
    chosen: dict[int, int] = {}
    for t in sorted(range(1, lt + 1), key=lambda t: (-scores[t - 1], t)):
        s = min(max(math.floor(t * ls / lt + 0.5), 1), ls)
        if s not in chosen:
            chosen[s] = t
            if len(chosen) == n_pairs:
                break
    return sorted(chosen.items())


def mirror_correlation(teacher: SpectrumResult, student: SpectrumResult) -> float:
    """Pearson correlation of the two per-layer intensity curves.

    Block l of an L-block model sits at relative depth (l - 1) / (L - 1), so first and
    last blocks align; the shorter curve is linearly interpolated at the longer curve's
    depths (never extrapolated) and the correlation is taken over the longer curve's
    points. NaN when either curve is constant.
    """
    a = teacher.layer_intensity.double()
    b = student.layer_intensity.double()
    if min(len(a), len(b)) < 2:
        raise LeapkdError("mirror correlation needs at least 2 layers per model")
    if len(a) < len(b):
        a = _resample(a, len(b))
    elif len(b) < len(a):
        b = _resample(b, len(a))
    a, b = a - a.mean(), b - b.mean()
    denom = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def _resample(curve: Tensor, n: int) -> Tensor:
    """Linear interpolation of `curve` (points at depths linspace(0, 1)) at n even depths."""
    pos = torch.linspace(0, 1, n, dtype=torch.float64) * (len(curve) - 1)
    lo = pos.floor().long().clamp(max=len(curve) - 2)
    frac = pos - lo
    return curve[lo] * (1 - frac) + curve[lo + 1] * frac


def _slugs(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
        base, k = slug, 2
        while slug in out:
            slug, k = f"{base}-{k}", k + 1
        out.append(slug)
    return out


def save_spectrum_plots(results: list[SpectrumResult], out_dir: Path) -> list[Path]:
    """Layer x band heat maps (side by side), a per-layer intensity curve, one CSV per model.

    Writes `spectrum_bands.png`, `spectrum_intensity.png` (x = level / L) and
    `spectrum_<model>.csv` (block, relative depth, intensities, one column per band).
    """
    if not results:
        raise LeapkdError("no spectra to plot")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slugs = _slugs([r.model_name for r in results])
    paths: list[Path] = []

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), dpi=110, squeeze=False)
    for ax, r in zip(axes[0], results):
        # log colour scale: the zero-frequency band is orders of magnitude above the rest
        bands = r.grid_bands.clamp_min(1e-8).numpy()
        im = ax.imshow(bands, origin="lower", cmap="magma", aspect="auto", norm=LogNorm())
        ax.set_xticks(range(r.grid_bands.shape[1]))
        ax.set_yticks(range(r.num_layers), labels=range(1, r.num_layers + 1))
        ax.set_xlabel("radial frequency band")
        ax.set_ylabel("level")
        ax.set_title(f"{r.model_name}\nmean |FFT| per band", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    paths.append(out_dir / "spectrum_bands.png")
    save_figure(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for r in results:
        depth = [b / r.num_layers for b in range(1, r.num_layers + 1)]
        ax.plot(depth, r.layer_intensity.tolist(), marker="o", label=r.model_name)
    ax.set_xlabel("relative depth (level / L)")
    ax.set_yscale("log")
    ax.set_ylabel("mean |FFT| over the token grid (log)")
    ax.set_title("per-layer spectral intensity")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "spectrum_intensity.png")
    save_figure(fig, paths[-1])

    for r, slug in zip(results, slugs):
        path = out_dir / f"spectrum_{slug}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            n_bands = r.grid_bands.shape[1]
            w.writerow(
                [
                    "block",
                    "relative_depth",
                    "layer_intensity",
                    "channel_intensity",
                    *(f"band_{k}" for k in range(n_bands)),
                ]
            )
            for i in range(r.num_layers):
                w.writerow(
                    [
                        i + 1,
                        f"{(i + 1) / r.num_layers:.4f}",
                        f"{float(r.layer_intensity[i]):.6g}",
                        f"{float(r.channel_intensity[i]):.6g}",
                        *(f"{v:.6g}" for v in r.grid_bands[i].tolist()),
                    ]
                )
        paths.append(path)
    return paths
