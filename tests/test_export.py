"""Exporting a run's student: timm round trip, ONNX parity, model card, errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from leapkd.deploy import export
from leapkd.errors import LeapkdError
from leapkd.models import load_backbone


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leapkd.training import distill

    root = tmp_path_factory.mktemp("export")
    old = os.environ.get("LEAPKD_CACHE")
    os.environ["LEAPKD_CACHE"] = str(root / "cache")
    try:
        distill(
            name="r", teacher="vit-nano", allow_random_teacher=True, student="vit-nano", image_size=32,
            subset_per_class=4, batch_size=8, epochs=1, output_dir=str(root / "runs"), progress=False,
        )  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("LEAPKD_CACHE", None)
        else:
            os.environ["LEAPKD_CACHE"] = old
    return root / "runs" / "r"


def _student(run_dir: Path, size: int = 32):
    return load_backbone("vit-nano", size, weights=run_dir / "student.safetensors", patch_size=16).eval()


def test_timm_round_trip_matches_backbone(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What timm's save_for_hf writes: `local-dir:` loads it with timm alone, and the card is a Hub card."""
    import timm

    result = export(run_dir, "timm")
    out = Path(result["card"]).parent
    assert out == run_dir / "export"
    assert {Path(f).name for f in result["files"]} == {"model.safetensors", "config.json", "README.md"}
    assert not (out / ".timm-export.tmp").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["model_args"]["embed_dim"] == 128
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    images = torch.randn(2, 3, 32, 32)
    backbone = _student(run_dir)
    with torch.no_grad():
        expected = backbone(images)
        assert torch.equal(model.forward_features(images), expected)
        # The snippet in the model card runs as written, from the export directory.
        card = (out / "README.md").read_text()
        snippet = re.search(r"```python\n(import timm.*?)```", card, re.S).group(1)
        monkeypatch.chdir(out)
        scope: dict = {"images": images}
        exec(snippet, scope)
        assert torch.equal(scope["features"], expected)
    assert tuple(scope["model"].pretrained_cfg["mean"]) == backbone.mean
    front = yaml.safe_load(card.split("---")[1])  # the Hub's model-card metadata
    assert front["library_name"] == "timm" and "image-feature-extraction" in front["tags"]


def test_onnx_parity_dynamic_batch(run_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    result = export(run_dir, "onnx", out_dir=tmp_path)
    assert result["exporter"] == "torchscript" and result["opset"] >= 17
    assert result["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    backbone = _student(run_dir)
    for batch in (1, 3):
        images = torch.randn(batch, 3, 32, 32)
        (tokens,) = session.run(["tokens"], {"images": images.numpy()})
        with torch.no_grad():
            assert abs(tokens - backbone(images).numpy()).max() <= 1e-4


def test_safetensors_and_model_card(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export", "checkpoints"))
    summary = json.loads((run / "summary.json").read_text())
    summary["eval"] = {"cifar10": {"knn": {"top1": 0.5, "top5": 0.9}, "linear": {"top1": 0.6}}}
    (run / "summary.json").write_text(json.dumps(summary))
    result = export(run, "safetensors", image_size=48)
    card = Path(result["card"]).read_text()
    steps = f"| steps / epochs | {summary['steps']} /"
    for needle in ("vit-nano", "`leap`", steps, "fashion-mnist", "0.485", "FLOPs", "| cifar10 | 50.00%"):
        assert needle in card
    student = load_backbone("vit-nano", 48, weights=run / "export" / "student.safetensors", patch_size=16)
    assert student.image_size == 48 and student.grid == (3, 3)


def test_errors(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LeapkdError, match="not a finished leapkd run"):
        export(tmp_path, "timm")
    with pytest.raises(LeapkdError, match="did you mean onnx"):
        export(run_dir, "onxx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(LeapkdError, match=re.escape("pip install leapkd[onnx]")):
        export(run_dir, "onnx", out_dir=tmp_path)
