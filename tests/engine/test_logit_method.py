"""A method that is not a feature distillation (plain logit KD, subclassing `Method` alone,
with its own teacher pass) runs through the whole engine: the teacher head the engine fits,
gradient accumulation, its progress metric, EMA of its head, its summary part."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import leapkd
from leapkd.methods import LossOutput, Method, TeacherPass
from leapkd.rundir import read_metrics
from leapkd.summary import MethodSummary


@dataclass
class Logits(TeacherPass):
    logits: torch.Tensor


@leapkd.register_method("toy-logit-kd")
class LogitKD(Method[Logits]):
    """KL between the teacher's and the student's class distributions; the teacher's logits come
    from its own classifier, or from the head the engine fits when it has none."""

    log_values = ("agreement",)

    def __init__(self, args, teacher, student, *, num_classes, seed):
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed)
        self.depth = teacher.num_levels
        self.head = nn.Linear(student.width, num_classes)
        if teacher.num_classes != num_classes:  # headless: the engine fits this one before training
            self.teacher_head = nn.Linear(teacher.width, num_classes).requires_grad_(False)
        self.progress_batches = []
        self.agreement = None

    @property
    def target_block(self):
        return self.depth

    @torch.no_grad()
    def targets(self, teacher, images):
        last = teacher.forward_levels(images, [self.depth])[self.depth]
        logits = self.teacher_head(last.pooled()) if self.teacher_head is not None else teacher.classify(last)
        return Logits(depth=self.depth, logits=logits)

    def loss(self, student, images, targets, labels=None):
        logits = self.head(student.forward_to(images, student.num_levels).pooled())
        kd = F.kl_div(
            F.log_softmax(logits.float(), -1),
            F.log_softmax(targets.logits.float(), -1),
            log_target=True,
            reduction="batchmean",
        )
        return LossOutput(kd, {"loss_kd": kd.detach()}, {"logits": logits})

    @torch.no_grad()
    def progress(self, out, targets):
        self.progress_batches.append((out.saved["logits"].shape[0], targets.logits.shape[0]))
        return (out.saved["logits"].argmax(-1) == targets.logits.argmax(-1)).float().mean()

    def after_step(self, metric):
        self.agreement = metric
        return False

    def loss_terms(self):
        return ["kd"]

    def log_row(self):
        return {"agreement": self.agreement}

    def summary(self):
        return MethodSummary(teacher_classifier="fitted" if self.teacher_head is not None else "own")

    @property
    def student_classifier(self):
        return self.head


def test_a_logit_kd_method_with_the_teachers_own_head_runs_end_to_end(tiny):
    teacher = {"teacher": "vit_tiny_patch16_224", "teacher_kwargs": {"num_classes": 10, "depth": 3}}
    r = leapkd.distill(name="logit", method="toy-logit-kd", **{**tiny, **teacher})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert len(rows) == 15 and all(row["loss"] == row["loss_kd"] > 0 for row in rows)
    assert all(row["metric"] == row["agreement"] and 0 <= row["metric"] <= 1 for row in rows)
    assert r.summary.status == "completed" and r.summary.loss_terms == ["kd"]
    assert r.summary.teacher_classifier == "own" and r.summary.start_block is None  # no feature-method fields
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_a_logit_kd_method_gets_its_teacher_head_fitted_and_its_progress_on_whole_steps(tiny, monkeypatch):
    heads = []
    import leapkd.engine.callbacks.teacher_head as teacher_head

    real = teacher_head.TeacherHead.on_train_start

    def spy(self, trainer, module):
        heads.append(module.method.teacher_head.weight.detach().clone())
        real(self, trainer, module)
        heads.append(module.method.teacher_head.weight.detach().clone())
        heads.append(module.method.progress_batches)  # filled as training goes

    monkeypatch.setattr(teacher_head.TeacherHead, "on_train_start", spy)
    options = {**tiny, "epochs": 1, "batch_size": 4, "accumulate_grad_batches": 2, "ema_decay": 0.5}
    r = leapkd.distill(name="logit-fitted", method="toy-logit-kd", **options)
    before, after, progress_batches = heads
    assert not torch.equal(before, after)  # the engine fitted it on the teacher's features
    assert len(progress_batches) == 5 and all(b == (8, 8) for b in progress_batches)  # 2 micro-batches of 4, joined
    assert r.summary.teacher_classifier == "fitted" and r.summary.status == "completed"
    # its own head (averaged with the student: ema_decay) is saved and scored
    assert r.summary.student_classification is not None and (r.run_dir / "student_head.safetensors").is_file()
