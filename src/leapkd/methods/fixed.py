"""The fixed-target baselines: one target for the whole run.

- the teacher's last block (the default), or the concatenation of its last n blocks
  (`fixed_last_n`; with `cls_weight`, the CLS tokens of those blocks too);
- one chosen teacher level (`fixed_level`): the teacher runs only that deep;
- the average of every teacher level's normed tokens (`fixed_average`);
- every level, student level i against teacher level i (`fixed_all_layers`, the LEAP
  reference's `--all-layers`; `leapkd.methods.layerwise`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from leapkd.config import MethodArgs
from leapkd.errors import LeapkdError
from leapkd.methods.feature import FeatureArgs, FeatureDistillation
from leapkd.methods.feature_io import FeatureTargets, StudentOutput
from leapkd.methods.layerwise import LayerReduce, LayerwiseLoss
from leapkd.methods.registry import register_method
from leapkd.models import Backbone


class FixedArgs(FeatureArgs):
    fixed_last_n: int = Field(
        1,
        ge=1,
        description="the target is the concatenation of the teacher's last n blocks (with `cls_weight`, their CLS"
        ' tokens too: the LEAP paper\'s "last two + CLS" baseline)',
    )
    fixed_level: int | None = Field(
        None,
        ge=1,
        description="the target is this teacher level (1-based) instead of the last; the teacher runs only that "
        "deep, and the FLOPs show it",
    )
    fixed_average: bool = Field(
        False,
        description="the target is the mean of every teacher level's normed tokens (levels of one width and grid)",
    )
    fixed_all_layers: bool = Field(
        False,
        description="every level, student level i (raw) against teacher level i (normed), one projector each, the"
        " CLS term per level with `cls_weight` (the LEAP reference's `--all-layers`); needs models of"
        " the same depth; the teacher runs whole",
    )
    fixed_all_layers_reduce: LayerReduce = Field(
        "sum",
        description="with `fixed_all_layers`: `sum` the per-level losses, or `mean` (the reference's "
        "`--all-layers-mean`)",
    )

    @model_validator(mode="after")
    def _one_target(self) -> FixedArgs:
        chosen = [self.fixed_last_n > 1, self.fixed_level is not None, self.fixed_average, self.fixed_all_layers]
        if sum(chosen) > 1:
            raise ValueError(
                "choose one fixed target: fixed_last_n > 1, fixed_level, fixed_average or fixed_all_layers"
            )
        if self.fixed_all_layers and (self.kd_weight or self.spectral_weight or self.patch_embed_weight):
            raise ValueError(
                "fixed_all_layers takes the feature, CLS and CE terms only (as the reference's "
                "--all-layers): set kd_weight, spectral_weight and patch_embed_weight to 0"
            )
        return self


@register_method("fixed")
class FixedTarget(FeatureDistillation):
    """Distil against one fixed target: the normed patch tokens of the teacher's last
    `fixed_last_n` blocks (concatenated along channels: the projector maps D_s -> n * D_t),
    of level `fixed_level`, the mean over all its levels (`fixed_average`), or every level
    against the student's level of the same index (`fixed_all_layers`)."""

    Args: ClassVar[type[MethodArgs]] = FixedArgs

    def __init__(
        self, args: FixedArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        self.average = args.fixed_average
        self.blocks = _target_levels(args, teacher)
        levels = [teacher.levels[b - 1] for b in self.blocks]
        if not args.fixed_all_layers and len({(lv.width, lv.grid) for lv in levels}) > 1:
            raise LeapkdError(
                f"teacher levels {self.blocks[0]}..{self.blocks[-1]} of {teacher.name} differ in width or grid "
                f"({', '.join(f'{lv.width} on {lv.grid[0]}x{lv.grid[1]}' for lv in levels)}), so they cannot be "
                f"{'averaged' if self.average else 'concatenated'}",
                "use `fixed_last_n` 1 or `fixed_level`, or levels that share a stage",
            )
        width = levels[0].width if self.average else sum(lv.width for lv in levels)
        widths = [] if args.fixed_all_layers else [width]  # all layers: a projector per level pair instead
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_widths=widths)
        self.layerwise = (
            LayerwiseLoss(
                student,
                teacher,
                args.fixed_all_layers_reduce,
                args.projector,
                args.projector_init,
                cls=args.cls_weight > 0,
            )
            if args.fixed_all_layers
            else None
        )

    def target_blocks(self) -> list[int]:
        return self.blocks

    def target_width(self) -> int:
        return self.teacher_levels[self.blocks[0] - 1].width if self.average else super().target_width()

    def combine(self, tokens: list[Tensor]) -> Tensor:
        return torch.stack(tokens).mean(0) if self.average else super().combine(tokens)

    def student_taps(self) -> list[int]:
        return list(range(1, len(self.layerwise.projectors) + 1)) if self.layerwise else super().student_taps()

    @torch.no_grad()
    def targets(self, teacher: Backbone, images: Tensor) -> FeatureTargets:
        if self.layerwise is None:
            return super().targets(teacher, images)
        raw = teacher.forward_levels(images, self.blocks, norm=False)
        normed = {b: teacher.normalize(b, raw[b]) for b in self.blocks}
        last = normed[self.blocks[-1]]
        return FeatureTargets(depth=self.blocks[-1], patch=last.patches, grid=last.grid, layers=normed)

    def _parts(
        self, student: StudentOutput, targets: FeatureTargets, labels: Tensor | None, projected: Tensor | None
    ) -> dict[str, Tensor]:
        parts = super()._parts(student, targets, labels, projected)
        if self.layerwise is not None:
            parts |= self.layerwise(student.taps, targets.layers, cls=self.weights["cls"] > 0)
        return parts


def _target_levels(args: FixedArgs, teacher: Backbone) -> list[int]:
    """The teacher levels of the target (1-based), checked against its depth."""
    L = teacher.num_levels
    if args.fixed_level is not None:
        if args.fixed_level > L:
            raise LeapkdError(
                f"fixed_level is {args.fixed_level}, but the teacher {teacher.name} has {L} levels",
                f"set `fixed_level` between 1 and {L}",
            )
        if args.kd_weight > 0 and args.fixed_level < L:
            raise LeapkdError(
                "kd_weight needs the teacher's last level every step, and fixed_level stops the teacher earlier",
                "drop `kd_weight`, or use `fixed_level` with the last level",
            )
        return [args.fixed_level]
    if args.fixed_average or args.fixed_all_layers:
        return list(range(1, L + 1))
    if args.fixed_last_n > L:
        raise LeapkdError(
            f"fixed_last_n is {args.fixed_last_n}, but the teacher {teacher.name} has {L} levels",
            f"set `fixed_last_n` between 1 and {L}",
        )
    return list(range(L - args.fixed_last_n + 1, L + 1))
