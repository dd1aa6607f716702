"""W1 on the general-purpose engines a team might reach for instead: Ray Data and Spark.

* ``ray``: Ray Data, ``read_parquet`` -> ``map_batches`` with an actor pool
  of one actor (one CPU; reading and writing tasks get the other; 64k-row
  batches; the compiled model function loaded once) -> ``write_parquet``.
  Two one-CPU actors on a 2-CPU machine leave the read tasks no CPU, and the
  job waits forever.
* ``spark``: PySpark ``local[2]``, ``read.parquet`` -> ``mapInArrow`` (64k-row
  Arrow batches, the model loaded once per Python worker) -> ``write.parquet``.

Both score the same Keras model as ``batch-score score`` and write the id and
the prediction. Ray, PySpark and their few missing dependencies are installed
by :func:`framework_env` into a side directory of the bench's work directory,
never into the runtime venv (they are not dependencies of the tool); Spark
also needs a Java runtime on the PATH.

Usage: ``python -m benchmarks.frameworks {ray,spark} --model M --input I --output O``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH_ROWS = 65536
PACKAGES = (
    "ray==2.52.1",
    "pyspark==4.0.1",
    "py4j==0.10.9.9",
    "pandas==2.3.3",
    "msgpack==1.2.4",
    "click==8.5.1",
    "filelock==4.3.1",
    "fsspec==2026.9.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
)
"""Ray Data and PySpark, plus what the runtime venv lacks of their dependencies (pinned)."""


def framework_env(workdir: Path) -> tuple[dict[str, str] | None, str]:
    """(environment with the side directory on PYTHONPATH, or None; why not)."""
    site = workdir / "frameworks-site"
    if not (site / "ray").exists() or not (site / "pyspark").exists():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        done = subprocess.run([*cmd, *PACKAGES], capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"pip could not install Ray Data and PySpark: {done.stderr[-300:]}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env, ""


def has_java() -> bool:
    return shutil.which("java") is not None


def _features(input_path: str, id_column: str) -> list[str]:
    import pyarrow.parquet as pq

    return [n for n in pq.read_schema(input_path).names if n != id_column]


class _Scorer:
    """The compiled model function, loaded once per Ray actor or Spark worker."""

    def __init__(self, model_path: str, features: Sequence[str], id_column: str) -> None:
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(model_path, compile=False)
        self._fn = tf.function(lambda x: model(x, training=False), jit_compile=False)
        self._features = list(features)
        self._id = id_column

    def scores(self, columns: Any) -> Any:
        import numpy as np

        x = np.column_stack([np.asarray(columns[c], dtype=np.float32) for c in self._features])
        return np.asarray(self._fn(x))[:, 0]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:  # Ray Data: numpy batch format
        return {self._id: batch[self._id], "prediction": self.scores(batch)}


def ray_data(model_path: str, input_path: str, output_path: str, id_column: str = "id") -> int:
    """Scores ``input_path`` with Ray Data on this machine; returns the number of rows written."""
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    features = _features(input_path, id_column)
    ds = ray.data.read_parquet(input_path, columns=[id_column, *features])
    scored = ds.map_batches(
        _Scorer,
        fn_constructor_args=(model_path, features, id_column),
        batch_size=BATCH_ROWS,
        batch_format="numpy",
        concurrency=1,  # one actor: the read and write tasks need the other CPU
        num_cpus=1,
    )
    scored.write_parquet(output_path)
    rows = ray.data.read_parquet(output_path).count()
    ray.shutdown()
    return rows


def spark(model_path: str, input_path: str, output_path: str, id_column: str = "id") -> int:
    """Scores ``input_path`` with PySpark ``local[2]`` and ``mapInArrow``; returns rows written."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers need this venv's TF and pyarrow
    session = (
        SparkSession.builder.master(f"local[{os.cpu_count()}]")
        .appName("w1")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    features = _features(input_path, id_column)

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        scorer = _Scorer(model_path, features, id_column)
        for batch in batches:
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(id_column),
                    pa.array(scorer.scores({c: batch.column(c) for c in features})),
                ],
                names=[id_column, "prediction"],
            )

    df = session.read.parquet(input_path)
    out = df.mapInArrow(score, f"{id_column} long, prediction float")
    out.write.mode("overwrite").parquet(output_path)
    rows = session.read.parquet(output_path).count()
    session.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("ray", "spark"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    run = ray_data if args.engine == "ray" else spark
    rows = run(args.model, args.input, args.output)
    print(f"{args.engine}: {rows} rows written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
