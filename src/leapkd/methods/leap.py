"""LEAP: the target walks through the teacher's blocks as the student catches up (docs/method.md, section 1)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from leapkd.config import MethodArgs
from leapkd.curriculum import ALPHA, LIMITS, MAX_EPOCHS_PER_BLOCK, THRESHOLD, Curriculum, CurriculumConfig
from leapkd.errors import LeapkdError
from leapkd.methods.base import LossOutput
from leapkd.methods.feature import FeatureArgs, FeatureDistillation
from leapkd.methods.feature_io import FeatureTargets
from leapkd.methods.registry import register_method
from leapkd.models import Backbone
from leapkd.summary import MethodSummary


class LeapArgs(FeatureArgs):
    """The curriculum's keys."""

    threshold: Annotated[float, LIMITS["threshold"]] = Field(
        THRESHOLD, description="level up when the smoothed metric reaches this, in (0, 1]"
    )
    alpha: Annotated[float, LIMITS["alpha"]] = Field(
        ALPHA, description="EMA weight of the newest metric; 1 means no smoothing (as in the paper)"
    )
    max_epochs_per_block: Annotated[int, LIMITS["max_epochs_per_block"]] = Field(
        MAX_EPOCHS_PER_BLOCK, description="level up after this many epochs on one block (paper: 5 of 100 epochs)"
    )
    snap_to_last: int | None = Field(
        None, ge=1, description="once the target block is at least this, jump to the last block"
    )
    calibrate: bool = Field(
        True,
        description="start at the block where the random student already matches best (all blocks scanned on the "
        "first batch)",
    )
    reset_projector: bool = Field(False, description="reset the projector to its initial weights at every level-up")
    lr_reset: Literal["none", "peak", "envelope"] = Field(
        "none",
        description="at a level-up, restart a cosine from the `peak` LR or from the global `envelope`'s current "
        "value; `none`: no restarts; a level-up during warm-up restarts nothing (warm-up always "
        "completes)",
    )
    concat_last: bool = Field(
        False,
        description="the target is the current block concatenated with the teacher's last block along channels "
        "(one projector of both widths), the curriculum stopping one block short, the metric on the "
        "current block's channels; the teacher runs whole every step, so it saves no FLOPs (the LEAP "
        "reference's `--curriculum-concat-teacher-last`)",
    )
    curriculum_sync: bool = Field(
        True,
        description="under DDP: one curriculum for all ranks (metric and calibration averaged over them); "
        "`false`: each rank calibrates and levels up on its own shard, as the LEAP reference without "
        "`--curriculum-sync-rank` (which the paper's runs did not pass); the logged metric is then "
        "rank 0's, and `lr_reset` and `reset_projector` are refused (the ranks' copies of the model "
        "would drift apart)",
    )
    lr_restart_style: Literal["leapkd", "reference"] = Field(
        "leapkd",
        description="restarts: `leapkd` (the first step on a new target is the first at the new LR) or "
        "`reference` (the LEAP reference's `--curriculum-lr-reset` / `--curriculum-lr-decay-peak` "
        "exactly: the restart counted from the step it was decided in and applied at the next "
        "scheduler step, warm-up from 0 (none with `warmup_steps 0`, its plain reset), an envelope "
        "without warm-up; with `snap_to_last` it refuses restarts and warm-up, as the reference does;"
        " docs/fidelity.md). The paper's runs restart nothing (`lr_reset none`)",
    )

    @model_validator(mode="after")
    def _no_logit_kd(self) -> LeapArgs:
        if self.kd_weight > 0:
            raise ValueError("kd_weight needs the teacher's last block every step; use method fixed or spectralkd")
        if self.lr_reset != "none" and getattr(self, "lr_interval", "step") == "epoch":  # a run's joined config
            raise ValueError("lr_reset restarts the schedule at a step: it needs lr_interval step")
        if not self.curriculum_sync and (self.lr_reset != "none" or self.reset_projector):
            raise ValueError(
                "with curriculum_sync false the ranks level up at different steps, so lr_reset and "
                "reset_projector would make their copies of the model drift apart: drop them, or "
                "keep curriculum_sync true"
            )
        return self

    @model_validator(mode="after")
    def _reference_snap(self) -> LeapArgs:
        """The reference's snap-to-last runs one cosine from step 0, without warm-up or restarts."""
        if self.lr_restart_style != "reference" or self.snap_to_last is None:
            return self
        epochs = getattr(self, "warmup_epochs", None)  # the run's joined config has the warm-up keys
        warmup = epochs if epochs is not None else getattr(self, "warmup_steps", 0)
        if self.lr_reset != "none" or warmup:
            raise ValueError(
                "the reference's snap_to_last runs one cosine from step 0 without warm-up or restarts: "
                "set lr_reset none and warmup_steps 0 (and warmup_epochs 0 when set)"
            )
        return self


@register_method("leap")
class Leap(FeatureDistillation):
    """Feature distillation against the teacher's current curriculum block.

    The teacher runs blocks 1..b only. The curriculum (`leapkd.curriculum.Curriculum`)
    decides b from the progress metric; its state travels in this module's state_dict.
    """

    Args: ClassVar[type[MethodArgs]] = LeapArgs
    log_values: ClassVar[tuple[str, ...]] = ("ema",)

    def __init__(
        self, args: LeapArgs, teacher: Backbone, student: Backbone, *, num_classes: int | None, seed: int
    ) -> None:
        self.concat_last = args.concat_last
        self.last_width = _concat_width(teacher) if args.concat_last else 0  # channels after the current block's
        blocks = teacher.levels[:-1] if args.concat_last else teacher.levels
        widths = [level.width + self.last_width for level in blocks]
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed, target_widths=widths)
        self.curriculum = Curriculum(
            CurriculumConfig(
                num_blocks=len(blocks),
                threshold=args.threshold,
                alpha=args.alpha,
                max_epochs_per_block=args.max_epochs_per_block,
                snap_to_last=args.snap_to_last,
            )
        )
        self.calibrate = args.calibrate
        self.reset_on_level_up = args.reset_projector
        self.lr_restart = None if args.lr_reset == "none" else args.lr_reset
        self.calibration_scores: list[float] | None = None
        self.progress_per_rank = not args.curriculum_sync

    @property
    def target_block(self) -> int:
        """The curriculum's block (with concat_last the target also holds the last one)."""
        return self.curriculum.block

    def target_blocks(self) -> list[int]:
        block = self.curriculum.block
        return [block, len(self.teacher_levels)] if self.concat_last else [block]

    @torch.no_grad()
    def on_first_batch(self, teacher: Backbone, student: Backbone, images: torch.Tensor) -> int:
        """Calibration: score the random student against every teacher level in one pass
        (through the projector of each level's width, on each level's grid)."""
        if not self.calibrate:
            return 0
        assert self.aligner is not None, "leap always trains the projector"
        L = self.curriculum.num_blocks
        features = self.student_output(student, images).features
        outs = teacher.forward_levels(images, range(1, L + 1))
        scores = []
        for b in range(1, L + 1):
            target = outs[b]
            width = target.patches.shape[-1]  # with concat_last, the projection's first channels
            aligned = self.aligner.tokens(features, width + self.last_width, target.grid)[..., :width]
            score = self.progress_metric.fn(aligned, target.patches)
            scores.append(float(score if self.progress_per_rank else self.reduce(score)))
        self.calibration_scores = scores
        self.curriculum.calibrate(scores)
        return L

    @torch.no_grad()
    def progress(self, out: LossOutput, targets: FeatureTargets) -> torch.Tensor | None:
        """The metric on the current block; with concat_last, on its channels of the projection and target."""
        projected = out.saved.get("projected")
        if not self.concat_last or projected is None:
            return super().progress(out, targets)
        width = targets.patch.shape[-1] - self.last_width
        return super().progress(
            replace(out, saved={"projected": projected[..., :width]}),
            replace(targets, patch=targets.patch[..., :width]),
        )

    def after_step(self, metric: float | None) -> bool:
        return metric is not None and self._moved(self.curriculum.observe(metric))

    def after_epoch(self) -> bool:
        return self._moved(self.curriculum.end_epoch())

    def _moved(self, moved: bool) -> bool:
        if moved and self.reset_on_level_up and self.aligner is not None:
            self.aligner.reset(self.target_width())
        return moved

    def log_row(self) -> dict[str, float | None]:
        return {"ema": self.curriculum.last_ema}

    def summary(self) -> MethodSummary:
        cur = self.curriculum
        return MethodSummary(
            start_block=cur.start_block,
            calibration_scores=self.calibration_scores,
            level_ups=cur.level_up_steps,
            level_up_events=list(cur.events),
            threshold=cur.config.threshold,
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "curriculum": self.curriculum.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.curriculum.load_state_dict(state["curriculum"])


def _concat_width(teacher: Backbone) -> int:
    """The last level's width, checked to be concatenable with every earlier level (same grid)."""
    last = teacher.levels[-1]
    if teacher.num_levels < 2 or any(level.grid != last.grid for level in teacher.levels[:-1]):
        raise LeapkdError(
            f"concat_last concatenates each block with the last one along channels, and the levels of "
            f"{teacher.name} ({teacher.family}) "
            + ("are fewer than 2" if teacher.num_levels < 2 else "differ in grid"),
            "use concat_last with a ViT-family teacher, or drop it",
        )
    return last.width
