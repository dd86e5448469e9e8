"""Feature distillation: the loss terms `leap`, `fixed` and `spectralkd` share (docs/method.md, sections 1-2).

A subclass chooses the target blocks; this class composes the terms, each optional by its
weight (`leapkd.losses`):
- feature (`feature_weight`): MSE between the projected student patch tokens (final
  norm, then a linear projector D_s -> D_target) and the target patch tokens;
- CLS (`cls_weight`): projected student CLS vs the teacher's normed CLS of the target block;
- patch embedding (`patch_embed_weight`): the reference's `--embed-loss` on the raw
  patch-projection outputs;
- spectral (`spectral_weight`): the FFT alignment over the (student block, teacher block)
  pairs whose teacher block has run this step (for LEAP: teacher block <= current target);
- cross-entropy on labels (`ce_weight`) through a student linear head on its CLS token;
- logit KD (`kd_weight`): `kd_weight * T^2 * KL(teacher/T || student/T)`, the teacher's
  logits coming from a frozen linear head fitted on its features before training.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from timm.layers import trunc_normal_
from torch import Tensor, nn

from leapkd.config import MethodArgs
from leapkd.errors import LeapkdError
from leapkd.losses import ClsMSE, CrossEntropy, FeatureMSE, KdMode, LogitKD, PatchEmbedLoss, SpectralLoss
from leapkd.methods.align import Aligner, ProjectorInit, ProjectorKind
from leapkd.methods.base import LossOutput, Method
from leapkd.methods.feature_io import FeatureTargets, StudentOutput, student_output
from leapkd.methods.progress import ProgressMetric
from leapkd.models import Backbone, Features
from leapkd.summary import MethodSummary


class FeatureArgs(MethodArgs):
    """Keys of the loss terms and of the progress metric, shared by the feature methods."""

    cls_weight: float = Field(0.0, ge=0, description="weight of the CLS-token MSE (paper: 0.05)")
    patch_embed_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the patch-embedding loss, as the LEAP reference's `--embed-loss`: "
        "MSE(LN_s(P_e(E_s)), LN_t(E_t)) on the raw patch-projection conv outputs, with its own "
        "projector and two trained affine LayerNorms",
    )
    spectral_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the spectral (FFT) loss (paper: 0.2 for DeiT students); default: 0.2 for "
        "`spectralkd`, else 0",
    )
    student_layers: list[int] | None = Field(
        None,
        description="student blocks of the spectral loss's pairs (1-based), e.g. `[1, 2, 5, 6]`; default: the "
        "first 2 + the last ones (up to 6: the paper's pattern, scaled to both depths)",
    )
    teacher_layers: list[int] | None = Field(
        None,
        description="teacher blocks paired with `student_layers` (1-based), e.g. `[1, 2, 11, 12]`; default: the "
        "first 2 + the last ones",
    )
    ce_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the cross-entropy on labels through a student linear head (paper: 1 - alpha = 0.1)",
    )
    kd_weight: float = Field(
        0.0,
        ge=0,
        description="logit KD weight: `kd_weight * T^2 * KL` of the teacher's and the student's softmaxes at "
        "temperature T; a headless teacher gets a linear head fitted on its frozen features first "
        "(paper: alpha = 0.9)",
    )
    kd_temperature: float = Field(1.0, gt=0, description="logit KD temperature T (in `kd_weight * T^2 * KL`)")
    kd_mode: KdMode = Field(
        "soft",
        description="logit KD: `soft` (T^2 KL) or `hard` (DeiT's: cross-entropy against the teacher's top class)",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="label smoothing of the cross-entropy (`ce_weight`) (SpectralKD: 0.1)"
    )
    teacher_classifier: Literal["auto", "own", "fitted"] = Field(
        "auto",
        description="logit KD's teacher logits: `own` (the teacher's classifier, timm's head on its last level: "
        "any ViT, DeiT (both heads averaged), DINOv2, Eva, CaiT, Swin or CNN teacher built with its "
        "head, `--teacher_kwargs '{num_classes: N}'`, and weights that hold it (a file without the "
        "head leaves the backbone alone); EfficientNet and GhostNet, whose heads follow a final "
        "convolution, do not expose theirs), `fitted` (a linear head fitted on its frozen features), "
        "`auto` (own when its classes are the data's)",
    )
    metric: Literal["cka", "cosine"] = Field(
        "cka", description="progress metric: `cka` (linear CKA) or `cosine` (mean row-wise cosine)"
    )
    metric_images: int | None = Field(
        None, ge=1, description="compute the metric on this many images of each batch (bounds its cost)"
    )
    projector: ProjectorKind = Field(
        "linear",
        description="one projector per target width: `linear`, or `mlp` (LightlyTrain's 2-layer head: hidden "
        "2048, LayerNorm, GELU)",
    )
    projector_init: ProjectorInit = Field(
        "torch",
        description="the projectors' Linear weights: torch's default, or `trunc_normal` (std 0.02, bias 0: the "
        "LEAP reference's)",
    )

    @model_validator(mode="after")
    def _check_pairs(self) -> FeatureArgs:
        s, t = self.student_layers, self.teacher_layers
        if (s is None) != (t is None) or (s is not None and t is not None and len(s) != len(t)):
            raise ValueError("student_layers and teacher_layers must be given together, with the same length")
        return self


def default_spectral_pairs(student_blocks: int, teacher_blocks: int) -> list[tuple[int, int]]:
    """The paper's pattern, "the first two and the last six", scaled to the two depths.

    Student blocks 1, 2 pair with teacher blocks 1, 2; the student's last k blocks pair
    with the teacher's last k, k = min(6, student_blocks - 2, teacher_blocks - 2). For the
    paper's 12-block student and 24-block teacher this gives its (1, 2, 7..12) x (1, 2, 19..24)
    (1-based), i.e. the (0, 1, 6..11) x (0, 1, 18..23) of the paper.
    """
    k = max(0, min(6, student_blocks - 2, teacher_blocks - 2))
    first = [(b, b) for b in range(1, min(2, student_blocks, teacher_blocks) + 1)]
    last = [(student_blocks - k + i, teacher_blocks - k + i) for i in range(1, k + 1)]
    return first + last


def spectral_pairs(args: FeatureArgs, student: Backbone, teacher: Backbone) -> list[tuple[int, int]]:
    """The configured layer pairs (default: the paper's pattern), checked against both depths."""
    if args.spectral_weight == 0:
        return []
    if args.student_layers is not None and args.teacher_layers is not None:
        pairs = [(int(s), int(t)) for s, t in zip(args.student_layers, args.teacher_layers)]
    else:
        pairs = default_spectral_pairs(student.num_levels, teacher.num_levels)
    for s, t in pairs:
        if not (1 <= s <= student.num_levels and 1 <= t <= teacher.num_levels):
            raise LeapkdError(
                f"spectral pair (student {s}, teacher {t}) is out of range "
                f"(student 1..{student.num_levels}, teacher 1..{teacher.num_levels})",
                "choose student_layers and teacher_layers within the models' levels",
            )
    return pairs


class FeatureDistillation(Method[FeatureTargets]):
    """Aligner + loss terms + progress metric; subclasses choose the target levels.

    A target of several levels (fixed, last n) is their concatenation along channels, so
    they must share a grid; `target_widths` lists every width a target of this method can
    have (one projector each).
    """

    Args: ClassVar[type[MethodArgs]] = FeatureArgs
    feature_weight: ClassVar[float] = 1.0

    def __init__(
        self,
        args: FeatureArgs,
        teacher: Backbone,
        student: Backbone,
        *,
        num_classes: int | None,
        seed: int,
        target_widths: list[int],
    ) -> None:
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed)
        self.teacher_levels = teacher.levels
        self.weights = {
            "feature": self.feature_weight,
            "cls": args.cls_weight,
            "patch_embed": args.patch_embed_weight,
            "spectral": args.spectral_weight,
            "ce": args.ce_weight,
            "kd": args.kd_weight,
        }
        self.spectral_pairs = spectral_pairs(args, student, teacher)
        if (args.ce_weight > 0 or args.kd_weight > 0) and not num_classes:
            raise LeapkdError("ce_weight / kd_weight need labelled data", "use a dataset with classes")
        if args.cls_weight > 0 and not student.num_prefix_tokens:
            raise LeapkdError(
                f"cls_weight needs a CLS token, and the student {student.name} ({student.family}) has none",
                "set `cls_weight` 0, or use a student with a CLS token (ViT, DeiT, DINOv2, Eva)",
            )
        # creation order fixes the random initialisation: student head, teacher head, projectors, the rest
        heads = args.ce_weight > 0 or args.kd_weight > 0
        self.student_head = _classifier(student.width, num_classes) if heads and num_classes else None
        self.own_teacher_classifier = _own_classifier(args, teacher, num_classes)
        # frozen; its weights come from the engine (fitted before training) or a checkpoint
        kd_classes = num_classes if args.kd_weight > 0 and not self.own_teacher_classifier else None
        self.teacher_head = nn.Linear(teacher.width, kd_classes).requires_grad_(False) if kd_classes else None
        # only modules that receive gradients exist (DDP refuses parameters without one)
        uses_projector = (self.feature_weight > 0 or args.cls_weight > 0) and bool(target_widths)
        self.aligner = (
            Aligner(student.width, target_widths, args.projector, args.projector_init) if uses_projector else None
        )
        self.feature_loss = FeatureMSE()
        self.cls_loss = ClsMSE()
        self.patch_embed_loss = (
            PatchEmbedLoss(_embed_width(student), _embed_width(teacher)) if args.patch_embed_weight else None
        )
        self.spectral_loss = SpectralLoss()
        self.ce_loss = CrossEntropy(args.label_smoothing)
        self.kd_loss = LogitKD(args.kd_temperature, args.kd_mode)
        self.progress_metric = ProgressMetric(args.metric, args.metric_images, seed)

    # ----- declarations ------------------------------------------------------------
    def summary(self) -> MethodSummary:
        """The target's start (it does not move here) and the teacher classifier of logit KD."""
        own = "own" if self.own_teacher_classifier else "fitted"
        teacher_classifier = own if self.weights["kd"] > 0 else None
        return MethodSummary(
            start_block=self.target_block, level_ups=[], level_up_events=[], teacher_classifier=teacher_classifier
        )

    def loss_terms(self) -> list[str]:
        terms = [t for t, w in self.weights.items() if w > 0]
        return [t for t in terms if t != "spectral" or self.spectral_pairs]

    def target_blocks(self) -> list[int]:
        """Teacher levels (1..L) whose normalised features form this step's target."""
        raise NotImplementedError

    @property
    def target_block(self) -> int:
        return max(self.target_blocks())

    def target_width(self) -> int:
        return sum(self.teacher_levels[b - 1].width for b in self.target_blocks())

    def combine(self, tokens: list[Tensor]) -> Tensor:
        """One target from the target levels' tokens (patch or CLS): their concatenation along channels."""
        return torch.cat(tokens, dim=-1)

    @property
    def student_classifier(self) -> nn.Module | None:
        return self.student_head

    def active_pairs(self) -> list[tuple[int, int]]:
        """Spectral pairs whose teacher level runs this step."""
        depth = self.target_block
        return [(s, t) for s, t in self.spectral_pairs if t <= depth]

    def student_taps(self) -> list[int]:
        """Student levels whose un-normalised features the loss needs this step."""
        return sorted({s for s, _ in self.active_pairs()})

    def student_output(self, student: Backbone, images: Tensor) -> StudentOutput:
        """The student's features this step's loss reads."""
        return student_output(student, images, self.student_taps(), self.patch_embed_loss is not None)

    # ----- targets and loss -----------------------------------------------------------
    @torch.no_grad()
    def targets(self, teacher: Backbone, images: Tensor) -> FeatureTargets:
        """Run the teacher up to the deepest level needed only, and build the targets."""
        blocks = self.target_blocks()
        spectral = sorted({t for _, t in self.active_pairs()})
        raw = teacher.forward_levels(images, blocks + spectral, norm=False)
        normed = {b: teacher.normalize(b, raw[b]) for b in blocks}
        logits = None
        last = len(self.teacher_levels)  # kd is refused for leap and fixed_level: the last level always ran
        if self.own_teacher_classifier:
            logits = teacher.classify(raw[last])
        elif self.teacher_head is not None:
            logits = self.teacher_head(normed[last].pooled())
        cls = None
        if self.weights["cls"] > 0:
            cls = self.combine([_cls_of(normed[b], teacher, b) for b in blocks])
        return FeatureTargets(
            depth=max(blocks + spectral),
            patch=self.combine([normed[b].patches for b in blocks]),
            grid=normed[blocks[0]].grid,
            cls=cls,
            embed=teacher.patch_projection(images) if self.patch_embed_loss is not None else None,
            spectral={t: raw[t] for t in spectral},
            logits=logits,
        )

    def loss(
        self, student: Backbone, images: Tensor, targets: FeatureTargets, labels: Tensor | None = None
    ) -> LossOutput:
        return self.loss_from(self.student_output(student, images), targets, labels)

    def loss_from(self, student: StudentOutput, targets: FeatureTargets, labels: Tensor | None = None) -> LossOutput:
        """The loss of the student's features against the targets."""
        width = targets.patch.shape[-1]
        projected = None
        if self.aligner is not None:
            projected = self.aligner.tokens(student.features, width, targets.grid)
        parts = self._parts(student, targets, labels, projected)
        total = student.features.patches.new_zeros((), dtype=torch.float32)
        for term, value in parts.items():
            total = total + self.weights[term] * value
        saved = {"projected": projected} if projected is not None else {}
        return LossOutput(total, {f"loss_{k}": v.detach() for k, v in parts.items()}, saved)

    def _parts(
        self, student: StudentOutput, targets: FeatureTargets, labels: Tensor | None, projected: Tensor | None
    ) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        if projected is not None and self.weights["feature"] > 0:
            parts["feature"] = self.feature_loss(projected, targets.patch)
        cls = student.features.cls
        if targets.cls is not None and self.aligner is not None and cls is not None:
            parts["cls"] = self.cls_loss(self.aligner.project(cls, targets.cls.shape[-1]), targets.cls)
        if self.patch_embed_loss is not None and targets.embed is not None and student.embed is not None:
            embed = student.embed.resampled(targets.embed.grid)
            parts["patch_embed"] = self.patch_embed_loss(embed.patches, targets.embed.patches)
        pairs = self.active_pairs()
        if pairs:
            parts["spectral"] = self.spectral_loss(student.taps, targets.spectral, pairs)
        if self.student_head is not None:
            logits = self.student_head(student.features.pooled())
            if self.weights["ce"] > 0 and labels is not None:
                parts["ce"] = self.ce_loss(logits, labels)
            if self.weights["kd"] > 0 and targets.logits is not None:
                parts["kd"] = self.kd_loss(logits, targets.logits)
        return parts

    # ----- progress metric -------------------------------------------------------------
    @torch.no_grad()
    def progress(self, out: LossOutput, targets: FeatureTargets) -> Tensor | None:
        """The metric between the aligned student tokens and the target on this rank
        (`ProgressMetric`); None when nothing is projected (no feature loss)."""
        projected = out.saved.get("projected")
        if self.weights["feature"] == 0 or projected is None:
            return None
        return self.progress_metric(projected, targets.patch)

    # ----- state saved inside the module's state_dict (hence in every checkpoint) -----
    def get_extra_state(self) -> dict[str, Any]:
        return self.progress_metric.state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.progress_metric.load_state(state)


def _own_classifier(args: FeatureArgs, teacher: Backbone, num_classes: int | None) -> bool:
    """Whether logit KD takes the teacher's own classifier (else a fitted linear head); refuses `own`
    when the teacher has none or one for other classes."""
    if args.kd_weight <= 0 or args.teacher_classifier == "fitted":
        return False
    matches = teacher.num_classes > 0 and teacher.num_classes == num_classes
    if args.teacher_classifier == "own" and not matches:
        has = f"a classifier of {teacher.num_classes} classes" if teacher.num_classes else "no classifier it exposes"
        raise LeapkdError(
            f"teacher_classifier own: the teacher {teacher.name} has {has}, the data {num_classes} classes",
            "build the teacher with its head (`teacher_kwargs` '{num_classes: N}' and weights that hold it; "
            "EfficientNet and GhostNet do not expose theirs), or use `teacher_classifier` fitted",
        )
    return matches


def _classifier(width: int, classes: int) -> nn.Linear:
    """The student's classification head, initialised as timm initialises a ViT's or a Swin's:
    weights truncated-normal with std 0.02, bias zero."""
    head = nn.Linear(width, classes)
    trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


def _cls_of(features: Features, teacher: Backbone, level: int) -> Tensor:
    cls = features.cls
    if cls is None:
        raise LeapkdError(
            f"the CLS loss needs a CLS token at teacher level {level}, and {teacher.name} ({teacher.family}) "
            "has none there",
            "set `cls_weight` 0 for this teacher",
        )
    return cls


def _embed_width(teacher: Backbone) -> int:
    """The width of the teacher's raw patch projection (a LeapkdError for families without one)."""
    probe = teacher.patch_projection(torch.zeros(1, 3, teacher.image_size, teacher.image_size))
    return int(probe.patches.shape[-1])
