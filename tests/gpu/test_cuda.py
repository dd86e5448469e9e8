"""leapkd on a CUDA device: where tensors live, the precision `auto` picks, the teacher's
dtype, the step's synchronisations, exact resume, evaluation and export, and the CKA metric
and level-up decisions against the CPU's."""

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from leapkd.curriculum import Curriculum, CurriculumConfig
from leapkd.deploy import export
from leapkd.engine.callbacks import StopOnSignal
from leapkd.engine.module import DistillModule
from leapkd.eval.runner import evaluate
from leapkd.hardware import resolve_precision
from leapkd.methods import FeatureDistillation, build_method, load_config
from leapkd.metrics import linear_cka
from leapkd.models import freeze, load_backbone, load_student_file
from leapkd.rundir import read_metrics
from leapkd.training import distill


def test_auto_precision_is_bf16_mixed_from_ampere_on():
    precision, why = resolve_precision("auto", "cuda")
    if torch.cuda.get_device_capability(0) >= (8, 0):
        assert precision == "bf16-mixed" and "8.0" in why
    else:
        assert precision == "32"


def test_every_tensor_of_the_step_is_on_the_gpu_and_the_teacher_in_bf16(tiny_cuda, monkeypatch):
    seen: list[str] = []
    real_loss = FeatureDistillation.loss

    def loss(self, student, targets, labels=None):
        tensors = [student.features.patches, targets.patch, *(t for t in [labels, targets.cls] if t is not None)]
        seen.extend(f"{t.device.type}:{t.dtype}" for t in tensors[:2])
        assert all(t.device.type == "cuda" for t in tensors)
        out = real_loss(self, student, targets, labels)
        assert out.loss.device.type == "cuda" and all(v.device.type == "cuda" for v in out.parts.values())
        return out

    monkeypatch.setattr(FeatureDistillation, "loss", loss)
    result = distill(name="placement", method="leap", precision="auto", cls_weight=0.05, **tiny_cuda)
    summary = result.summary
    assert summary.precision == "bf16-mixed" and summary.teacher_dtype == "bfloat16"
    assert summary.peak_memory_bytes and summary.peak_memory_bytes > 0  # read before teardown
    assert summary.teacher_seconds > 0 and summary.student_seconds > 0 and summary.metric_seconds > 0
    assert seen and all(s.startswith("cuda:") for s in seen)
    assert all(v.device.type == "cpu" for v in load_file(result.run_dir / "student.safetensors").values())


def test_an_optimizer_step_synchronises_with_the_host_once(tiny_cuda, monkeypatch):
    """torch's sync debug mode warns at every operation that waits for the device."""
    per_step: list[int] = []
    real_step = DistillModule.training_step

    def training_step(self, batch, batch_idx):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                real_step(self, batch, batch_idx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        if self.global_step > 1:  # the first step also runs LEAP's calibration
            per_step.append(sum("synchroniz" in str(w.message) for w in caught))

    monkeypatch.setattr(DistillModule, "training_step", training_step)
    distill(name="syncs", method="leap", precision="bf16-mixed", grad_clip=1.0, **tiny_cuda)
    assert per_step and set(per_step) == {1}, per_step


def test_resume_on_the_gpu_continues_within_the_stated_tolerance(tiny_cuda, monkeypatch):
    """Exact on the CPU; on CUDA the backward of attention and of the patch embedding uses
    atomics, so sums are not bit-reproducible: the same decisions and losses within 1e-3
    relative. Random erasing and drop path draw on the device: its generator must be resumed."""
    settings = {**tiny_cuda, "precision": "32", "aug_erasing": 0.5, "student_kwargs": {"drop_path_rate": 0.1}}
    full = distill(name="full", method="leap", threshold=0.6, **settings)
    real = DistillModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 6:
            next(c for c in self.trainer.callbacks if isinstance(c, StopOnSignal)).requested = True
        return real(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(DistillModule, "training_step", interrupted)
        distill(name="part", method="leap", threshold=0.6, **settings)
    resumed = distill(name="part", method="leap", threshold=0.6, resume=True, **settings)
    a, b = read_metrics(full.run_dir / "metrics.csv"), read_metrics(resumed.run_dir / "metrics.csv")
    assert [r["target_block"] for r in a] == [r["target_block"] for r in b]
    for ra, rb in zip(a, b):
        assert float(rb["loss"]) == pytest.approx(float(ra["loss"]), rel=1e-3)
    wa, wb = load_file(full.run_dir / "student.safetensors"), load_file(resumed.run_dir / "student.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-3, rtol=1e-3) for k in wa)


def test_evaluation_and_onnx_export_of_a_gpu_trained_student(tiny_cuda, tmp_path):
    run = distill(name="ev", method="fixed", precision="32", **{**tiny_cuda, "epochs": 1}).run_dir
    small = dict(protocols=("knn",), train_per_class=4, val_per_class=4, progress=False, precision="32")
    on_gpu = evaluate(str(run), accelerator="cuda", out_dir=tmp_path / "gpu", **small)
    on_cpu = evaluate(str(run), accelerator="cpu", out_dir=tmp_path / "cpu", **small)
    assert on_gpu["knn"]["top1"] == pytest.approx(on_cpu["knn"]["top1"], abs=1 / 40)  # at most one image apart
    import onnxruntime as ort

    export(run, "onnx", out_dir=tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "student.onnx"), providers=["CPUExecutionProvider"])
    student = load_student_file(run / "student.safetensors").cuda().eval()
    images = torch.randn(3, 3, 64, 64)
    (tokens,) = session.run(["tokens"], {"images": images.numpy()})
    with torch.no_grad():
        assert np.abs(tokens - student(images.cuda()).cpu().numpy()).max() <= 1e-3
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_cka_and_the_level_up_decisions_agree_with_the_cpu():
    torch.manual_seed(0)
    x, y = torch.randn(512, 64), torch.randn(512, 64) + 0.5 * torch.randn(512, 1)
    assert float(linear_cka(x.cuda(), y.cuda())) == pytest.approx(float(linear_cka(x, y)), abs=1e-5)
    cfg = load_config(None, {"method": "leap", "teacher": "vit-nano", "student": "vit-nano", "image_size": 32})
    teacher = freeze(load_backbone("vit-nano", 32))
    student = load_backbone("vit-nano", 32)
    images = torch.randn(16, 3, 32, 32)
    scores = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(1)
        method = build_method(cfg, teacher.to(device), student.to(device), num_classes=10).to(device)
        method.on_first_batch(teacher, student, images.to(device))
        scores[device] = method.calibration_scores
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=1e-4)
    decisions = {}
    for device, trace in scores.items():
        curriculum = Curriculum(CurriculumConfig(num_blocks=len(trace), threshold=0.85))
        curriculum.calibrate(trace)
        decisions[device] = [curriculum.block, *(curriculum.observe(s) for s in trace)]
    assert decisions["cuda"] == decisions["cpu"]
