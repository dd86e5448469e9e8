"""Every method on representative cross-family pairs: 3 steps each, on tiny random-init models."""

import math

import pytest

from leapkd import LeapkdError
from leapkd.rundir import read_metrics
from leapkd.training import distill

SWIN = {"embed_dim": 24, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4]}
PAIRS = {
    "vit->cnn": dict(teacher="vit-nano", student="resnet18", image_size=32),
    "swin->cnn": dict(
        teacher="swin_tiny_patch4_window7_224", teacher_kwargs=SWIN, student="convnext_atto", image_size=64
    ),
    "cait->deit": dict(
        teacher="cait_xxs24_224",
        teacher_kwargs={"depth": 4},
        student="deit_tiny_patch16_224",
        student_kwargs={"depth": 3},
        image_size=32,
    ),
    "cnn->vit": dict(teacher="resnet18", student="vit-nano", image_size=32),
    "patch14->patch16": dict(
        teacher="vit_small_patch14_dinov2",
        teacher_kwargs={"depth": 3},
        student="deit_tiny_patch16_224",
        student_kwargs={"depth": 2},
        image_size=112,
    ),
}


@pytest.mark.parametrize("method", ["leap", "fixed", "spectralkd"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_three_steps_of_every_method_on_cross_family_pairs(tmp_path, pair, method):
    settings = dict(
        PAIRS[pair],
        allow_random_teacher=True,
        data="fashion-mnist",
        subset_per_class=2,
        batch_size=4,
        max_steps=3,
        warmup_steps=1,
        output_dir=str(tmp_path),
        progress=False,
    )
    extra = {"threshold": 0.5} if method == "leap" else {}  # a curriculum key: leap's own
    r = distill(name=f"{pair}-{method}", method=method, **extra, **settings)
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [0, 1, 2]
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert r.summary.teacher_flops > 0 and r.summary.student_flops > 0
    if method == "leap":  # the teacher runs only as deep as the target
        assert all(row["teacher_blocks_run"] == row["target_block"] for row in rows)
        assert r.summary.flops_saving < 1  # 3 steps: calibration's full teacher pass may outweigh the exits
    else:
        assert r.summary.flops_saving == 0.0
    if method == "spectralkd":
        assert all(row["loss_spectral"] > 0 for row in rows)
    else:
        assert all(0.0 <= row["metric"] <= 1.0 + 1e-6 for row in rows)
    assert (r.run_dir / "student.safetensors").is_file() and (r.run_dir / "report.html").is_file()


def test_terms_a_family_lacks_are_refused_with_a_reason(tmp_path):
    base = dict(teacher="vit-nano", allow_random_teacher=True, image_size=32, subset_per_class=2, batch_size=4,
                max_steps=1, output_dir=str(tmp_path), progress=False)  # fmt: skip
    with pytest.raises(LeapkdError, match="needs a CLS token, and the student resnet18"):
        distill(name="a", student="resnet18", cls_weight=0.1, **base)
    with pytest.raises(LeapkdError, match="no patch-projection conv"):
        distill(name="b", student="resnet18", patch_embed_weight=0.1, **base)
    with pytest.raises(LeapkdError, match="differ in width or grid"):
        distill(name="c", method="fixed", fixed_last_n=2, **{**base, "teacher": "resnet18", "student": "vit-nano"})


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A finished ViT -> CNN run (resnet18 student at 32 px)."""
    out = tmp_path_factory.mktemp("cnn")
    settings = dict(PAIRS["vit->cnn"], allow_random_teacher=True, subset_per_class=4, batch_size=8, max_steps=4)
    return distill(name="cnn", method="fixed", output_dir=str(out), progress=False, **settings).run_dir


def test_a_cnn_student_is_evaluated_exported_and_analysed(cnn_run, tmp_path, monkeypatch):
    import json

    import onnxruntime as ort
    import torch

    from leapkd.analysis.command import spectrum
    from leapkd.deploy import export
    from leapkd.eval.runner import evaluate
    from leapkd.models import load_student_file

    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    r = evaluate(str(cnn_run), protocols=("knn", "linear", "retrieval", "cka-map"), train_per_class=4,
                 val_per_class=2, cka_images=8, progress=False)  # fmt: skip
    assert 0 <= r["knn"]["top1"] <= 1 and 0 <= r["linear"]["top1"] <= 1 and 0 <= r["retrieval"]["class_map"] <= 1
    matrix = r["cka_map"]["matrix"]  # resnet18 levels x vit-nano levels, on a common grid
    assert len(matrix) == 5 and len(matrix[0]) == 6 and all(0 <= v <= 1 for row in matrix for v in row)

    student = load_student_file(cnn_run / "student.safetensors")
    assert student.family == "cnn" and student.num_levels == 5
    timm_export = export(cnn_run, "timm", out_dir=tmp_path / "timm")
    assert timm_export["max_abs_diff"] == 0.0 and timm_export["timm_name"] == "resnet18"
    onnx_export = export(cnn_run, "onnx", out_dir=tmp_path / "onnx")
    assert onnx_export["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "onnx" / "student.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 32, 32)
    (tokens,) = session.run(["tokens"], {"images": images.numpy()})
    with torch.no_grad():
        assert tokens.shape == (3, 1, 512) and abs(tokens - student.eval()(images).numpy()).max() <= 1e-4

    report = spectrum("swin_tiny_patch4_window7_224", student=str(cnn_run), image_size=64, images=4, pairs=3,
                      out_dir=tmp_path / "spectrum")  # fmt: skip
    saved = json.loads((tmp_path / "spectrum" / "spectrum.json").read_text())
    assert [len(m["layer_intensity"]) for m in saved["models"]] == [12, 5]  # Swin blocks, ResNet stages
    assert len(report["proposed_pairs"]) == 3 and math.isfinite(report["mirror_correlation"])


@pytest.mark.parametrize(
    "student,kwargs,size",
    [
        ("swin_tiny_patch4_window7_224", SWIN, 64),
        ("cait_xxs24_224", {"depth": 2}, 32),
        ("vit_small_patch16_dinov3", {"depth": 2}, 32),
        ("deit_tiny_distilled_patch16_224", {"depth": 2}, 32),
        ("mobilenetv4_conv_small", None, 32),
    ],
)
def test_students_of_every_family_export_to_timm_and_onnx_with_parity(tmp_path, student, kwargs, size):
    from leapkd.deploy import export

    r = distill(name="s", method="fixed", teacher="vit-nano", allow_random_teacher=True, student=student,
                student_kwargs=kwargs, image_size=size, subset_per_class=2, batch_size=4, max_steps=1,
                output_dir=str(tmp_path), progress=False)  # fmt: skip
    assert export(r.run_dir, "timm", out_dir=tmp_path / "timm")["max_abs_diff"] == 0.0
    assert export(r.run_dir, "onnx", out_dir=tmp_path / "onnx")["max_abs_diff"] <= 1e-4
