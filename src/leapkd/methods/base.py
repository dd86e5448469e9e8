"""Feature distillation shared by `leap` and `fixed`.

A method says which teacher blocks it needs this step (the teacher runs only up to the
deepest), builds the targets from them, and computes the loss of the student's projected
tokens against those targets. The engine calls it; it never calls the engine.

Loss (SPEC section 1): MSE between the projected student patch tokens (final norm, then
a linear projector D_s -> D_target) and the target patch tokens; optional CLS-token MSE
(`cls_weight`, projected student CLS vs the teacher's normed CLS of the target block);
optional patch-embedding MSE (`patch_embed_weight`, layer-normed projected student patch
embeddings vs the teacher's patch embeddings, with a projector of its own).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapkd.metrics import get_metric
from leapkd.models import Backbone


@dataclass
class StudentOutput:
    """The student's tokens for one batch (prefix tokens included)."""

    tokens: Tensor  # final-norm output, (B, prefix + P, D_s)
    embed: Tensor | None  # embedding output, (B, prefix + P, D_s), when a loss needs it
    prefix: int


@dataclass
class Targets:
    """What the teacher produced for one batch."""

    depth: int  # number of teacher blocks that were run
    patch: Tensor  # (B, P, D_target)
    cls: Tensor | None  # (B, D_target) when the CLS loss is on
    embed: Tensor | None  # teacher patch embeddings (B, P, D_t) when that loss is on


@dataclass
class LossOutput:
    loss: Tensor
    parts: dict[str, Tensor]  # each term before weighting, detached
    projected: Tensor  # projected student patch tokens (B, P, D_target), for the metric


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
    ) -> None:
        super().__init__()
        self.num_teacher_blocks = teacher.num_blocks
        self.teacher_prefix = teacher.num_prefix_tokens
        self.projector = nn.Linear(student.embed_dim, target_width)
        self.embed_projector = nn.Linear(student.embed_dim, teacher.embed_dim) if patch_embed_weight > 0 else None
        self._initial_projector = copy.deepcopy(self.projector.state_dict())
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

    @torch.no_grad()
    def targets(self, teacher: Backbone, images: Tensor) -> Targets:
        """Run the teacher up to the deepest target block only, and build the targets."""
        blocks = self.target_blocks()
        wanted = blocks + ([0] if self.patch_embed_weight > 0 else [])
        out = teacher.forward_blocks(images, wanted)
        p = self.teacher_prefix
        patch = torch.cat([out[b][:, p:] for b in blocks], dim=-1)
        cls = torch.cat([out[b][:, 0] for b in blocks], dim=-1) if self.cls_weight > 0 else None
        embed = out[0][:, p:] if self.patch_embed_weight > 0 else None
        return Targets(depth=max(blocks), patch=patch, cls=cls, embed=embed)

    # ----- loss ----------------------------------------------------------------------
    def loss(self, student: StudentOutput, targets: Targets) -> LossOutput:
        projected = self.projector(student.tokens[:, student.prefix :])
        if projected.shape[1] != targets.patch.shape[1]:
            raise ValueError(f"student has {projected.shape[1]} patch tokens, teacher {targets.patch.shape[1]}")
        feature = F.mse_loss(projected.float(), targets.patch.float())
        parts = {"loss_feature": feature}
        total = feature
        if targets.cls is not None:
            cls = F.mse_loss(self.projector(student.tokens[:, 0]).float(), targets.cls.float())
            parts["loss_cls"] = cls
            total = total + self.cls_weight * cls
        if targets.embed is not None and self.embed_projector is not None and student.embed is not None:
            s_embed = self.embed_projector(student.embed[:, student.prefix :])
            s_embed = F.layer_norm(s_embed, s_embed.shape[-1:])
            pe = F.mse_loss(s_embed.float(), targets.embed.float())
            parts["loss_patch_embed"] = pe
            total = total + self.patch_embed_weight * pe
        return LossOutput(total, {k: v.detach() for k, v in parts.items()}, projected)

    # ----- progress metric -------------------------------------------------------------
    @torch.no_grad()
    def progress(self, projected: Tensor, target: Tensor) -> float:
        """The metric between projected student tokens and the target, averaged over ranks.

        float32, no autocast, no gradients; on `metric_images` random images of the batch
        when set (drawn from the method's own seeded generator, so every rank and a resumed
        run draw the same ones).
        """
        if self.metric_images is not None and self.metric_images < projected.shape[0]:
            idx = torch.randperm(projected.shape[0], generator=self._metric_gen)[: self.metric_images]
            idx = idx.to(projected.device)
            projected, target = projected[idx], target[idx]
        value = self.metric_fn(projected.detach(), target.detach())
        return float(self.reduce(value))

    def reset_projector(self) -> None:
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
