"""A method that is not a feature distillation (plain logit KD, subclassing `Method` alone)
runs through the whole engine."""

import torch
import torch.nn.functional as F
from torch import nn

import leapkd
from leapkd.methods import LossOutput, Method, Targets
from leapkd.rundir import read_metrics


@leapkd.register_method("toy-logit-kd")
class LogitKD(Method):
    """KL between the teacher's and the student's class distributions; the teacher's own head."""

    def __init__(self, args, teacher, student, *, num_classes, seed):
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed)
        self.depth = teacher.num_levels
        self.head = nn.Linear(student.width, num_classes)

    @property
    def target_block(self):
        return self.depth

    @torch.no_grad()
    def targets(self, teacher, images):
        last = teacher.forward_levels(images, [self.depth], norm=False)[self.depth]
        return Targets(depth=self.depth, patch=last.patches, grid=last.grid, logits=teacher.classify(last))

    def loss(self, student, targets, labels=None):
        logits = self.head(student.features.pooled())
        kd = F.kl_div(
            F.log_softmax(logits.float(), -1),
            F.log_softmax(targets.logits.float(), -1),
            log_target=True,
            reduction="batchmean",
        )
        return LossOutput(kd, {"loss_kd": kd.detach()})

    def loss_terms(self):
        return ["kd"]

    @property
    def student_classifier(self):
        return self.head


def test_a_logit_kd_method_runs_end_to_end(tiny):
    teacher = {"teacher": "vit_tiny_patch16_224", "teacher_kwargs": {"num_classes": 10, "depth": 3}}
    r = leapkd.distill(name="logit", method="toy-logit-kd", **{**tiny, **teacher})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert len(rows) == 15 and all(row["loss"] == row["loss_kd"] > 0 for row in rows)
    assert r.summary.status == "completed" and r.summary.loss_terms == ["kd"]
    assert rows[-1]["loss"] < rows[0]["loss"]
