"""Experiment trackers (`logger`): Lightning's TensorBoard, Weights & Biases and MLflow loggers.

Each receives what metrics.csv receives (every scalar of every step, under the same names),
the configuration when a run starts, and at the end the summary's figures, the curriculum's
level-ups with their reasons and the full summary. Several can be used at once. A resumed run
logs to the same tracker runs (their ids are kept in the run's trackers.json).

W&B logs to <run>/wandb (offline with WANDB_MODE=offline); MLflow to `mlflow_tracking_uri`,
by default a local SQLite file, <output_dir>/mlflow.db (MLflow 3 refuses its file store).
What each needs is checked before the run starts (`tracker_check`). A tracker that fails
during the run (the network gone after an hour) never stops the training: it is dropped with
a warning, metrics.csv keeps every row, and the summary says which tracker stopped and when.
"""

from __future__ import annotations

import contextlib
import json
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.loggers import Logger

from leapkd.disk import write_text_atomic
from leapkd.errors import LeapkdError
from leapkd.rundir import RunDirectory
from leapkd.summary import RunSummary


class Trackers:
    """The run's trackers other than metrics.csv; rank 0 opens, feeds and closes them."""

    def __init__(
        self,
        names: Sequence[str],
        run: RunDirectory,
        config: dict[str, Any],
        project: str = "leapkd",
        mlflow_uri: str | None = None,
    ) -> None:
        self.names = [n for n in dict.fromkeys(names) if n != "csv"]
        self.run, self.config, self.project = run, config, project
        self.mlflow_uri = mlflow_uri or f"sqlite:///{(run.path.parent / 'mlflow.db').resolve()}"
        self.loggers: dict[str, Any] = {}  # name -> Lightning Logger (each has its own `experiment`)
        self.stopped: list[dict[str, Any]] = []  # trackers dropped after a failure: name, step, error

    def open(self, resume_step: int | None) -> None:
        """Start (or, on resume, reopen) each tracker's run; log the configuration on a fresh start.
        A tracker that cannot start stops the run's start (trackers already open are closed)."""
        ids = json.loads(self.run.trackers.read_text()) if self.run.trackers.is_file() else {}
        for name in self.names:
            try:
                logger = getattr(self, f"_open_{name}")(ids, resume_step)
                if resume_step is None:
                    logger.log_hyperparams(self.config)
            except Exception as err:
                self._close_all("failed")
                raise LeapkdError(
                    f"`logger` {name} could not start: {type(err).__name__}: {err}",
                    f"check {name}'s setup, or leave it out of `logger` (metrics.csv needs none)",
                ) from err
            self.loggers[name] = logger
        if self.loggers:
            write_text_atomic(self.run.trackers, json.dumps(ids) + "\n")

    def _close_all(self, status: str) -> None:
        """Close the trackers already open (the start failed: closing is all that is left to do)."""
        for logger in self.loggers.values():
            with contextlib.suppress(Exception):
                logger.finalize(status)
        self.loggers.clear()

    def _open_tensorboard(self, ids: dict[str, str], resume_step: int | None) -> Logger:
        from lightning.pytorch.loggers import TensorBoardLogger

        # steps at or after the resumed one are dropped from the event files (they are trained again)
        return TensorBoardLogger(
            str(self.run.path), name="tensorboard", version="", default_hp_metric=False, purge_step=resume_step
        )

    def _open_wandb(self, ids: dict[str, str], resume_step: int | None) -> Logger:
        from lightning.pytorch.loggers import WandbLogger

        ids.setdefault("wandb", uuid.uuid4().hex[:12])
        return WandbLogger(
            name=self.run.path.name, project=self.project, save_dir=str(self.run.path), id=ids["wandb"], resume="allow"
        )

    def _open_mlflow(self, ids: dict[str, str], resume_step: int | None) -> Logger:
        from lightning.pytorch.loggers import MLFlowLogger

        artifacts = (self.run.path.parent / "mlflow-artifacts").resolve().as_uri()
        logger = MLFlowLogger(
            experiment_name=self.project,
            run_name=self.run.path.name,
            tracking_uri=self.mlflow_uri,
            run_id=ids.get("mlflow"),
            artifact_location=artifacts,
        )
        ids["mlflow"] = logger.run_id or ""
        return logger

    def log(self, row: dict[str, Any], step: int) -> None:
        """One metrics.csv row (empty cells left out)."""
        scalars = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        for name, logger in list(self.loggers.items()):
            self._guarded(name, step, lambda lg=logger: lg.log_metrics(scalars, step=step))

    def finish(self, summary: RunSummary, step: int) -> None:
        """Summary figures (as `summary/<key>` at `step`), level-ups and early stop as text, the whole
        summary as JSON; then close each tracker with the run's status."""
        record = summary.record()
        figures = {
            f"summary/{k}": float(v)
            for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        events = [f"step {e.step}: block {e.from_block} → {e.to_block} ({e.reason})" for e in summary.level_up_events]
        stop = summary.evaluation.early_stop if summary.evaluation is not None else None
        if stop is not None:
            events.append(f"step {stop.step}: early stop ({stop.reason})")
        text = {"curriculum": "\n".join(events) or "no level-ups", "summary": json.dumps(record, indent=2)}
        interrupted = summary.status == "interrupted"
        for name, logger in list(self.loggers.items()):

            def close(name: str = name, logger: Any = logger) -> None:
                logger.log_metrics(figures, step=step)
                getattr(self, f"_text_{name}")(logger, text, step)
                logger.finalize("KILLED" if interrupted and name == "mlflow" else "success")
                if name == "wandb":
                    logger.experiment.finish()

            self._guarded(name, step, close)
        self.loggers.clear()

    def _guarded(self, name: str, step: int, call: Any) -> None:
        """Run one tracker call; a failure drops that tracker (with a warning), never the run."""
        try:
            call()
        except Exception as err:
            self.loggers.pop(name, None)
            self.stopped.append({"tracker": name, "step": step, "error": f"{type(err).__name__}: {err}"})
            warnings.warn(
                f"tracker {name} failed at step {step} and is stopped ({type(err).__name__}: {err}); "
                "training goes on, metrics.csv keeps every row",
                stacklevel=2,
            )

    @staticmethod
    def _text_tensorboard(logger: Any, text: dict[str, str], step: int) -> None:
        for key, value in text.items():
            logger.experiment.add_text(key, f"```\n{value}\n```", step)

    @staticmethod
    def _text_wandb(logger: Any, text: dict[str, str], step: int) -> None:
        logger.log_text("curriculum", columns=["event"], data=[[line] for line in text["curriculum"].splitlines()])
        logger.experiment.summary["leapkd"] = json.loads(text["summary"])

    @staticmethod
    def _text_mlflow(logger: Any, text: dict[str, str], step: int) -> None:
        for key, value in text.items():
            logger.experiment.log_text(logger.run_id, value, f"{key}.{'json' if key == 'summary' else 'txt'}")
