"""Config hardening: YAML limits, short error values, Beam's ``--flag value`` form."""

from __future__ import annotations

import pytest

from keras_batch_score.pipelines.config import load_yaml, split_beam_args
from keras_batch_score.transforms.core.errors import ConfigError

BOMB = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
batch_size: *h
"""


def test_yaml_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match="alias") as info:
        load_yaml(str(path))
    assert len(str(info.value)) < 300


def test_yaml_oversized_document_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("model: m.keras\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_yaml(str(path))


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("id_columns: &ids [id]\nfeature_columns: [a, b]\nx: *ids\n")
    assert load_yaml(str(path))["x"] == ["id"]


def test_wrong_type_error_does_not_format_the_whole_value(tmp_path):
    from keras_batch_score.pipelines.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("batch_size: [" + ", ".join(["123456789"] * 5000) + "]\n")
    with pytest.raises(ConfigError) as info:
        main(["score", "--config", str(path), "--verbose"])
    # The missing --model/--input/--output are reported too, one problem per line.
    (line,) = [line for line in str(info.value).splitlines() if "batch_size" in line]
    assert len(line) < 300


@pytest.mark.parametrize(
    "args",
    [
        ["--runner", "DirectRunner"],
        ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"],
        ["--temp_location", "/tmp/x", "--job_name=abc"],
    ],
)
def test_beam_flags_with_a_separate_value_pass_through(args):
    assert split_beam_args(args) == args


def test_stray_argument_is_still_refused():
    with pytest.raises(ConfigError, match="unexpected argument"):
        split_beam_args(["--runner", "DirectRunner", "data/b.parquet"])


def test_unknown_flag_is_reported_before_a_stray_value():
    with pytest.raises(ConfigError, match=r"unknown flag.*--bogus"):
        split_beam_args(["--bogus", "x"])


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(str(path))
