from pathlib import Path

import pytest

from leapkd import LeapkdError
from leapkd.cli import parse_overrides
from leapkd.methods import load_config


def test_defaults_are_the_embedded_demo():
    cfg = load_config()
    assert cfg.teacher == "dinov2-vits14-imgfocus" and cfg.method == "leap" and cfg.data == "fashion-mnist"


def test_yaml_then_overrides(tmp_path: Path):
    f = tmp_path / "run.yaml"
    f.write_text("method: fixed\nepochs: 3\nlr: 1.0e-3\n")
    cfg = load_config(f, {"epochs": 4})
    assert (cfg.method, cfg.epochs, cfg.lr) == ("fixed", 4, 1e-3)


def test_unknown_key_named_with_closest(tmp_path: Path):
    with pytest.raises(LeapkdError) as err:
        load_config(None, {"treshold": 0.9})
    assert "unknown config key 'treshold'" in str(err.value)
    assert "threshold" in err.value.fix


@pytest.mark.parametrize(
    "key,value",
    [("threshold", 0), ("threshold", 1.5), ("alpha", 0), ("epochs", -1), ("batch_size", 0), ("method", "leapp")],
)
def test_out_of_range_values_name_the_key(key, value):
    with pytest.raises(LeapkdError) as err:
        load_config(None, {key: value})
    assert key in str(err.value)


def test_yaml_syntax_error(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("epochs: [1,\n")
    with pytest.raises(LeapkdError, match="not valid YAML"):
        load_config(f)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(LeapkdError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_cli_overrides_parse_types():
    got = parse_overrides(["--epochs", "3", "--lr=1e-3", "--augment", "false", "--snap-to-last", "null", "--calibrate"])
    assert got == {"epochs": 3, "lr": 1e-3, "augment": False, "snap_to_last": None, "calibrate": True}
    assert load_config(None, got).epochs == 3


def test_yaml_round_trip():
    cfg = load_config(None, {"epochs": 2, "name": "x"})
    import yaml

    assert type(cfg)(**yaml.safe_load(cfg.to_yaml())) == cfg


def test_text_keys_stay_text():
    assert parse_overrides(["--name", "nan", "--data", "1e3", "--teacher-weights", "null"]) == {
        "name": "nan",
        "data": "1e3",
        "teacher_weights": None,
    }
    assert parse_overrides(["--student-layers", "[1, 2]"]) == {"student_layers": [1, 2]}


def _choice_keys():
    """(method, key, choice) for every choice of every registered method's keys, and each method."""
    from leapkd.config import choices_of
    from leapkd.methods import METHODS, config_class

    seen = {("method", m): m for m in METHODS.names()}
    for m in METHODS.names():
        cls = config_class(m)
        for key in cls.model_fields:
            for choice in choices_of(cls, key):
                seen.setdefault((key, choice), m)
    keys = {k for k, _ in seen}
    assert {"method", "precision", "metric", "lr_reset", "nan_policy", "logger"} <= keys
    return [(m, k, c) for (k, c), m in seen.items()]


@pytest.mark.parametrize("method,key,choice", _choice_keys())
def test_every_choice_is_accepted_from_cli_yaml_and_python(method, key, choice, tmp_path: Path):
    import yaml

    cli = ["--method", method] if key != "method" else []
    from_cli = load_config(None, parse_overrides([*cli, f"--{key}", choice]))
    from_cli_eq = load_config(None, parse_overrides([*cli, f"--{key.replace('_', '-')}={choice}"]))
    f = tmp_path / "run.yaml"
    f.write_text(f"method: {method}\n{key}: {choice}\n")  # unquoted: `precision: 32` reads as a number
    from_yaml = load_config(f)
    from_python = load_config(None, {"method": method, key: yaml.safe_load(choice)})
    for cfg in (from_cli, from_cli_eq, from_yaml, from_python):
        assert getattr(cfg, key) in (choice, [choice])  # a list key (logger) holds the one choice


def test_method_keys_belong_to_their_method():
    with pytest.raises(LeapkdError) as err:
        load_config(None, {"method": "fixed", "threshold": 0.9})  # a curriculum key, for a method without one
    assert "unknown config key 'threshold'" in str(err.value) and "key of method leap" in err.value.fix
    with pytest.raises(LeapkdError) as err:
        load_config(None, {"method": "leapp"})
    assert "unknown method 'leapp'" in str(err.value) and "leap" in err.value.fix
    assert load_config(None, {"method": "spectralkd"}).spectral_weight == 0.2  # each method its own defaults
    assert load_config(None, {"method": "fixed"}).spectral_weight == 0.0


def test_distill_help_lists_the_keys_of_the_method_asked(capsys):
    from leapkd.cli import main

    with pytest.raises(SystemExit):
        main(["distill", "--help", "--method", "fixed"])
    out = capsys.readouterr().out
    assert "keys of method fixed:" in out and "--fixed_last_n" in out and "--threshold" not in out
    assert "choices: auto, 32, bf16-mixed, 16-mixed" in out and "range: >= 1" in out
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = capsys.readouterr().out
    assert "keys of method leap:" in out and "--threshold" in out and "range: > 0, <= 1" in out
