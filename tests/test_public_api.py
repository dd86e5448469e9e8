"""The public API: every name DESIGN.md promises is the function, whatever was imported before."""

import importlib
import inspect
import pkgutil

import torch

import leapkd

PUBLIC_FUNCTIONS = (
    "distill",
    "evaluate",
    "export",
    "load_backbone",
    "linear_cka",
    "spectral_loss",
    "revisited_map",
)


def import_every_submodule() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(leapkd.__path__, "leapkd.") if m.name != "leapkd.__main__"]
    for name in names:
        importlib.import_module(name)
    return names


def test_public_names_stay_functions_after_every_submodule_is_imported():
    modules = import_every_submodule()
    assert "leapkd.cli" in modules and "leapkd.training" in modules
    for name in PUBLIC_FUNCTIONS:
        assert name in leapkd.__all__, name
        assert inspect.isfunction(getattr(leapkd, name)), f"leapkd.{name} is {getattr(leapkd, name)!r}"


def test_each_public_function_runs(tmp_path, monkeypatch):
    """The README's example twice in one process, then every other public function once."""
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    import_every_submodule()
    tiny = dict(
        teacher="vit-nano",
        student="vit-nano",
        allow_random_teacher=True,
        image_size=32,
        subset_per_class=2,
        batch_size=4,
        epochs=1,
        method="fixed",
        output_dir=str(tmp_path / "runs"),
        progress=False,
    )
    first = leapkd.distill(name="a", **tiny)
    second = leapkd.distill(name="b", **tiny)  # failed when leapkd.distill had become the module
    assert first.summary.steps == second.summary.steps == 5

    result = leapkd.evaluate(
        str(second.run_dir), protocols=("knn",), train_per_class=4, val_per_class=2, progress=False
    )
    assert 0.0 <= result["knn"]["top1"] <= 1.0
    exported = leapkd.export(second.run_dir, "safetensors", out_dir=tmp_path / "export")
    assert all(f.is_file() for f in map(type(tmp_path), exported["files"]))

    backbone = leapkd.load_backbone("vit-nano", 32)
    feats = backbone.forward_to(torch.randn(2, 3, 32, 32), 2)
    assert leapkd.linear_cka(feats.patches, feats.patches).item() > 0.999
    maps = torch.randn(2, 8, 4, 4)
    assert leapkd.spectral_loss(maps, maps).item() == 0.0
    ranks = torch.tensor([[0], [1], [2]])  # one query; database image 0 ranked first
    gnd = [{"easy": [0], "hard": [], "junk": []}]
    assert leapkd.revisited_map(ranks, gnd)["easy"]["map"] == 1.0
