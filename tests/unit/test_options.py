"""The option schema: one definition drives the flags, the YAML check, the docs and the errors."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from keras_batch_score.pipelines import calibrate, cli, options
from keras_batch_score.pipelines.options import docs
from keras_batch_score.pipelines.options.__main__ import main as options_main
from keras_batch_score.transforms.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
USAGE = ROOT / "docs" / "usage.md"
BASE = ["--model", "m.keras", "--input", "in.parquet", "--output", "out"]


def _parser(command: str = "score") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    options.add_arguments(parser, command)
    return parser


def _resolve(*argv: str):
    return options.resolve(_parser().parse_args(list(argv)))


def _problems(*argv: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _resolve(*argv)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- schema


def test_every_setting_is_a_flag_and_a_config_attribute():
    flags = {a.dest: a for a in _parser()._actions if a.option_strings}
    assert set(flags) == set(options.SETTINGS) | {"config"}
    assert {f.name for f in dataclasses.fields(options.ScoreConfig)} == set(options.SETTINGS)
    for key, setting in options.SETTINGS.items():
        action = flags[key]
        assert action.option_strings == [setting.flag.flag]
        assert action.help == setting.flag.help
        assert (action.nargs == 0) == setting.is_switch
        assert isinstance(action, argparse._AppendAction) == setting.flag.repeat


def test_calibrate_offers_exactly_the_scoring_flags_its_schema_entries_name():
    offered = {a.option_strings[0] for a in _parser("calibrate")._actions if a.option_strings}
    expected = {s.flag.flag for s in options.SETTINGS.values() if "calibrate" in s.flag.commands}
    assert offered == expected | {"--config"}
    assert set(calibrate.NOT_OFFERED) == {s.flag.flag for s in options.SETTINGS.values()} - expected
    assert "--top-k" in calibrate.NOT_OFFERED and "--batch-size" not in calibrate.NOT_OFFERED


def test_defaults_come_from_the_schema():
    config = _resolve(*BASE)
    for key, setting in options.SETTINGS.items():
        if not setting.flag.required:
            assert getattr(config, key) == setting.default(), key
    assert config.batch_size == options.DEFAULT_BATCH_SIZE


# --------------------------------------------------------------------------- generated files


def test_usage_flag_tables_match_the_schema():
    text = USAGE.read_text()
    assert docs.commands_in(text) == ["score"]
    assert docs.render(text) == text, "docs/usage.md flag tables are stale: run `make docs-flags`"
    for setting in options.SETTINGS.values():
        assert f"`{setting.key}`" in text and setting.flag.flag in text


def test_docs_cli_rewrites_only_the_marked_table(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n<!-- flags:calibrate -->\nSTALE TABLE\n<!-- /flags:calibrate -->\nafter\n"
    )
    assert options_main(["--docs", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n") and text.endswith("<!-- /flags:calibrate -->\nafter\n")
    assert "STALE TABLE" not in text and "`--batch-size ROWS`" in text and "--top-k" not in text
    assert options_main(["--docs", str(page)]) == 0 and page.read_text() == text


# --------------------------------------------------------------------------- all problems at once


def test_several_flag_problems_are_reported_together():
    lines = _problems(
        *BASE, "--batch-size", "0", "--clip-min", "3", "--clip-max", "1", "--fail-on-drift"
    )
    assert lines[0] == "3 problems in the settings (fix them all, then run again):"
    assert lines[1:] == [
        "  - 'batch_size' must be >= 1, got 0",
        "  - --clip-min (3.0) is greater than --clip-max (1.0)",
        "  - 'fail_on_drift' needs 'reference_profile' (pass --reference-profile)",
    ]


def test_one_problem_keeps_its_one_line_message():
    assert _problems(*BASE, "--batch-size", "0") == ["'batch_size' must be >= 1, got 0"]


def test_yaml_unknown_keys_wrong_types_missing_and_rules_are_reported_together(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "batch_sise": 10,
                "explain_steps": "many",
                "reshuffle": "yes",
                "top_k": 3,
                "drift_share": 0.5,
                "bogus": 1,
            }
        )
    )
    lines = _problems("--config", str(cfg), "--model", "m.keras")
    text = "\n".join(lines)
    assert lines[0].startswith("6 problems in the settings")
    assert f"unknown key 'batch_sise' in {cfg} (did you mean 'batch_size'?)" in text
    assert f"unknown key 'bogus' in {cfg}" in text
    assert "missing required setting(s) 'input', 'output': pass --input, --output" in text
    assert f"'explain_steps' in {cfg}: expected an integer, got 'many'" in text
    assert f"'reshuffle' in {cfg}: expected true or false, got 'yes'" in text
    assert "'top_k' needs 'class_names'" in text


def test_cli_prints_one_error_block_and_exits_2_before_reading_data(capsys, tmp_path):
    out = tmp_path / "out"
    code = cli.main(
        [
            "score",
            "--model",
            str(tmp_path / "missing.keras"),
            "--input",
            str(tmp_path / "none.parquet"),
            "--output",
            str(out),
            "--batch-size",
            "0",
            "--top-k",
            "0",
            "--output-noise",
            "laplace",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: 5 problems in the settings")
    assert sum(line.startswith("error:") for line in lines) == 1
    for part in (
        "'batch_size' must be >= 1",
        "'top_k' must be >= 1",
        "'top_k' needs 'class_names'",
        "--output-noise laplace needs --epsilon (epsilon)",
        "--output-noise laplace needs --sensitivity (sensitivity)",
    ):
        assert any(part in line for line in lines[1:]), part
    assert "no files match" not in err and "cannot be loaded" not in err


def test_calibrate_rules_are_reported_with_the_scoring_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        calibrate.parse_args(
            [
                *BASE,
                "--label-column",
                "y",
                "--id-column",
                "y",
                "--bins",
                "0",
                "--batch-size",
                "0",
            ]
        )
    text = str(info.value)
    assert text.startswith("3 problems")
    assert "--bins must be >= 1, got 0" in text
    assert "--label-column 'y' is also an --id-column" in text
    assert "'batch_size' must be >= 1" in text


# --------------------------------------------------------------------------- YAML forms


def test_yaml_may_be_nested_by_section(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"model": ["a=a.keras", "b=b.keras"], "precision": "float32"},
                "input": {"input": "in.parquet", "output": "out", "id_columns": "id"},
                "run": {"batch_size": 64},
                "drift": {"drift_thresholds": {"psi": 0.3, "ks": False}},
                "explain": "gradient-x-input",
            }
        )
    )
    config = _resolve("--config", str(cfg))
    assert config.model == ["a=a.keras", "b=b.keras"] and config.batch_size == 64
    assert config.id_columns == ["id"] and sorted(config.drift_thresholds) == ["ks=off", "psi=0.3"]
    assert config.explain == "gradient-x-input"


def test_unknown_key_in_a_section_is_named_with_its_section(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"run": {"batch_sise": 64}}))
    (line,) = _problems("--config", str(cfg), *BASE)
    assert line.startswith(
        f"unknown key 'batch_sise' in section 'run' of {cfg} (did you mean 'batch_size'?)"
    )


def test_flat_yaml_values_are_read_as_before(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        "models: [{name: a, path: a.keras, weight: 2}, b.keras]\n"
        "feature_columns: f0, f1\nensemble_weights: {a: 2}\ndrift_share: 5e-1\n"
        "custom_objects: mod:attr\n"
    )
    config = _resolve("--config", str(cfg), "--input", "i", "--output", "o")
    assert config.model == [{"name": "a", "path": "a.keras", "weight": 2.0}, "b.keras"]
    assert config.feature_columns == ["f0", "f1"] and config.ensemble_weights == {"a": 2.0}
    assert config.custom_objects == ["mod:attr"]
    assert config.drift_share == 0.5  # YAML 1.1 reads 5e-1 as a string


def test_flags_override_the_file(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("batch_size: lots\n")
    assert _resolve("--config", str(cfg), *BASE, "--batch-size", "5").batch_size == 5


def test_profile_reports_its_problems_together():
    from keras_batch_score.pipelines import profile

    with pytest.raises(ConfigError) as info:
        profile.parse_args(
            [
                *("--input", "in.parquet", "--output", "p.json", "--num-bins", "0"),
                *("--top-k", "0", "--categorical-columns", "a", "--numeric-columns", "a"),
            ]
        )
    lines = str(info.value).splitlines()
    assert lines[0].startswith("3 problems")
    assert "'num_bins' must be >= 1, got 0" in lines[1]
    assert "'top_k' must be >= 1, got 0" in lines[2]
    assert "columns ['a'] are listed as both categorical and numeric" in lines[3]


@pytest.mark.parametrize("module", ["profile", "fit_preprocess", "package"])
def test_other_commands_take_shared_flags_from_the_schema(module):
    import importlib

    from keras_batch_score.pipelines import cli_help

    captured = {}
    original = cli_help.polish

    def capture(parser, defaults=None):
        captured["parser"] = parser
        raise SystemExit(0)

    cli_help.polish = capture
    try:
        with pytest.raises(SystemExit):
            importlib.import_module(f"keras_batch_score.pipelines.{module}").parse_args([])
    finally:
        cli_help.polish = original
    actions = {a.dest: a for a in captured["parser"]._actions if a.option_strings}
    shared = set(actions) & set(options.SETTINGS) - {"model", "top_k"}
    assert {"input_format", "feature_columns", "id_columns"} & shared or module == "package"
    for key in shared:
        setting, action = options.SETTINGS[key], actions[key]
        assert action.option_strings == [setting.flag.flag], key
        assert tuple(action.choices or ()) == (setting.flag.choices or ()), key
        assert action.metavar == setting.flag.metavar, key
