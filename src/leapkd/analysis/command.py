"""`leapkd spectrum`: spectra of a model (and a student), proposed layer pairs, mirror correlation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from leapkd.analysis.spectrum import (
    layer_change_scores,
    layer_spectra,
    mirror_correlation,
    propose_layer_pairs,
    save_spectrum_plots,
)
from leapkd.config import StrictKeys, validate
from leapkd.data import build_dataset
from leapkd.disk import write_text_atomic
from leapkd.hardware import evaluation_device
from leapkd.sources import load_source


class SpectrumArgs(StrictKeys):
    """The options of `leapkd spectrum` and `leapkd.spectrum`."""

    student: str | None = Field(None, description="a second model drawn beside the first (e.g. a run directory)")
    data: str | None = Field(
        None, description="built-in dataset or image folder (default: the run's, else fashion-mnist)"
    )
    image_size: int | None = Field(None, ge=1, description="input resolution (default: the run's, else 112)")
    images: int = Field(64, ge=1, description="validation images to average over")
    pairs: int = Field(8, ge=1, description="how many layer pairs to propose")
    out_dir: str | Path | None = Field(
        None, description="output directory (default: <run>/spectrum, else spectra/<name>)"
    )
    seed: int = Field(0, description="seed of the image sample")
    weights: str | Path | None = Field(
        None, description="weight file for a model-name MODEL (safetensors, .pth or .bin)"
    )
    student_weights: str | Path | None = Field(None, description="weight file for a model-name student")
    accelerator: str = Field("auto", description="cpu, gpu or auto (a GPU when there is one)")


def spectrum(source: str, **options: Any) -> dict[str, Any]:
    """Analyse `source` (any model `leapkd eval` accepts) and optionally a student beside it.

    `options` are the keys of `SpectrumArgs`. `weights` / `student_weights` load weight files
    into model-name targets; the models run on the accelerator (default: a GPU when there is one).

    Results go to `out_dir`, else to `<run>/spectrum` when either model is a run directory
    (so `leapkd report` shows them), else to `spectra/<name>`.

    Writes spectrum_bands.png, spectrum_intensity.png, one CSV per model and spectrum.json
    (per-layer intensities, change scores, proposed (student, teacher) pairs and, with a
    student, the mirror correlation of the two per-layer curves).
    """
    args = validate(options, SpectrumArgs, command="spectrum")
    student, seed, images = args.student, args.seed, args.images
    device = evaluation_device(args.accelerator)
    teacher, run, defaults = load_source(source, args.image_size, seed, weights=args.weights)
    teacher.to(device)
    size = defaults["image_size"]
    data = args.data or defaults.get("data", "fashion-mnist")
    ds = build_dataset(data, split="val", image_size=size, augment=False, mean=teacher.mean, std=teacher.std)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:images]
    batch = torch.stack([ds[int(i)][0] for i in idx])
    results = [layer_spectra(teacher, batch)]
    results[0].model_name = defaults["name"]
    home = run  # the run directory the results belong to, if any
    if student is not None:
        # a model name is built with the first model's patch size, so both see the same token grid
        s_model, s_run, s_defaults = load_source(
            student, size, seed, patch_size=teacher.patch_size, weights=args.student_weights
        )
        home = home or s_run
        results.append(layer_spectra(s_model.to(device), batch))
        results[1].model_name = s_defaults["name"]
    out = (
        Path(args.out_dir) if args.out_dir else (home.path / "spectrum" if home else Path("spectra") / defaults["name"])
    )
    out.mkdir(parents=True, exist_ok=True)
    files = save_spectrum_plots(results, out)
    report: dict[str, Any] = {
        "data": data,
        "image_size": size,
        "images": len(batch),
        "models": [
            {
                "name": r.model_name,
                "layer_intensity": [round(float(v), 6) for v in r.layer_intensity],
                "change_score": [round(float(v), 6) for v in layer_change_scores(r)],
            }
            for r in results
        ],
        "proposed_pairs": propose_layer_pairs(results[0], results[1] if student else None, args.pairs),
        "files": [p.name for p in files],
    }
    if student is not None:
        report["mirror_correlation"] = mirror_correlation(results[0], results[1])
    write_text_atomic(out / "spectrum.json", json.dumps(report, indent=2) + "\n")
    report["out_dir"] = str(out)
    return report
