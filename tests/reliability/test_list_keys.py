"""List keys are written as users write them: `a,b` as well as `[a, b]`, on the command line
and in YAML, and `--help` says so."""

import pytest
import yaml

from leapkd.cli import main


def resolved(capsys, *args: str) -> dict:
    assert main(["distill", *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "args,key,want",
    [
        (["--student_layers", "1,2,5,6", "--teacher_layers", "3,6,9,12"], "student_layers", [1, 2, 5, 6]),
        (["--student-layers", "[1, 2, 5, 6]", "--teacher-layers", "3, 6, 9, 12"], "teacher_layers", [3, 6, 9, 12]),
        (["--student_layers", "5", "--teacher_layers", "12"], "student_layers", [5]),
        (["--aug_crop_scale", "0.3,1.0"], "aug_crop_scale", [0.3, 1.0]),
        (["--logger", "csv,tensorboard"], "logger", ["csv", "tensorboard"]),
        (["--eval_protocols", "knn"], "eval_protocols", ["knn"]),
    ],
)
def test_the_comma_form_of_every_list_key(capsys, args, key, want):
    assert resolved(capsys, "--method", "spectralkd", *args)[key] == want


def test_a_comma_list_in_yaml_too(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("method: spectralkd\nstudent_layers: 1,2\nteacher_layers: '3, 6'\n")
    got = resolved(capsys, "--config", str(config))
    assert (got["student_layers"], got["teacher_layers"]) == ([1, 2], [3, 6])


def test_a_bad_item_is_named(capsys):
    code = main(["distill", "--method", "spectralkd", "--student_layers", "1,x", "--teacher_layers", "3,6",
                 "--print-config"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "student_layers.1" in err and "'x'" in err and "Traceback" not in err


def test_help_shows_how_to_write_a_list(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help", "--method", "spectralkd"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--student_layers")]
    assert lines and "a list: a,b or [a, b]" in lines[0]
