"""The aligner between the student's features and a target: one projector per target width,
and the student's grid resampled to the target's.

A projector maps D_s -> D_target on every position (a linear layer on tokens, which is a
1x1 convolution on maps), or the 2-layer head of LightlyTrain's distillation (Linear to
2048, LayerNorm, GELU, Linear). There is one per distinct target width, created up front in
the order the widths are first met, so they are in the optimizer and in every checkpoint,
and a level-up keeps the projector while the width stays. The student's patch features are
resampled bilinearly to the target's grid first, so patch size and resolution may differ
between the two models.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

from torch import Tensor, nn

from leapkd.models import Features

ProjectorKind = Literal["linear", "mlp"]
ProjectorInit = Literal["torch", "trunc_normal"]
MLP_HIDDEN = 2048


def projector(in_dim: int, out_dim: int, kind: ProjectorKind = "linear", init: ProjectorInit = "torch") -> nn.Module:
    """A linear or 2-layer MLP projector; `init` "trunc_normal": its Linear weights ~ trunc-normal
    (std 0.02), biases 0."""
    if kind == "linear":
        head: nn.Module = nn.Linear(in_dim, out_dim)
    else:
        head = nn.Sequential(
            nn.Linear(in_dim, MLP_HIDDEN), nn.LayerNorm(MLP_HIDDEN), nn.GELU(), nn.Linear(MLP_HIDDEN, out_dim)
        )
    if init == "trunc_normal":
        for layer in head.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
    return head


class Aligner(nn.Module):
    def __init__(
        self,
        student_width: int,
        target_widths: Iterable[int],
        kind: ProjectorKind = "linear",
        init: ProjectorInit = "torch",
    ) -> None:
        super().__init__()
        self.projectors = nn.ModuleDict(
            {str(w): projector(student_width, w, kind, init) for w in dict.fromkeys(target_widths)}
        )
        self._initial = {w: copy.deepcopy(p.state_dict()) for w, p in self.projectors.items()}

    def project(self, x: Tensor, width: int) -> Tensor:
        """(..., D_s) -> (..., width)."""
        return self.projectors[str(width)](x)

    def tokens(self, student: Features, width: int, grid: tuple[int, int]) -> Tensor:
        """The student's patch features on the target's grid, projected to its width: (B, N_t, width)."""
        return self.project(student.resampled(grid).patches, width)

    def reset(self, width: int) -> None:
        """Back to the initial weights of the projector for `width`."""
        self.projectors[str(width)].load_state_dict(self._initial[str(width)])
