"""The ``batch-score`` command line: help, versions, mistakes, and what run_summary.json records."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
from importlib import metadata

import pytest

from keras_batch_score.pipelines import cli
from tests import util

BIN = os.path.join(os.path.dirname(sys.executable), "batch-score")
COMMANDS = ("score", "profile", "calibrate", "fit-preprocess", "package")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BATCH_SCORE_VERBOSITY")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(util.REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _help(command: str) -> str:
    proc = subprocess.run(
        [BIN, command, "--help"],
        capture_output=True,
        text=True,
        env=_env(COLUMNS="200"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    return {command: _help(command) for command in COMMANDS}


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, captured when it is polished (before any parsing)."""
    from keras_batch_score.pipelines import (
        calibrate,
        cli_help,
        fit_preprocess,
        package,
        profile,
        score,
    )

    captured: dict[str, argparse.ArgumentParser] = {}
    original = cli_help.polish

    class Captured(Exception):
        pass

    def capture(parser, defaults=None):
        original(parser, defaults)
        captured[parser.prog.split(" ", 1)[1]] = parser
        raise Captured

    cli_help.polish = capture
    try:
        for module in (score, profile, calibrate, fit_preprocess, package):
            with pytest.raises(Captured):
                module.parse_args([])
    finally:
        cli_help.polish = original
    return captured


def _flag_line(help_text: str, flag: str) -> str:
    """The help entry of ``flag`` (its first line, plus the next when the text wraps)."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(flag + " ") or line.strip() == flag:
            return " ".join(x.strip() for x in lines[i : i + 2])
    raise AssertionError(f"{flag} not in help")


# --------------------------------------------------------------------------- --help


def test_score_help_shows_defaults_and_readable_metavars(helps):
    text = helps["score"]
    assert "(default: 16384)" in _flag_line(text, "--batch-size ROWS")
    assert "(default: 5.0)" in _flag_line(text, "--progress-seconds SECONDS")
    assert "--id-column COLUMN" in text
    for ugly in (
        "ID_COLUMNS",
        "FEATURE_COLUMNS",
        "CUSTOM_OBJECTS",
        "BATCH_SIZE",
        "DRIFT_THRESHOLDS",
    ):
        assert ugly not in text, f"argparse metavar {ugly} in score --help"


def test_model_help_says_it_repeats_and_takes_names(helps):
    options = helps["score"].split("\nModel:", 1)[1]
    entry = " ".join(options.split("--model-sha256")[0].split())
    assert "Repeat" in entry and "NAME=PATH" in entry and "bundle directory" in entry


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_examples(helps, command):
    text = helps[command]
    examples = text.split("examples:", 1)[1]
    assert len(re.findall(rf"^  batch-score {command} ", examples, re.M)) >= 2


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_text(parsers, command):
    parser = parsers[command]
    for action in parser._actions:
        if action.option_strings:
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{command} {action.option_strings[0]} has no help text"
            )
            assert action.metavar is None or action.metavar == action.metavar.strip()
            assert action.nargs == 0 or action.metavar or action.choices, (
                f"{command} {action.option_strings[0]} shows argparse's default metavar"
            )


def test_calibrate_offers_only_its_own_flags(helps):
    text = helps["calibrate"]
    for flag in (
        "--fail-on-drift",
        "--ab-split",
        "--top-k",
        "--calibration",
        "--reference-profile",
    ):
        assert flag not in text, f"calibrate --help offers {flag}"
    for flag in ("--label-column", "--method", "--model", "--input", "--batch-size"):
        assert flag in text


def test_calibrate_refuses_a_score_only_flag_as_unknown(capsys, tmp_path):
    code = cli.main(
        [
            "calibrate",
            "--model",
            "m.keras",
            "--input",
            "x",
            "--output",
            "c.json",
            "--label-column",
            "y",
            "--top-k",
            "3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown flag(s) --top-k" in err and "batch-score calibrate --help" in err


# --------------------------------------------------------------------------- --version


def test_version_lists_tool_and_frameworks_without_importing_tensorflow():
    code = (
        "import sys; from pipelines import cli; cli.main(['--version']); "
        "print('imported:', sorted(m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"keras-batch-score {metadata.version('keras-batch-score')}" in out
    assert f"tensorflow {metadata.version('tensorflow')}" in out
    assert f"keras {metadata.version('keras')}" in out
    assert f"apache-beam {metadata.version('apache-beam')}" in out
    assert f"python {platform.python_version()}" in out
    assert "imported: []" in out


# --------------------------------------------------------------------------- mistakes


def test_mistyped_command_gets_a_suggestion(capsys):
    assert cli.main(["scroe"]) == 2
    assert "unknown command 'scroe' (did you mean 'score'?)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "profile", "calibrate", "fit-preprocess"])
def test_unknown_flag_is_reported_before_missing_required_ones(capsys, command):
    assert cli.main([command, "--inptu", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown flag(s) --inptu (did you mean '--input'?)" in err
    assert "missing" not in err


def test_missing_required_flag_is_one_error_line(capsys):
    assert cli.main(["profile", "--input", "x.parquet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing required flag(s) --output")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("score", ["--model", "m.keras", "--output", "out"]),
        ("profile", ["--output", "p.json"]),
        ("calibrate", ["--model", "m.keras", "--output", "c.json", "--label-column", "y"]),
    ],
)
def test_unquoted_glob_gets_a_hint_to_quote_it(capsys, tmp_path, command, extra):
    # What the shell passes for an unquoted --input data/*.parquet matching two files.
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    assert cli.main([command, "--input", a, b, *extra]) == 2
    err = capsys.readouterr().err
    assert "unexpected argument(s)" in err and "b.parquet" in err
    assert "quote a glob such as --input 'data/*.parquet'" in err


def test_beam_discarding_args_warning_is_hidden(caplog):
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_batch_score.pipelines import console

    beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
    saved = beam_logger.level, list(beam_logger.filters)
    try:
        beam_logger.setLevel(logging.WARNING)
        beam_logger.filters[:] = []  # earlier cli.main() calls in this process installed it
        with caplog.at_level(logging.WARNING):
            PipelineOptions(["--not_a_beam_flag=1"]).get_all_options()
        assert "Discarding unparseable args" in caplog.text, "Beam no longer logs this"
        caplog.clear()
        console.hide_beam_option_warnings()
        with caplog.at_level(logging.WARNING):
            PipelineOptions(["--not_a_beam_flag=1"]).get_all_options()
        assert "Discarding" not in caplog.text
    finally:
        beam_logger.setLevel(saved[0])
        beam_logger.filters[:] = saved[1]


# --------------------------------------------------------------------------- run_summary.json


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    util.mlp(4, seed=3).save(root / "m.keras")
    util.write_parquet(root / "data" / "a.parquet", util.feature_table(120, 4), row_group_size=50)
    return root


def _versions() -> dict[str, str]:
    return {
        "keras-batch-score": metadata.version("keras-batch-score"),
        "python": platform.python_version(),
        "tensorflow": metadata.version("tensorflow"),
        "keras": metadata.version("keras"),
        "apache-beam": metadata.version("apache-beam"),
    }


def test_summary_has_absolute_uris_versions_and_runner(job, monkeypatch):
    monkeypatch.chdir(job)  # every path below is relative
    code = cli.main(
        [
            "score",
            "--model",
            "m.keras",
            "--input",
            "data/*.parquet",
            "--output",
            "out",
            "--id-column",
            "id",
            "--quiet",
        ]
    )
    assert code == 0
    summary = util.read_summary(job / "out")
    assert summary["input"] == str(job / "data" / "*.parquet")
    assert summary["input_uris"] == [str(job / "data" / "a.parquet")]
    assert summary["output"] == str(job / "out")
    assert summary["model_uris"] == [str(job / "m.keras")]
    assert summary["output_files"], "no output files listed"
    for path in summary["output_files"]:
        assert os.path.isabs(path) and os.path.exists(path), path
    assert summary["versions"] == _versions()
    assert summary["runner"] == "FnApiRunner"
    assert summary["bundle"] is None


def test_summary_names_the_bundle_and_its_manifest(job, tmp_path):
    bundle = tmp_path / "bundle"
    assert (
        cli.main(
            [
                "package",
                "--model",
                str(job / "m.keras"),
                "--output",
                str(bundle),
                "--feature-columns",
                "f0,f1,f2,f3",
                "--version",
                "churn-7",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "out"
    code = cli.main(
        [
            "score",
            "--model",
            str(bundle),
            "--input",
            str(job / "data"),
            "--output",
            str(out),
            "--id-column",
            "id",
            "--quiet",
        ]
    )
    assert code == 0
    summary = util.read_summary(out)
    with open(bundle / "bundle.json") as f:
        manifest = json.load(f)
    assert summary["bundle"]["version"] == manifest["version"] == "churn-7"
    assert summary["bundle"]["manifest"] == manifest
    assert summary["bundle"]["uri"] == str(bundle)
