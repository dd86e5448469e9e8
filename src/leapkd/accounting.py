"""FLOP accounting for LEAP runs and their fixed-target baseline (docs/method.md, section 1.7).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode`. In torch 2.14 it has no
formula for the fused attention kernels that run on CPU, so attention counted as zero;
importing this module registers them (once; later imports and reloads are no-ops).
Conventions follow torch's counter: a multiply-add is 2 FLOPs, biases, norms,
softmax and element-wise ops are free. Attention forward is 4·B·H·N²·d (QKᵀ and AV);
its backward is counted as 2x the forward (the four products of the explicit
backward), so a count does not depend on whether the fused or the explicit attention
path ran. torch's own formulas for the CUDA kernels also add the recomputation of QKᵀ
(2.5x); that is an implementation detail of the kernel and is not counted here.

Only `FlopCounterMode` objects created after the import see the new formulas (the
counter copies the registry when it is built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_flop_count,
)

from leapkd.models import Backbone
from leapkd.summary import FlopsSummary

__all__ = [
    "FlopsLedger",
    "count_flops",
    "student_step_flops",
    "teacher_flops_by_depth",
]

_aten = torch.ops.aten


def _sdpa_forward(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Forward attention FLOPs from the q, k, v shapes (B, H, N, d)."""
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _sdpa_backward(
    grad_out_shape: Any,
    query_shape: Any,
    key_shape: Any,
    value_shape: Any,
    *args: Any,
    **kwargs: Any,
) -> int:
    """Backward attention FLOPs: 2x the forward (no recomputation counted)."""
    if tuple(grad_out_shape)[:-1] != tuple(query_shape)[:-1]:
        raise ValueError(f"sdpa backward: grad_out {tuple(grad_out_shape)} does not match query {tuple(query_shape)}")
    return 2 * int(sdpa_flop_count(query_shape, key_shape, value_shape))


# Attention kernels FlopCounterMode leaves at zero in torch 2.14 that may run without a
# GPU: the CPU flash kernel, and the "overrideable" entry point that out-of-tree backends
# (XPU, HPU, PrivateUse1) implement. The math fallback decomposes into counted bmm.
# All four take (grad_out,) query, key, value as their leading arguments.
_MISSING_FORMULAS: dict[str, Callable[..., int]] = {
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_forward,
    "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
    "_scaled_dot_product_fused_attention_overrideable": _sdpa_forward,
    "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_backward,
}


# The CUDA kernels' backward formulas in torch count the recomputation of QK^T (2.5x the
# forward); leapkd counts every backward as 2x its forward, so a step costs the same FLOPs
# whichever kernel (CPU, CUDA flash, memory-efficient, cuDNN, or the explicit math) ran.
_SAME_RULE_ON_GPU: dict[str, Callable[..., int]] = {
    "_scaled_dot_product_flash_attention_backward": _sdpa_backward,
    "_scaled_dot_product_efficient_attention_backward": _sdpa_backward,
    "_scaled_dot_product_cudnn_attention_backward": _sdpa_backward,
}


def _register_attention_formulas() -> list[str]:
    """Register the missing formulas and leapkd's rule for the GPU kernels' backward; an op
    already registered by an earlier call is left as it is. Returns the names registered."""
    added = []
    for name, formula in {**_MISSING_FORMULAS, **_SAME_RULE_ON_GPU}.items():
        op = getattr(_aten, name, None)
        if op is None or getattr(flop_registry.get(op), "_leapkd", False):
            continue
        if name in _MISSING_FORMULAS and op in flop_registry:
            continue  # torch covers it itself
        flop_registry.pop(op, None)
        register_flop_formula(op)(formula)
        flop_registry[op]._leapkd = True
        added.append(name)
    return added


_register_attention_formulas()


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run `fn()` under `FlopCounterMode`; return (total FLOPs, FLOPs per module).

    Module keys are dotted paths rooted at the class name of the outermost module
    *called* (via `__call__`) inside `fn`, e.g. `"TokenBackbone.model.blocks.0.attn.qkv"` for
    `backbone(images)`. A module called directly, not through its parent's `__call__`
    (e.g. `backbone.forward_to(...)` calls `vit.patch_embed` itself), is rooted at its own
    class name (`"PatchEmbed"`, `"Block"`...), so siblings of one class then share a key.
    A parent's count includes its children's. The counter's "Global" entry is the total
    and is not repeated in the dict. Attribution of backward FLOPs to modules is
    unreliable in torch 2.14 (they leak into unrelated modules); the total is exact.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items() if name != "Global"}
    return int(counter.get_total_flops()), per_module


def teacher_flops_by_depth(teacher: Backbone, images: Tensor) -> list[int]:
    """Forward FLOPs of an early-exit teacher pass for every depth, for a batch like `images`.

    Entry b-1 is what `teacher.forward_to(images, b)` costs: everything that runs up to
    level b (embedding, the levels, a stage's downsampling, CaiT's class attention at the
    last level, the normalisation). Each depth is counted as its own no-grad pass on one
    image and scaled by the batch size: every counted operation is linear in the batch.
    """
    one = images[:1]
    with torch.no_grad():
        depths = range(1, teacher.num_levels + 1)
        return [count_flops(partial(teacher.forward_to, one, b))[0] * images.shape[0] for b in depths]


def _leaves(loss: Tensor) -> list[Tensor]:
    """The leaf tensors `loss.backward()` would accumulate gradients into."""
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes
        if isinstance(variable, Tensor):
            found[id(variable)] = variable
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(found.values())


def student_step_flops(step: Callable[[], Tensor]) -> int:
    """FLOPs of one training step: `loss = step()` then `loss.backward()`, both counted.

    `step` must return a scalar loss that requires grad; put only the work that is
    charged to the student in it (a teacher forward inside it is counted too). No
    optimizer step is taken. Side effects are undone: every leaf the backward reached
    gets its previous `.grad` back (None if it had none), and the CPU RNG state is
    restored. Buffers a forward updates in train mode (e.g. BatchNorm stats) are not.
    """
    with torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
        loss = step()
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ValueError("step must return a scalar loss tensor that requires grad")
        leaves = _leaves(loss)
        saved = [None if t.grad is None else t.grad.detach().clone() for t in leaves]
        loss.backward()
    for t, g in zip(leaves, saved):
        t.grad = g
    return int(counter.get_total_flops())


@dataclass
class FlopsLedger:
    """Running FLOP totals of a run against the fixed-last-block baseline.

    `teacher_by_depth[b-1]` is the teacher forward cost at depth b (see
    `teacher_flops_by_depth`) and `student_step` the cost of one student step (see
    `student_step_flops`), both for one batch. The baseline runs the same number of
    steps with the teacher always at depth L.
    """

    teacher_by_depth: list[int]
    student_step: int
    teacher_flops: int = 0
    student_flops: int = 0
    batches: int = 0  # batches charged (an optimizer step of accumulated batches charges each)

    def __post_init__(self) -> None:
        if not self.teacher_by_depth:
            raise ValueError("teacher_by_depth is empty")

    @property
    def num_blocks(self) -> int:
        return len(self.teacher_by_depth)

    def add_step(self, teacher_depth: int, extra_teacher_flops: int = 0) -> None:
        """Charge one step run with the teacher to `teacher_depth` (1..L).

        `extra_teacher_flops` is teacher work outside the per-step forward (e.g. the
        calibration pass); it is charged to this run only, never to the baseline.
        """
        if not 1 <= teacher_depth <= self.num_blocks:
            raise ValueError(f"teacher depth {teacher_depth} is outside 1..{self.num_blocks}")
        self.teacher_flops += self.teacher_by_depth[teacher_depth - 1] + int(extra_teacher_flops)
        self.student_flops += self.student_step
        self.batches += 1

    @property
    def baseline_flops(self) -> int:
        return self.batches * (self.teacher_by_depth[-1] + self.student_step)

    @property
    def saving(self) -> float:
        """1 - (teacher + student) / baseline; 0.0 before the first step."""
        baseline = self.baseline_flops
        if baseline == 0:
            return 0.0
        return 1.0 - (self.teacher_flops + self.student_flops) / baseline

    def state_dict(self) -> dict[str, int]:
        """The running totals (the per-step costs are re-measured on resume)."""
        return {
            "teacher_flops": self.teacher_flops,
            "student_flops": self.student_flops,
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.teacher_flops = int(state["teacher_flops"])
        self.student_flops = int(state["student_flops"])
        self.batches = int(state["batches"])

    def summary(self) -> FlopsSummary:
        return FlopsSummary(
            teacher_flops=self.teacher_flops,
            student_flops=self.student_flops,
            baseline_flops=self.baseline_flops,
            flops_saving=self.saving,
        )
