"""Trackers without a network or a login: refused in seconds before anything is written; a
tracker failing mid-run never stops the training."""

import json
import socket
import warnings
from pathlib import Path

import pytest

from leapkd import distill
from leapkd.cli import main
from leapkd.errors import LeapkdError
from leapkd.rundir import read_metrics


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DISABLED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_without_a_login_is_refused_before_anything_is_written(tiny, no_wandb_login, capsys):
    pytest.importorskip("wandb")
    code = main(["distill", "--logger", "csv,wandb", "--name", "wb", *_cli(tiny)])
    err = capsys.readouterr().err
    assert code == 2 and "error: --logger wandb needs a W&B login" in err and "Traceback" not in err
    assert "wandb login" in err and "WANDB_MODE=offline" in err and "wandb sync" in err
    assert not (Path(tiny["output_dir"]) / "wb").exists()  # so the same command works once logged in


def test_wandb_with_a_key_but_no_server_fails_at_once(tiny, no_wandb_login, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(LeapkdError) as err:
        distill(name="wb", logger="csv,wandb", **tiny)
    assert "`logger` wandb cannot reach http://127.0.0.1" in err.value.problem and "refused" in err.value.problem
    assert "WANDB_MODE=offline" in err.value.fix
    assert not (Path(tiny["output_dir"]) / "wb").exists()


def test_wandb_offline_needs_neither_login_nor_network(tiny, no_wandb_login, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    assert distill(name="wb", logger="csv,wandb", **tiny).summary.status == "completed"


def test_an_unreachable_mlflow_server_is_refused(tiny):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(LeapkdError) as err:
        distill(name="ml", logger="mlflow", mlflow_tracking_uri=uri, **tiny)
    assert f"cannot reach the tracking server {uri}" in err.value.problem
    assert not (Path(tiny["output_dir"]) / "ml").exists()


def test_a_tracker_that_fails_mid_run_is_dropped_and_training_goes_on(tiny, monkeypatch):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    real = TensorBoardLogger.log_metrics

    def log_metrics(self, metrics, step=None):
        if step is not None and step >= 5:
            raise ConnectionError("network gone")
        return real(self, metrics, step)

    monkeypatch.setattr(TensorBoardLogger, "log_metrics", log_metrics)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = distill(name="tb", logger="csv,tensorboard", **tiny)
    assert r.summary.status == "completed" and r.summary.steps == 15
    assert [int(row["step"]) for row in read_metrics(r.run_dir / "metrics.csv")] == list(range(15))
    stopped = json.loads((r.run_dir / "summary.json").read_text())["trackers_stopped"]
    assert stopped == [{"tracker": "tensorboard", "step": 5, "error": "ConnectionError: network gone"}]
    assert any("tracker tensorboard failed at step 5" in str(w.message) for w in caught)


def test_a_tracker_that_cannot_start_leaves_nothing(tiny, monkeypatch):
    pytest.importorskip("tensorboard")
    from leapkd.engine.trackers import Trackers

    def broken(self, ids, resume_step):
        raise OSError("cannot create the event file")

    monkeypatch.setattr(Trackers, "_open_tensorboard", broken)
    with pytest.raises(LeapkdError) as err:
        distill(name="tb", logger="tensorboard", **tiny)
    assert "`logger` tensorboard could not start: OSError: cannot create the event file" in err.value.problem
    assert not (Path(tiny["output_dir"]) / "tb").exists()


def _cli(tiny: dict) -> list[str]:
    """The `tiny` settings as command-line options."""
    out = []
    for key, value in tiny.items():
        if key == "progress":
            out.append("--no-progress")
        elif value is True:
            out.append(f"--{key}")
        else:
            out += [f"--{key}", str(value)]
    return out
