"""Evaluation during training (`eval_every`): the figures, the best student, early stopping.

Rank 0 scores the student (the EMA student when there is one) before the first step, on
schedule and after the last step; the others wait for the result, which is broadcast so
every rank records the same history and takes the same decisions (best checkpoint, early
stop). An evaluation never changes training: the RNG state is restored afterwards and the
student is put back in training mode, so a run with evaluations trains the same weights
as one without.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning as L
import torch
from torch import nn

from leapkd.engine.callbacks.ema import StudentEma, kept_head, kept_student
from leapkd.engine.callbacks.per_student import StudentCallback
from leapkd.engine.lane import Lane
from leapkd.engine.module import DistillModule
from leapkd.hardware import autocast_dtype
from leapkd.models import Backbone, head_file_of, save_head_file, save_student_file


class Scorer(Protocol):
    """Scores a student (and its classifier, when the method trains one): {figure: value} for each
    of `figures` (e.g. "knn_top1", "student_top1")."""

    @property
    def figures(self) -> list[str]: ...

    def __call__(
        self, student: Backbone, autocast_dtype: torch.dtype | None, classifier: nn.Module | None
    ) -> dict[str, float]: ...


class EvaluateDuringTraining(StudentCallback):
    """Every `every` optimizer steps (`unit` "steps") or at the last step of every `every`-th
    epoch ("epochs"); the figure `metric` picks the best student, saved to `best_path`, and
    early stopping stops after `patience` evaluations without a rise above `min_delta`."""

    def __init__(
        self,
        scorer: Scorer,
        every: int,
        unit: Literal["steps", "epochs"],
        metric: str,
        best_path: Path,
        patience: int | None = None,
        min_delta: float = 0.0,
        ema: StudentEma | None = None,
        lane: int = 0,
    ) -> None:
        self.lane_index = lane
        self.scorer, self.every, self.unit, self.metric = scorer, every, unit, metric
        self.best_path, self.patience, self.min_delta, self.ema = best_path, patience, min_delta, ema
        self.history: list[dict[str, float]] = []  # {"step", "flops", "wall_seconds", "seconds", figures...}
        self.best: dict[str, float] | None = None  # the history entry of the best evaluation
        self.since_best = 0  # evaluations since the best one
        self.early_stop: dict[str, Any] | None = None  # {"step", "reason"} once early stopping fired
        self.improved = False  # the evaluation of this step was a new best (read by the checkpoint policy)

    @property
    def seconds(self) -> float:
        """Wall seconds spent evaluating, over the whole run."""
        return sum(entry["seconds"] for entry in self.history)

    @property
    def latest(self) -> dict[str, float] | None:
        return self.history[-1] if self.history else None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == 0 and not self.history:  # the starting point (not on resume)
            self._evaluate(trainer, pl_module, flops=0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.improved = False
        record = self.lane(pl_module).record
        if record is None:  # mid-accumulation or a skipped batch
            return
        if self._due(trainer) or _is_last_step(trainer):
            entry = self._evaluate(trainer, pl_module, record.flops)
            record.evaluation = {k: v for k, v in entry.items() if k not in ("step", "flops", "wall_seconds")}

    def _due(self, trainer: L.Trainer) -> bool:
        if self.unit == "steps":
            return trainer.global_step % self.every == 0
        return bool(trainer.is_last_batch) and (trainer.current_epoch + 1) % self.every == 0

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, flops: int) -> dict[str, float]:
        assert isinstance(pl_module, DistillModule)
        entry: dict[str, float] | None = None
        if trainer.is_global_zero:
            wall, start = pl_module.wall_seconds(), time.perf_counter()  # training time before this evaluation
            figures = self._score(pl_module, self.lane(pl_module))
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            entry = {
                "step": trainer.global_step,
                "flops": flops,
                "wall_seconds": wall,
                "seconds": time.perf_counter() - start,
                **figures,
            }
        entry = trainer.strategy.broadcast(entry, src=0)  # the other ranks wait here
        assert entry is not None
        self._record(trainer, self.lane(pl_module), entry)
        return entry

    def _score(self, pl_module: DistillModule, lane: Lane) -> dict[str, float]:
        student = kept_student(lane, self.ema)
        was_training = student.training
        cuda = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):  # data loaders draw seeds from the global RNG
                return self.scorer(student, autocast_dtype(pl_module.precision), kept_head(lane, self.ema))
        finally:
            student.train(was_training)

    def _record(self, trainer: L.Trainer, lane: Lane, entry: dict[str, float]) -> None:
        """History, best student, patience (early stopping ends this student's training, and
        the run's once every student stopped)."""
        self.history.append(entry)
        value = entry[self.metric]
        if self.best is None or value > self.best[self.metric] + self.min_delta:
            self.best, self.since_best, self.improved = entry, 0, True
            if trainer.is_global_zero:
                self._save_best(trainer, lane, int(entry["step"]), int(entry["flops"]))
            return
        self.since_best += 1
        if self.patience is not None and self.since_best >= self.patience and self.early_stop is None:
            best = self.best
            self.early_stop = {
                "step": int(entry["step"]),
                "reason": f"{self.metric} did not rise above {best[self.metric]:.4f} (step {int(best['step'])}) "
                f"by more than {self.min_delta:g} in {self.since_best} evaluations (early_stop_patience "
                f"{self.patience})",
            }
            lane.stopped = True
            module = trainer.lightning_module
            assert isinstance(module, DistillModule)
            trainer.should_stop = all(other.stopped for other in module.lane_list)
            if trainer.is_global_zero:
                who = f" of {lane.name}" if len(module.lane_list) > 1 else ""
                print(f"\nearly stop{who} after step {trainer.global_step}: {self.early_stop['reason']}", flush=True)

    def _save_best(self, trainer: L.Trainer, lane: Lane, step: int, flops: int) -> None:
        module = trainer.lightning_module
        assert isinstance(module, DistillModule)
        student = kept_student(lane, self.ema)
        save_student_file(student, self.best_path, step=step, flops=flops, wall_seconds=module.wall_seconds())
        head = kept_head(lane, self.ema)
        if head is not None:
            save_head_file(head, head_file_of(self.best_path), list(module.train_set.classes))

    def summary(self) -> dict[str, Any]:
        """What summary.json records of the evaluations."""
        return {
            "every": f"{self.every} {self.unit if self.every > 1 else self.unit[:-1]}",
            "metric": self.metric,
            "best": {"step": int(self.best["step"]), self.metric: self.best[self.metric]} if self.best else None,
            "last": self.latest,
            "seconds": self.seconds,
            "early_stop": self.early_stop,
            "history": self.history,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": self.best,
            "since_best": self.since_best,
            "early_stop": self.early_stop,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.best, self.since_best = state_dict["best"], state_dict["since_best"]
        self.early_stop = state_dict["early_stop"]


def _is_last_step(trainer: L.Trainer) -> bool:
    """The step just taken is the run's last (max_steps reached, or the last batch of the last epoch)."""
    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    return (
        bool(trainer.is_last_batch)
        and trainer.max_epochs is not None
        and trainer.current_epoch + 1 >= trainer.max_epochs
    )
