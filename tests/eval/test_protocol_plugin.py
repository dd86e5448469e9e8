"""A protocol registered outside the package runs through `leapkd eval` and shows in the report and model card."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import leapkd
from leapkd.cli import main
from leapkd.data import build_dataset
from leapkd.eval.protocol import PROTOCOLS, EvalContext, Protocol
from leapkd.models import load_backbone

ARGS = ["--image-size", "32", "--train-per-class", "4", "--val-per-class", "2", "--no-progress"]


@leapkd.register_protocol("feature-norm")
class FeatureNorm(Protocol):
    """Mean L2 norm of the validation features."""

    headline = True

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        feats, _ = ctx.features("val", ctx.options.val_per_class)
        return {"mean_norm": feats.norm(dim=1).mean().item(), "images": len(feats)}

    def rows(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        return [("mean feature norm", f"{result['mean_norm']:.4f}")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))


def test_registered_with_name_and_default_key():
    assert PROTOCOLS.get("feature-norm") is FeatureNorm
    assert FeatureNorm.name == "feature-norm" and FeatureNorm().key == "feature_norm"


def test_plugin_runs_end_to_end_through_the_cli(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "vit-nano", "--protocols", "knn,feature-norm", "--out-dir", str(out), *ARGS]) == 0
    entry = json.loads((out / "eval.json").read_text())["fashion-mnist"]
    assert 0 <= entry["knn"]["top1"] <= 1
    figure = entry["feature_norm"]["mean_norm"]

    # independently: the seeded random vit-nano, the seeded 2-per-class val subset, CLS of the last block
    torch.manual_seed(0)
    model = load_backbone("vit-nano", 32).eval()
    val = build_dataset(
        "fashion-mnist", split="val", image_size=32, augment=False, mean=model.mean, std=model.std,
        subset_per_class=2, seed=0,
    )  # fmt: skip
    images = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        expected = model(images)[:, 0].norm(dim=1).mean().item()
    assert entry["feature_norm"]["images"] == len(val) == 20
    assert figure == pytest.approx(expected, rel=1e-5)

    printed = capsys.readouterr().out.splitlines()
    row = next(line for line in printed if line.startswith("mean feature norm"))
    assert row.split()[-1] == f"{figure:.4f}"
    assert any(line.startswith("kNN top-1 (k=20)") for line in printed)


def test_unknown_protocol_is_a_clean_error_naming_the_closest(tmp_path, capsys):
    code = main(["eval", "vit-nano", "--protocols", "knn,feature-nrom", "--out-dir", str(tmp_path / "ev"), *ARGS])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: unknown protocol 'feature-nrom'" in err
    fix = err.split("fix:", 1)[1]
    assert "did you mean feature-norm" in fix
    assert not (tmp_path / "ev").exists()  # checked before anything was loaded or written


def test_protocols_that_need_labels_are_refused_on_unlabelled_data(tmp_path):
    with pytest.raises(leapkd.LeapkdError, match="feature-norm needs class labels, and roxford5k has none"):
        leapkd.evaluate(
            "vit-nano", data="roxford5k", protocols=("retrieval", "feature-norm"), data_root=tmp_path,
            image_size=32, out_dir=tmp_path / "ev", progress=False,
        )  # fmt: skip


def test_report_and_model_card_show_the_plugin_rows(tmp_path):
    from leapkd.deploy import export
    from leapkd.report import write_report

    run = leapkd.distill(
        name="r", teacher="vit-nano", allow_random_teacher=True, student="vit-nano", image_size=32,
        subset_per_class=2, batch_size=4, epochs=1, method="fixed", output_dir=str(tmp_path / "runs"), progress=False,
    ).run_dir  # fmt: skip
    r = leapkd.evaluate(str(run), protocols=("feature-norm",), train_per_class=2, val_per_class=2, progress=False)
    value = f"{r['feature_norm']['mean_norm']:.4f}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["fashion-mnist"]["feature_norm"] == r["feature_norm"]  # merged: not a fixed whitelist

    html_path, md_path = write_report(run)
    md = md_path.read_text()
    assert "## Evaluation on fashion-mnist" in md and f"| mean feature norm | {value} |" in md
    assert f"| mean feature norm on fashion-mnist | {value} |" in md  # headline figure in "At a glance"
    assert "<td>mean feature norm</td>" in html_path.read_text()

    text = Path(export(run, "safetensors", out_dir=tmp_path / "export")["card"]).read_text()
    assert "| dataset | mean feature norm |" in text and f"| fashion-mnist | {value} |" in text
