"""A method registered from outside the package runs end to end, with its own keys and loss term."""

import json

import pytest
import torch.nn.functional as F
from pydantic import Field

import leapkd
from leapkd.cli import main
from leapkd.methods import FixedArgs, FixedTarget, LossOutput
from leapkd.plots import draw_loss
from leapkd.rundir import read_metrics


class ToyArgs(FixedArgs):
    l1_weight: float = Field(0.5, ge=0, description="weight of the toy L1 term")


@leapkd.register_method("toy-l1")
class ToyL1(FixedTarget):
    """The fixed-target baseline plus an L1 term on the projected tokens, and a logged value."""

    Args = ToyArgs
    log_values = ("target_norm",)

    def __init__(self, args, teacher, student, *, num_classes, seed):
        super().__init__(args, teacher, student, num_classes=num_classes, seed=seed)
        self.l1_weight = args.l1_weight
        self._norm = None

    def loss(self, student, images, targets, labels=None):
        out = super().loss(student, images, targets, labels)
        l1 = F.l1_loss(out.saved["projected"].float(), targets.patch.float())
        self._norm = float(targets.patch.norm(dim=-1).mean())
        parts = {**out.parts, "loss_l1": l1.detach()}
        return LossOutput(out.loss + self.l1_weight * l1, parts, out.saved)

    def loss_terms(self):
        return [*super().loss_terms(), "l1"]

    def log_row(self):
        return {"target_norm": self._norm}


def test_toy_method_runs_through_distill_with_its_term_in_metrics_and_plot(tiny, monkeypatch):
    drawn = []
    import leapkd.training as training

    def spy(rows, path, parts):
        drawn.append(list(parts))
        return path

    monkeypatch.setattr(training, "plot_loss", spy)
    r = leapkd.distill(name="toy", method="toy-l1", l1_weight=0.25, **{**tiny, "epochs": 1})
    rows = read_metrics(r.run_dir / "metrics.csv")
    assert len(rows) == 5 and all(row["loss_l1"] is not None and row["target_norm"] > 0 for row in rows)
    for row in rows:
        assert row["loss"] == pytest.approx(row["loss_feature"] + 0.25 * row["loss_l1"], rel=1e-5)
    assert r.summary.method == "toy-l1" and r.summary.loss_terms == ["feature", "l1"]
    assert drawn == [["loss_feature", "loss_l1"]]
    labels = draw_loss(rows, drawn[0]).axes[0].get_legend_handles_labels()[1]
    assert labels == ["loss", "loss_feature", "loss_l1"]


def test_toy_method_keys_from_the_cli_and_help(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEAPKD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit):
        main(["distill", "--help", "--method", "toy-l1"])
    out = capsys.readouterr().out
    assert "keys of method toy-l1:" in out and "--l1_weight" in out and "range: >= 0" in out
    args = ["distill", "--method", "toy-l1", "--l1-weight", "0.1", "--teacher", "vit-nano", "--allow-random-teacher",
            "--student", "vit-nano", "--image-size", "32", "--subset-per-class", "4", "--batch-size", "8",
            "--epochs", "1", "--output-dir", str(tmp_path), "--name", "cli", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "l1_weight: 0.1" in (tmp_path / "cli" / "config.yaml").read_text()
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["method"] == "toy-l1"
    assert main([*args[:3], "--l1-wieght", "1", *args[5:]]) == 2
    assert "did you mean l1_weight" in capsys.readouterr().err


def test_an_undeclared_loss_term_is_an_error_not_a_silent_drop(tiny):
    class Sneaky(ToyL1):
        def loss_terms(self):
            return ["feature"]  # forgets to declare l1

    leapkd.register_method("toy-sneaky")(Sneaky)
    with pytest.raises(ValueError, match="loss_l1"):
        leapkd.distill(name="sneaky", method="toy-sneaky", **{**tiny, "epochs": 1})


def test_register_rejects_a_second_class_under_a_taken_name():
    class Other(FixedTarget):
        Args = FixedArgs

    with pytest.raises(ValueError, match="already registered"):
        leapkd.register_method("leap")(Other)
