"""Every command reads its options through one reader: the same spelling rules, the same errors,
YAML files, generated help, and README tables generated from the same models."""

from pathlib import Path

import pytest

from leapkd.analysis.command import SpectrumArgs
from leapkd.cli import COMMANDS, command_help, main
from leapkd.errors import LeapkdError
from leapkd.eval.options import EvalArgs
from leapkd.options import as_flags, help_lines, read_options
from leapkd.plan import PlanRequest
from leapkd.readme_keys import main as readme_keys
from leapkd.readme_keys import render

REPO = Path(__file__).resolve().parents[1]


def test_dashes_underscores_flags_and_no_flags_read_alike():
    a = read_options(EvalArgs, ["--image-size", "32", "--train_per_class", "all", "--no-progress"], "eval", "u")
    b = read_options(EvalArgs, ["--image_size=32", "--train-per-class=all", "--progress", "false"], "eval", "u")
    assert a == b and a.image_size == 32 and a.train_per_class == "all" and a.progress is False
    c = read_options(EvalArgs, ["--block", "2,4", "--protocols", "knn", "--precision", "32"], "eval", "u")
    assert c.block == [2, 4] and c.protocols == ["knn"] and c.precision == "32"  # a choice stays text


def test_a_yaml_file_gives_the_same_keys_and_the_command_line_wins(tmp_path):
    path = tmp_path / "spectrum.yaml"
    path.write_text("images: 16\npairs: 3\nout_dir: spectra/x\n")
    args = read_options(SpectrumArgs, ["--config", str(path), "--pairs", "5"], "spectrum", "u")
    assert (args.images, args.pairs, args.out_dir) == (16, 5, "spectra/x")


@pytest.mark.parametrize(
    ("model", "tokens", "problem", "fix"),
    [
        (EvalArgs, ["--protocol", "knn"], "unknown option 'protocol'", "did you mean protocols"),
        (EvalArgs, ["--k", "0"], "k: Input should be greater than or equal to 1", "leapkd eval --help"),
        (SpectrumArgs, ["--out", "x"], "unknown option 'out'", "did you mean out_dir?"),
        (PlanRequest, ["--epochs", "many"], "epochs", "leapkd plan --help"),
        (EvalArgs, ["stray"], "unexpected argument 'stray'", "leapkd eval MODEL"),
    ],
)
def test_bad_options_are_errors_that_name_the_key_and_the_command(model, tokens, problem, fix):
    command = "plan" if model is PlanRequest else "spectrum" if model is SpectrumArgs else "eval"
    with pytest.raises(LeapkdError) as err:
        read_options(model, tokens, command, COMMANDS[command].usage(command))
    assert problem in err.value.problem and fix in err.value.fix


def test_the_command_line_shows_those_errors_without_a_traceback(capsys):
    assert main(["eval", "vit-nano", "--protocl", "knn"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown option 'protocl'" in err and "fix: did you mean protocols" in err
    assert main(["evl"]) == 2 and "did you mean eval?" in capsys.readouterr().err
    assert main(["eval", "--k", "3"]) == 2 and "leapkd eval needs MODEL first" in capsys.readouterr().err
    assert main(["models", "--extra"]) == 2 and "takes no options" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if c.options])
def test_every_commands_help_lists_every_key_of_its_models(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.strip() == command_help(name) and out.startswith(f"usage: leapkd {name}")
    for model in COMMANDS[name].options():
        for line in help_lines(model):
            assert line in out


def test_the_readme_key_tables_are_generated_from_the_models(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert readme.count("<!-- keys:") == 10
    assert render(readme) == readme, "README key tables are stale: run python -m leapkd.readme_keys"
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `k` | 20 |", "| `k` | 21 |"))
    assert readme_keys([str(stale), "--check"]) == 1  # the check can fail
    assert readme_keys([str(stale)]) == 0 and stale.read_text() == readme


def test_lower_layers_name_keys_and_the_command_line_shows_them_as_its_flags(capsys):
    assert as_flags("set `cls_weight` 0; see `pip install`", frozenset({"cls_weight"})) == (
        "set --cls_weight 0; see `pip install`"
    )
    with pytest.raises(LeapkdError) as err:
        PlanRequest(gpu="tpu")
    assert "use `gpu` h200" in err.value.fix  # Python callers read the key
    assert main(["plan", "--gpu", "tpu"]) == 2
    assert "fix: use --gpu h200" in capsys.readouterr().err  # the terminal reads the flag
