"""`leapkd eval` end to end on tiny models."""

import json

import pytest
import torch

from leapkd.eval.cka_map import cka_map
from leapkd.eval.runner import evaluate
from leapkd.models import load_backbone

SMALL = dict(data="fashion-mnist", image_size=32, train_per_class=6, val_per_class=4, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))


def test_cka_map_of_a_model_against_itself_has_unit_diagonal():
    model = load_backbone("vit-nano", 32, patch_size=8)
    m = cka_map(model, model, torch.randn(6, 3, 32, 32))
    assert m.shape == (6, 6)
    torch.testing.assert_close(torch.diagonal(m), torch.ones(6), atol=1e-5, rtol=0)
    assert torch.allclose(m, m.T, atol=1e-5)


def test_backbone_by_name_all_protocols(tmp_path):
    out = tmp_path / "ev"
    r = evaluate(
        "vit-nano", protocols=("knn", "linear", "retrieval", "cka-map"), reference="vit-nano", out_dir=out, **SMALL
    )
    for key in ("knn", "linear", "retrieval", "cka_map"):
        assert key in r
    assert 0 <= r["knn"]["top1"] <= 1 and 0 <= r["linear"]["top1"] <= 1 and 0 <= r["retrieval"]["class_map"] <= 1
    assert (out / "eval.json").is_file() and (out / "cka_map.png").is_file() and (out / "cka_map.csv").is_file()
    assert json.loads((out / "eval.json").read_text())["fashion-mnist"]["knn"] == r["knn"]


def test_same_inputs_same_numbers_and_cache_reused(tmp_path, monkeypatch):
    first = evaluate("vit-nano", out_dir=tmp_path / "a", **SMALL)
    from leapkd.models import Backbone

    def no_forward(*args, **kwargs):
        raise AssertionError("features were extracted again instead of read from the cache")

    monkeypatch.setattr(Backbone, "forward_levels", no_forward)
    second = evaluate("vit-nano", out_dir=tmp_path / "b", **SMALL)
    for key in ("knn", "linear", "retrieval"):
        assert first[key] == second[key]


def test_several_blocks_come_from_one_pass_and_match_one_at_a_time(tmp_path, monkeypatch):
    from leapkd.models import Backbone

    passes = []
    real = Backbone.forward_levels

    def counted(self, images, levels, norm=True):
        passes.append(tuple(levels))
        return real(self, images, levels, norm)

    monkeypatch.setattr(Backbone, "forward_levels", counted)
    r = evaluate("vit-nano", protocols=("knn", "linear"), block=[2, 6], out_dir=tmp_path / "m", **SMALL)
    assert set(r["blocks"]) == {2, 6} and passes and set(passes) == {(2, 6)}  # every batch served both
    recorded = json.loads((tmp_path / "m" / "eval.json").read_text())
    assert set(recorded) == {"fashion-mnist @ block 2", "fashion-mnist @ block 6"}
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "fresh-cache"))  # extract again, one level at a time
    for b in (2, 6):
        alone = evaluate("vit-nano", protocols=("knn", "linear"), block=b, out_dir=tmp_path / f"b{b}", **SMALL)
        assert alone["knn"] == r["blocks"][b]["knn"] and alone["linear"] == r["blocks"][b]["linear"]
    assert r["blocks"][2]["knn"] != r["blocks"][6]["knn"]


def test_bf16_autocast_with_workers_gives_features_close_to_fp32():
    from leapkd.data import build_dataset
    from leapkd.feature_cache import extract_features

    model = load_backbone("vit-nano", 32, patch_size=8)
    data = build_dataset("fashion-mnist", "val", 32, augment=False, subset_per_class=3)
    full, labels = extract_features(model, data, progress=False)
    fast, same_labels = extract_features(model, data, progress=False, autocast_dtype=torch.bfloat16, num_workers=1)
    assert torch.equal(labels, same_labels) and fast.dtype == torch.float32
    assert not torch.equal(full, fast)  # bf16 really ran
    assert torch.nn.functional.cosine_similarity(full, fast).min() > 0.99


def test_two_devices_need_gpus(tmp_path, capsys):
    from leapkd.cli import main

    code = main(["eval", "vit-nano", "--devices", "2", "--accelerator", "cpu", "--no-progress",
                 "--out-dir", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs CUDA GPUs" in err and "fix:" in err and not (tmp_path / "x").exists()


def _tiny_run(tmp_path):
    from leapkd.training import distill

    return distill(
        name="r",
        teacher="vit-nano",
        allow_random_teacher=True,
        student="vit-nano",
        image_size=32,
        subset_per_class=4,
        batch_size=8,
        epochs=1,
        output_dir=str(tmp_path / "runs"),
        progress=False,
    )


def test_run_directory_gets_eval_json_and_summary(tmp_path):
    run = _tiny_run(tmp_path)
    r = evaluate(str(run.run_dir), protocols=("knn", "cka-map"), train_per_class=6, val_per_class=4, progress=False)
    assert r["data"] == "fashion-mnist" and r["image_size"] == 32
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["eval"]["fashion-mnist"]["knn"] == r["knn"]
    assert (run.run_dir / "eval.json").is_file() and (run.run_dir / "cka_map.png").is_file()
    assert summary["method"] == "leap"  # the run's own figures are kept
    # a later call with other protocols adds to what is there
    evaluate(str(run.run_dir), protocols=("linear",), train_per_class=6, val_per_class=4, progress=False)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert {"knn", "linear", "cka_map"} <= set(summary["eval"]["fashion-mnist"])
    book = json.loads((run.run_dir / "eval.json").read_text())
    assert {"knn", "linear", "cka_map"} <= set(book["fashion-mnist"])


def test_student_file_target(tmp_path):
    run = _tiny_run(tmp_path)
    r = evaluate(str(run.run_dir / "student.safetensors"), protocols=("knn",), out_dir=tmp_path / "s", **SMALL)
    assert r["model"]["embed_dim"] == 128 and r["model"]["family"] == "vit"


def test_unknown_protocol():
    from leapkd import LeapkdError

    with pytest.raises(LeapkdError, match="unknown protocol"):
        evaluate("vit-nano", protocols=("knn", "retreival"), **SMALL)


def test_revisited_oxford_layout_end_to_end(tmp_path):
    import pickle

    from PIL import Image

    base = tmp_path / "roxford5k"
    (base / "jpg").mkdir(parents=True)
    colours = [(250, 10, 10), (240, 20, 20), (10, 10, 250), (20, 20, 240)]
    for i, c in enumerate(colours):
        Image.new("RGB", (40, 30), c).save(base / "jpg" / f"im{i}.jpg")
    gnd = [
        {"bbx": [0, 0, 20, 20], "easy": [1], "hard": [], "junk": [0]},
        {"bbx": [5, 5, 30, 25], "easy": [3], "hard": [2], "junk": []},
    ]
    with (base / "gnd_roxford5k.pkl").open("wb") as f:
        pickle.dump({"imlist": [f"im{i}" for i in range(4)], "qimlist": ["im0", "im2"], "gnd": gnd}, f)
    r = evaluate(
        "vit-nano", data="roxford5k", data_root=tmp_path, image_size=32, out_dir=tmp_path / "o", progress=False
    )
    assert set(r["retrieval"]) == {"easy", "medium", "hard"} and r["transform"] == "center-crop"  # the reference's
    assert all(0 <= v <= 1 for s in r["retrieval"].values() for v in s.values())
    assert "roxford5k" in json.loads((tmp_path / "o" / "eval.json").read_text())


def test_model_name_with_weights_is_evaluated_with_those_weights(tmp_path, monkeypatch):
    """`leapkd eval NAME --weights FILE` and `leapkd spectrum NAME --weights FILE` load the file."""
    import json

    from leapkd.cli import main
    from leapkd.models import load_backbone, save_student_file
    from leapkd.sources import load_source

    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(123)
    trained = load_backbone("vit-nano", 32)
    weights = save_student_file(trained, tmp_path / "w.safetensors")
    loaded, _, _ = load_source("vit-nano", 32, weights=weights)
    random, _, _ = load_source("vit-nano", 32)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    assert not torch.equal(random.model.pos_embed, trained.model.pos_embed)

    args = ["--image-size", "32", "--train-per-class", "4", "--val-per-class", "2", "--no-progress"]
    out = ["--out-dir", str(tmp_path / "a")]
    assert main(["eval", "vit-nano", "--weights", str(weights), "--protocols", "knn", *out, *args]) == 0
    assert main(["eval", str(weights), "--protocols", "knn", "--out-dir", str(tmp_path / "b"), *args]) == 0
    a = json.loads((tmp_path / "a" / "eval.json").read_text())["fashion-mnist"]
    b = json.loads((tmp_path / "b" / "eval.json").read_text())["fashion-mnist"]
    assert a["weights"] == str(weights) and a["knn"] == b["knn"]

    spec = ["--image-size", "32", "--images", "4", "--pairs", "2"]
    assert main(["spectrum", "vit-nano", "--weights", str(weights), "--out-dir", str(tmp_path / "s1"), *spec]) == 0
    assert main(["spectrum", str(weights), "--out-dir", str(tmp_path / "s2"), *spec]) == 0
    s1 = json.loads((tmp_path / "s1" / "spectrum.json").read_text())["models"][0]["layer_intensity"]
    s2 = json.loads((tmp_path / "s2" / "spectrum.json").read_text())["models"][0]["layer_intensity"]
    assert s1 == s2


def test_cka_map_reference_weights_are_used(tmp_path, monkeypatch):
    from leapkd.eval.runner import evaluate
    from leapkd.models import load_backbone, save_student_file

    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(5)
    weights = save_student_file(load_backbone("vit-nano", 32), tmp_path / "ref.safetensors")
    common = dict(image_size=32, protocols=("cka-map",), cka_images=8, progress=False)
    same = evaluate(
        str(weights), reference="vit-nano", reference_weights=str(weights), out_dir=tmp_path / "x", **common
    )
    other = evaluate(str(weights), reference="vit-nano", out_dir=tmp_path / "y", **common)
    diagonal = [same["cka_map"]["matrix"][i][i] for i in range(6)]
    assert min(diagonal) > 0.999  # the reference is the target itself: identical features block by block
    assert [other["cka_map"]["matrix"][i][i] for i in range(6)] != diagonal
