"""Configuration errors fail before any data is read, with a message naming what to fix."""

from __future__ import annotations

import os

import pytest
import yaml

from keras_batch_score.pipelines import cli, score
from tests import util


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    util.mlp(4, seed=1).save(root / "m.keras")
    util.write_parquet(root / "in.parquet", util.feature_table(50, 4))
    return root


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["score", *argv])
    return code, capsys.readouterr().err


def _base(root, out) -> list[str]:
    return [
        "--model",
        str(root / "m.keras"),
        "--input",
        str(root / "in.parquet"),
        "--output",
        str(out),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--feature-columns", "f0,f1,f2,nope"],
            "feature column 'nope' (model input 'x') is not in the input schema",
        ),
        (
            ["--feature-columns", "f0,f1,f2"],
            "model input 'x' (shape (4,)) expects 4 values per row, but the feature columns give 3",
        ),
        (["--id-column", "customer"], "id column 'customer' is not in the input schema"),
        (["--batch-sise", "10"], "unknown flag(s) --batch-sise (did you mean '--batch-size'?)"),
        (["--batch-size", "0"], "'batch_size' must be >= 1"),
    ],
)
def test_flag_errors(capsys, files, tmp_path, extra, message):
    out = tmp_path / "out"
    code, err = _cli(capsys, *_base(files, out), *extra)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not out.exists(), "nothing may be written when the config is wrong"


def test_missing_required_setting(capsys, files, tmp_path):
    code, err = _cli(
        capsys, "--model", str(files / "m.keras"), "--input", str(files / "in.parquet")
    )
    assert code == 2 and "missing required setting(s) 'output': pass --output" in err


def test_unreadable_model_names_the_path(capsys, files, tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    out = tmp_path / "out"
    code, err = _cli(
        capsys, "--model", str(bad), "--input", str(files / "in.parquet"), "--output", str(out)
    )
    assert code == 2 and f"model {bad} cannot be loaded" in err
    assert not out.exists()


def test_input_matching_nothing(capsys, files, tmp_path):
    code, err = _cli(
        capsys,
        "--model",
        str(files / "m.keras"),
        "--input",
        str(tmp_path / "*.parquet"),
        "--output",
        str(tmp_path / "o"),
    )
    assert code == 2 and "no files match" in err


def test_unknown_yaml_key_is_named_with_a_suggestion(capsys, files, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(files / "m.keras"), "batch_sise": 10}))
    code, err = _cli(
        capsys,
        "--config",
        str(cfg),
        "--input",
        str(files / "in.parquet"),
        "--output",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert f"unknown key 'batch_sise' in {cfg} (did you mean 'batch_size'?)" in err


def test_yaml_value_of_wrong_type(capsys, files, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("batch_size: lots\n")
    code, err = _cli(capsys, "--config", str(cfg), *_base(files, tmp_path / "o"))
    assert code == 2 and f"'batch_size' in {cfg}: expected an integer, got 'lots'" in err


def test_flags_override_yaml(files, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": str(files / "m.keras"),
                "input": str(files / "in.parquet"),
                "output": str(tmp_path / "ignored"),
                "batch_size": 7,
                "id_columns": ["id"],
            }
        )
    )
    out = tmp_path / "out"
    summary = score.run(
        ["--config", str(cfg), "--output", str(out), "--batch-size", "20", "--quiet"]
    )
    assert summary["config"]["batch_size"] == 20
    assert summary["config"]["id_columns"] == ["id"]
    assert summary["config"]["output"] == str(out)
    assert os.path.exists(out / "run_summary.json") and not (tmp_path / "ignored").exists()


def test_help_lists_commands(capsys):
    assert cli.main([]) == 2
    assert "score" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_directory_input_skips_hadoop_marker_and_hidden_files(files, tmp_path):
    data = tmp_path / "spark_output"
    data.mkdir()
    util.write_parquet(data / "part-00000.parquet", util.feature_table(30, 4))
    (data / "_SUCCESS").write_text("")
    (data / ".part-00000.parquet.crc").write_bytes(b"crc bytes that are not parquet")
    summary = score.run(
        [
            "--model",
            str(files / "m.keras"),
            "--input",
            str(data),
            "--output",
            str(tmp_path / "out"),
            "--id-column",
            "id",
            "--quiet",
        ]
    )
    assert summary["rows_read"] == 30 and summary["input_files"] == 1
