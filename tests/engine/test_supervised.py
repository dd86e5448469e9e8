"""Supervised distillation (SpectralKD's setting): the loss arithmetic, the student's own head,
its top-1 at each evaluation and at the end, and its round trip through export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leapkd import distill
from leapkd.deploy import export
from leapkd.errors import LeapkdError
from leapkd.eval.in_training import StudentScorer
from leapkd.methods import StudentOutput, build_method, load_config
from leapkd.models import Features, load_backbone, load_head_file, load_student_file

SUPERVISED = dict(method="spectralkd", ce_weight=0.1, kd_weight=0.9, label_smoothing=0.1)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_supervised_loss_arithmetic_with_a_headed_teacher(mode):
    teacher = load_backbone("vit-nano", 32).eval()
    student = load_backbone("vit-nano", 32, patch_size=teacher.patch_size)
    cfg = load_config(None, {**SUPERVISED, "kd_temperature": 2.0, "kd_mode": mode, "spectral_weight": 0.0})
    method = build_method(cfg, teacher, student, 10)
    torch.manual_seed(0)
    method.teacher_head.load_state_dict({"weight": torch.randn(10, teacher.width), "bias": torch.randn(10)})
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 3, 9])
    targets = method.targets(teacher, images)
    features = student.forward_to(images, student.num_levels)
    out = method.loss_from(StudentOutput(features, None, {}), targets, labels)
    student_logits = method.student_classifier(features.pooled())
    teacher_logits = method.teacher_head(teacher.forward_to(images, teacher.num_levels).pooled())
    assert torch.allclose(targets.logits, teacher_logits, atol=1e-5)  # the teacher's head gives the KD targets
    ce = F.cross_entropy(student_logits, labels, label_smoothing=0.1)
    if mode == "soft":
        kd = 4.0 * F.kl_div(
            F.log_softmax(student_logits / 2, -1), F.softmax(teacher_logits / 2, -1), reduction="batchmean"
        )
    else:
        kd = F.cross_entropy(student_logits, teacher_logits.argmax(-1))
    assert out.parts["loss_ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert out.parts["loss_kd"] == pytest.approx(kd.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(0.1 * ce.item() + 0.9 * kd.item(), rel=1e-5)


def test_student_head_is_scored_at_each_evaluation_kept_at_its_best_and_exported(tiny, tmp_path):
    r = distill(name="sup", eval_every=5, eval_images_per_class=5, eval_metric="student_top1", **SUPERVISED, **tiny)
    evaluation, final = r.summary.evaluation, r.summary.student_classification
    assert all("student_top1" in e and "student_top5" in e for e in evaluation.history)
    assert evaluation.best["student_top1"] == max(e["student_top1"] for e in evaluation.history)
    assert final.top1 == pytest.approx(evaluation.last["student_top1"], abs=1e-6)  # the same student and images
    assert (r.run_dir / "student_head.safetensors").is_file() and (
        r.run_dir / "student_best_head.safetensors"
    ).is_file()
    # the round trip: the exported student and head give the top-1 the run reported
    result = export(r.run_dir, "safetensors", out_dir=tmp_path / "out")
    assert str(tmp_path / "out" / "student_head.safetensors") in result["files"]
    student = load_student_file(tmp_path / "out" / "student.safetensors")
    head, classes = load_head_file(tmp_path / "out" / "student_head.safetensors")
    assert len(classes) == 10 and head.out_features == 10
    scorer = StudentScorer("fashion-mnist", 64, student.mean, student.std, 5, classifier=True)
    assert scorer.classify(student, head)["top1"] == pytest.approx(final.top1, abs=1e-6)
    assert "classification head" in (tmp_path / "out" / "README.md").read_text()


def test_student_metric_without_a_head_is_refused(tiny):
    with pytest.raises(LeapkdError) as err:
        distill(name="nohead", eval_every=5, eval_metric="student_top1", **tiny)
    assert "trains no student head" in str(err.value) and "`ce_weight`" in err.value.fix
    with pytest.raises(LeapkdError) as err:  # nothing measured at all: the hint still reads
        distill(name="nothing", eval_every=5, eval_metric="student_top1", eval_protocols=[], **tiny)
    assert "add knn to `eval_protocols`" in err.value.fix


def test_the_student_head_starts_as_timms():
    """Weights normal with std 0.02 (timm truncates at +-2, absolute), bias zero, as timm initialises a classifier."""
    torch.manual_seed(0)
    teacher = load_backbone("vit-nano", 32, patch_size=8)
    method = build_method(load_config(None, SUPERVISED), teacher, load_backbone("vit-nano", 32, patch_size=8), 10)
    weight = method.student_head.weight
    assert torch.count_nonzero(method.student_head.bias) == 0  # PyTorch's Linear: uniform, not zero
    assert weight.std().item() == pytest.approx(0.02, rel=0.15)  # PyTorch's: 1 / sqrt(3 * 128) = 0.051


def test_features_pooled_for_the_head_are_the_cls_token():
    feats = Features(patches=torch.randn(2, 4, 8), grid=(2, 2), prefix=torch.randn(2, 1, 8))
    assert torch.equal(feats.pooled(), feats.prefix[:, 0])


HEADED = dict(teacher="vit_tiny_patch16_224", teacher_kwargs={"num_classes": 10, "depth": 2, "embed_dim": 48,
              "num_heads": 2}, image_size=32)  # fmt: skip


def test_the_teachers_own_classifier_gives_the_kd_logits(tiny):
    teacher = load_backbone(HEADED["teacher"], 32, model_kwargs=HEADED["teacher_kwargs"]).eval()
    student = load_backbone("vit-nano", 32, patch_size=teacher.patch_size)
    method = build_method(load_config(None, SUPERVISED), teacher, student, 10)
    assert method.own_teacher_classifier and method.teacher_head is None  # nothing to fit
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(method.targets(teacher, images).logits, teacher.model(images), atol=1e-5)
    r = distill(name="own", **SUPERVISED, **{**tiny, **HEADED, "epochs": 1})
    assert r.summary.teacher_classifier == "own" and r.summary.teacher_head_seconds == 0.0


@pytest.mark.parametrize(
    "name,kwargs",
    [("swin_tiny_patch4_window7_224", {"embed_dim": 24, "num_heads": [1, 2, 2, 4], "depths": [1, 1, 2, 1]}),
     ("resnet18", {})],
)  # fmt: skip
def test_a_hierarchical_teachers_own_classifier_gives_the_kd_logits(name, kwargs):
    teacher = load_backbone(name, 64, model_kwargs={"num_classes": 10, **kwargs}).eval()
    student = load_backbone("vit-nano", 64, patch_size=8)
    method = build_method(load_config(None, SUPERVISED), teacher, student, 10)
    assert method.own_teacher_classifier
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(method.targets(teacher, images).logits, teacher.model(images), atol=1e-5)


def test_a_classifier_for_other_classes_is_fitted_over_or_refused():
    kwargs = {**HEADED["teacher_kwargs"], "num_classes": 7}
    teacher = load_backbone(HEADED["teacher"], 32, model_kwargs=kwargs).eval()
    student = load_backbone("vit-nano", 32, patch_size=teacher.patch_size)
    auto = build_method(load_config(None, SUPERVISED), teacher, student, 10)
    assert not auto.own_teacher_classifier and auto.teacher_head is not None  # auto: a fitted head instead
    with pytest.raises(LeapkdError, match="a classifier of 7 classes, the data 10 classes"):
        build_method(load_config(None, {**SUPERVISED, "teacher_classifier": "own"}), teacher, student, 10)
