"""Small builders shared by the tests: tiny Keras models and real Parquet files."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

import_tensorflow()
import keras  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
"""The repository root (the folder holding ``tests/``)."""


def mlp(n_features: int, *, outputs: int = 1, seed: int = 0, name: str = "x") -> keras.Model:
    """A small dense model with random weights (deterministic per seed)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_features,), name=name)
    hidden = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(outputs, activation="sigmoid" if outputs == 1 else "softmax")(hidden)
    return keras.Model(inp, out)


def feature_table(
    n_rows: int, n_features: int, *, seed: int = 0, id_column: str = "id"
) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {id_column: pa.array(np.arange(n_rows, dtype=np.int64))}
    for i in range(n_features):
        columns[f"f{i}"] = pa.array(rng.normal(size=n_rows).astype(np.float32))
    return pa.table(columns)


def write_parquet(path: Path | str, table: pa.Table, *, row_group_size: int = 1000) -> str:
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def stacked(table: pa.Table, columns: list[str]) -> np.ndarray:
    return np.stack([table.column(c).to_numpy().astype(np.float32) for c in columns], axis=1)


def keras_reference(model: keras.Model, x) -> np.ndarray:
    """What the pipeline must reproduce: model(x, training=False)."""
    out = model(x, training=False)
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [np.asarray(v) for v in out]
    return np.asarray(out)


def read_predictions(output_dir: Path | str, sort_by: str | None = "id") -> pa.Table:
    files = sorted(glob.glob(os.path.join(str(output_dir), "predictions-*.parquet")))
    assert files, f"no predictions files in {output_dir}: {os.listdir(output_dir)}"
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.sort_by(sort_by) if sort_by else table


def read_errors(output_dir: Path | str) -> list[dict]:
    records = []
    for f in sorted(glob.glob(os.path.join(str(output_dir), "errors-*.jsonl"))):
        with open(f) as fh:
            records += [json.loads(line) for line in fh if line.strip()]
    return records


def read_summary(output_dir: Path | str) -> dict:
    with open(os.path.join(str(output_dir), "run_summary.json")) as f:
        return json.load(f)


def job_argv(**options: Any) -> list[str]:
    """Command-line flags from keyword options, in the order given.

    ``id_columns=["id"]`` -> ``--id-column id`` (a list repeats the flag under its
    singular name: a trailing ``s`` is dropped), ``quiet=True`` -> ``--quiet``,
    ``False``/``None`` -> nothing, anything else -> ``--flag str(value)``.
    """
    argv: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        if isinstance(value, (list, tuple)):
            flag = "--" + (key[:-1] if key.endswith("s") else key).replace("_", "-")
            for item in value:
                argv += [flag, str(item)]
        elif value is True:
            argv.append("--" + key.replace("_", "-"))
        else:
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


@dataclasses.dataclass
class ScoreJob:
    """A finished ``batch-score score`` run: its flags, output folder and summary."""

    argv: list[str]
    output: Path
    summary: dict

    def predictions(self, sort_by: str | None = "id") -> pa.Table:
        """Every predictions file of the run, concatenated (sorted by ``sort_by``)."""
        return read_predictions(self.output, sort_by)

    def errors(self) -> list[dict]:
        """The errors-output records of the run."""
        return read_errors(self.output)


def run_score(output: Path | str, *extra: str, **options: Any) -> ScoreJob:
    """Runs ``batch-score score`` in-process with ``--output output``, the options and ``extra`` flags.

    Options are turned into flags by :func:`job_argv`; ``quiet`` defaults to True.
    Configuration errors raise ``ConfigError`` as from ``score.run``.
    """
    from keras_batch_score.pipelines import score

    options.setdefault("quiet", True)
    argv = [*job_argv(output=output, **options), *extra]
    summary = score.run(argv)
    return ScoreJob(argv, Path(output), summary)
