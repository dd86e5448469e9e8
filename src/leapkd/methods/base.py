"""Feature distillation shared by `leap` and `fixed`.

A method says which teacher blocks it needs this step (the teacher runs only up to the
deepest), builds the targets from them, and computes the loss of the student's projected
tokens against those targets. The engine calls it; it never calls the engine.

Loss terms, each optional by its weight:
- feature (SPEC section 1, weight `feature_weight`): MSE between the projected student
  patch tokens (final norm, then a linear projector D_s -> D_target) and the target
  patch tokens;
- CLS (`cls_weight`): projected student CLS vs the teacher's normed CLS of the target block;
- patch embedding (`patch_embed_weight`, the reference's `--embed-loss`): the raw
  patch-projection conv outputs of both models (before position embedding, no prefix
  tokens); MSE(LN_s(P_e(E_s)), LN_t(E_t)) with P_e a Linear D_s -> D_t of its own and
  LN_s, LN_t LayerNorms with learnable affine; all three are trained;
- spectral (SPEC section 2, `spectral_weight`): `leapkd.losses.spectral_loss` over the
  (student block, teacher block) pairs whose teacher block has run this step (for LEAP:
  teacher block <= the current target block);
- cross-entropy on labels (`ce_weight`) through a student linear head on its CLS token;
- logit KD (`kd_weight`): kd_weight * T^2 * KL(teacher/T || student/T), the teacher's
  logits coming from a frozen linear head fitted on its features (`fit_teacher_head`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapkd.errors import LeapkdError
from leapkd.losses import spectral_pairs_loss
from leapkd.metrics import get_metric
from leapkd.models import Backbone


@dataclass
class StudentOutput:
    """The student's tokens for one batch (prefix tokens included)."""

    tokens: Tensor  # final-norm output, (B, prefix + P, D_s)
    embed: Tensor | None  # raw patch projection (B, P, D_s), when the patch-embedding loss is on
    prefix: int
    blocks: dict[int, Tensor] = field(default_factory=dict)  # un-normed outputs for spectral pairs


@dataclass
class Targets:
    """What the teacher produced for one batch."""

    depth: int  # number of teacher blocks that were run
    patch: Tensor  # (B, P, D_target)
    cls: Tensor | None  # (B, D_target) when the CLS loss is on
    embed: Tensor | None  # teacher raw patch projection (B, P, D_t) when that loss is on
    spectral: dict[int, Tensor] = field(default_factory=dict)  # un-normed tokens per teacher block
    logits: Tensor | None = None  # teacher logits (B, classes) when logit KD is on


@dataclass
class LossOutput:
    loss: Tensor
    parts: dict[str, Tensor]  # each term before weighting, detached
    projected: Tensor | None  # projected student patch tokens (B, P, D_target), for the metric


def identity_reduce(x: Tensor) -> Tensor:
    return x


class FeatureDistillation(nn.Module):
    """Projector + loss + progress metric; subclasses choose the target blocks."""

    name = "feature"

    def __init__(
        self,
        teacher: Backbone,
        student: Backbone,
        *,
        target_width: int,
        cls_weight: float = 0.0,
        patch_embed_weight: float = 0.0,
        metric: str = "cka",
        metric_images: int | None = None,
        seed: int = 0,
        feature_weight: float = 1.0,
        spectral_weight: float = 0.0,
        spectral_pairs: Sequence[tuple[int, int]] = (),
        num_classes: int | None = None,
        ce_weight: float = 0.0,
        kd_weight: float = 0.0,
        kd_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_teacher_blocks = teacher.num_blocks
        self.teacher_prefix = teacher.num_prefix_tokens
        self.grid = teacher.grid_size
        self.feature_weight = feature_weight
        self.spectral_weight = spectral_weight
        self.spectral_pairs = [(int(s), int(t)) for s, t in spectral_pairs] if spectral_weight > 0 else []
        for s, t in self.spectral_pairs:
            if not (1 <= s <= student.num_blocks and 1 <= t <= teacher.num_blocks):
                raise LeapkdError(
                    f"spectral pair (student {s}, teacher {t}) is out of range "
                    f"(student 1..{student.num_blocks}, teacher 1..{teacher.num_blocks})",
                    "choose student_layers and teacher_layers within the models' blocks",
                )
        self.ce_weight, self.kd_weight, self.kd_temperature = ce_weight, kd_weight, kd_temperature
        needs_head = ce_weight > 0 or kd_weight > 0
        if needs_head and not num_classes:
            raise LeapkdError("ce_weight / kd_weight need labelled data", "use a dataset with classes")
        self.student_head = nn.Linear(student.embed_dim, num_classes) if needs_head and num_classes else None
        # frozen; its weights come from set_teacher_head (fitted before training) or a checkpoint
        self.teacher_head = (
            nn.Linear(teacher.embed_dim, num_classes).requires_grad_(False) if kd_weight > 0 and num_classes else None
        )
        # only modules that receive gradients exist (DDP refuses parameters without one)
        uses_projector = feature_weight > 0 or cls_weight > 0
        self.projector = nn.Linear(student.embed_dim, target_width) if uses_projector else None
        self.embed_projector = nn.Linear(student.embed_dim, teacher.embed_dim) if patch_embed_weight > 0 else None
        self.embed_norm_student = nn.LayerNorm(teacher.embed_dim) if patch_embed_weight > 0 else None
        self.embed_norm_teacher = nn.LayerNorm(teacher.embed_dim) if patch_embed_weight > 0 else None
        self._initial_projector = copy.deepcopy(self.projector.state_dict()) if self.projector else None
        self.cls_weight = cls_weight
        self.patch_embed_weight = patch_embed_weight
        self.metric_fn = get_metric(metric)
        self.metric_images = metric_images
        self._metric_gen = torch.Generator().manual_seed(seed + 7919)
        # Averages a scalar over all ranks; the engine installs the distributed one.
        self.reduce: Callable[[Tensor], Tensor] = identity_reduce

    # ----- what the teacher must run -------------------------------------------------
    def target_blocks(self) -> list[int]:
        """Teacher blocks (1..L) whose normed outputs form this step's target."""
        raise NotImplementedError

    @property
    def needs_student_embed(self) -> bool:
        return self.patch_embed_weight > 0

    @property
    def needs_teacher_head(self) -> bool:
        """Logit KD needs teacher logits: a head fitted on the teacher's features."""
        return self.teacher_head is not None

    def active_pairs(self) -> list[tuple[int, int]]:
        """Spectral pairs whose teacher block runs this step."""
        depth = self.target_block
        return [(s, t) for s, t in self.spectral_pairs if t <= depth]

    def student_blocks(self) -> list[int]:
        """Student blocks whose un-normed outputs the loss needs."""
        return sorted({s for s, _ in self.active_pairs()})

    @torch.no_grad()
    def targets(self, teacher: Backbone, images: Tensor) -> Targets:
        """Run the teacher up to the deepest target block only, and build the targets."""
        blocks = self.target_blocks()
        spectral = sorted({t for _, t in self.active_pairs()})
        wanted = blocks + spectral
        raw = teacher.forward_blocks(images, wanted, norm=False)
        normed = {b: teacher.norm(raw[b]) for b in blocks}
        p = self.teacher_prefix
        patch = torch.cat([normed[b][:, p:] for b in blocks], dim=-1)
        cls = torch.cat([normed[b][:, 0] for b in blocks], dim=-1) if self.cls_weight > 0 else None
        embed = teacher.patch_projection(images) if self.patch_embed_weight > 0 else None
        logits = None
        if self.teacher_head is not None and self.kd_weight > 0:
            last = self.num_teacher_blocks
            logits = self.teacher_head(normed[last][:, 0])  # kd is refused for leap: the last block always ran
        return Targets(
            depth=max(wanted),
            patch=patch,
            cls=cls,
            embed=embed,
            spectral={t: raw[t] for t in spectral},
            logits=logits,
        )

    # ----- loss ----------------------------------------------------------------------
    def loss(self, student: StudentOutput, targets: Targets, labels: Tensor | None = None) -> LossOutput:
        projected = self.projector(student.tokens[:, student.prefix :]) if self.projector is not None else None
        if projected is not None and projected.shape[1] != targets.patch.shape[1]:
            raise ValueError(f"student has {projected.shape[1]} patch tokens, teacher {targets.patch.shape[1]}")
        parts: dict[str, Tensor] = {}
        total = student.tokens.new_zeros((), dtype=torch.float32)
        if projected is not None and self.feature_weight > 0:
            parts["loss_feature"] = F.mse_loss(projected.float(), targets.patch.float())
            total = total + self.feature_weight * parts["loss_feature"]
        if targets.cls is not None and self.projector is not None:
            cls = F.mse_loss(self.projector(student.tokens[:, 0]).float(), targets.cls.float())
            parts["loss_cls"] = cls
            total = total + self.cls_weight * cls
        if targets.embed is not None and student.embed is not None:
            assert self.embed_projector and self.embed_norm_student and self.embed_norm_teacher
            s_embed = self.embed_norm_student(self.embed_projector(student.embed))
            t_embed = self.embed_norm_teacher(targets.embed)
            pe = F.mse_loss(s_embed.float(), t_embed.float())
            parts["loss_patch_embed"] = pe
            total = total + self.patch_embed_weight * pe
        pairs = self.active_pairs()
        if pairs:
            parts["loss_spectral"] = spectral_pairs_loss(
                student.blocks, targets.spectral, pairs, student.prefix, self.teacher_prefix, self.grid
            )
            total = total + self.spectral_weight * parts["loss_spectral"]
        if self.student_head is not None:
            logits = self.student_head(student.tokens[:, 0]).float()
            if self.ce_weight > 0 and labels is not None:
                parts["loss_ce"] = F.cross_entropy(logits, labels)
                total = total + self.ce_weight * parts["loss_ce"]
            if self.kd_weight > 0 and targets.logits is not None:
                T = self.kd_temperature
                kl = F.kl_div(
                    F.log_softmax(logits / T, dim=-1),
                    F.log_softmax(targets.logits.float() / T, dim=-1),
                    reduction="batchmean",
                    log_target=True,
                )
                parts["loss_kd"] = kl * (T * T)
                total = total + self.kd_weight * parts["loss_kd"]
        return LossOutput(total, {k: v.detach() for k, v in parts.items()}, projected)

    @torch.no_grad()
    def set_teacher_head(self, state: dict[str, Tensor]) -> None:
        """Install the weights of the frozen teacher head (a state dict of an nn.Linear)."""
        assert self.teacher_head is not None, "set_teacher_head without logit KD"
        self.teacher_head.load_state_dict(state)

    # ----- progress metric -------------------------------------------------------------
    @torch.no_grad()
    def progress(self, projected: Tensor | None, target: Tensor) -> float | None:
        """The metric between projected student tokens and the target, averaged over ranks.

        float32, no autocast, no gradients; on `metric_images` random images of the batch
        when set (drawn from the method's own seeded generator, so every rank and a resumed
        run draw the same ones).
        None when the projector is not trained (no feature loss).
        """
        if self.feature_weight == 0 or projected is None:
            return None
        if self.metric_images is not None and self.metric_images < projected.shape[0]:
            idx = torch.randperm(projected.shape[0], generator=self._metric_gen)[: self.metric_images]
            idx = idx.to(projected.device)
            projected, target = projected[idx], target[idx]
        value = self.metric_fn(projected.detach(), target.detach())
        return float(self.reduce(value))

    def reset_projector(self) -> None:
        if self.projector is not None and self._initial_projector is not None:
            self.projector.load_state_dict(self._initial_projector)

    # ----- curriculum hooks (no-ops for fixed targets) ----------------------------------
    def start(self, teacher: Backbone, student: StudentOutput, images: Tensor) -> None:
        """Called on the first batch of a fresh run."""

    def after_step(self, metric: float) -> bool:
        """Called after every optimizer step; True if the target moved."""
        return False

    def after_epoch(self) -> bool:
        """Called at every epoch end; True if the target moved."""
        return False

    @property
    def target_block(self) -> int:
        return max(self.target_blocks())

    # ----- state saved inside the module's state_dict (hence in every checkpoint) -----
    def get_extra_state(self) -> dict:
        return {"metric_generator": self._metric_gen.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self._metric_gen.set_state(state["metric_generator"])
