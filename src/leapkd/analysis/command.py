"""`leapkd spectrum`: spectra of a model (and a student), proposed layer pairs, mirror correlation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from leapkd.analysis.spectrum import (
    layer_change_scores,
    layer_spectra,
    mirror_correlation,
    propose_layer_pairs,
    save_spectrum_plots,
)
from leapkd.data import build_dataset
from leapkd.disk import write_text_atomic
from leapkd.hardware import evaluation_device
from leapkd.targets import load_target


def spectrum(
    model: str,
    student: str | None = None,
    data: str | None = None,
    image_size: int | None = None,
    images: int = 64,
    pairs: int = 8,
    out_dir: str | Path | None = None,
    seed: int = 0,
    weights: str | Path | None = None,
    student_weights: str | Path | None = None,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Analyse `model` (any target `leapkd eval` accepts) and optionally a student beside it.

    `weights` / `student_weights` load weight files into model-name targets; the models run
    on the accelerator (default: a GPU when there is one).

    Results go to `out_dir`, else to `<run>/spectrum` when either model is a run directory
    (so `leapkd report` shows them), else to `spectra/<name>`.

    Writes spectrum_bands.png, spectrum_intensity.png, one CSV per model and spectrum.json
    (per-layer intensities, change scores, proposed (student, teacher) pairs and, with a
    student, the mirror correlation of the two per-layer curves).
    """
    device = evaluation_device(accelerator)
    teacher, run, defaults = load_target(model, image_size, seed, weights=weights)
    teacher.to(device)
    size = defaults["image_size"]
    data = data or defaults.get("data", "fashion-mnist")
    ds = build_dataset(data, split="val", image_size=size, augment=False, mean=teacher.mean, std=teacher.std)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:images]
    batch = torch.stack([ds[int(i)][0] for i in idx])
    results = [layer_spectra(teacher, batch)]
    results[0].model_name = defaults["name"]
    home = run  # the run directory the results belong to, if any
    if student is not None:
        # a model name is built with the first model's patch size, so both see the same token grid
        s_model, s_run, s_defaults = load_target(
            student, size, seed, patch_size=teacher.patch_size, weights=student_weights
        )
        home = home or s_run
        results.append(layer_spectra(s_model.to(device), batch))
        results[1].model_name = s_defaults["name"]
    out = Path(out_dir) if out_dir else (home.path / "spectrum" if home else Path("spectra") / defaults["name"])
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
        "proposed_pairs": propose_layer_pairs(results[0], results[1] if student else None, pairs),
        "files": [p.name for p in files],
    }
    if student is not None:
        report["mirror_correlation"] = mirror_correlation(results[0], results[1])
    write_text_atomic(out / "spectrum.json", json.dumps(report, indent=2) + "\n")
    report["out_dir"] = str(out)
    return report
