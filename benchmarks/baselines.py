"""The baselines that ``make bench`` measures our pipeline against, each run as a whole process.

* ``script``: what a careful engineer writes by hand: pyarrow reads row
  batches, eager ``model(x)`` scores them, pyarrow writes Parquet.
* ``tuned``: what a strong engineer writes in 15 lines: 64k-row batches and a
  compiled ``tf.function``, read -> compute -> write in series.
* ``limit``: the compute limit: the compiled model function on in-memory
  numpy, per batch size (prints JSON; no file I/O).
* ``beam-stock``: Beam's stock ``RunInference(TFModelHandlerNumpy)`` with one
  element per row, as the Beam ML examples do. It needs ``tensorflow_hub``,
  which the bench installs into a side directory, never into the runtime venv.

Usage: ``python -m benchmarks.baselines {script,tuned,beam-stock} --model M --input I --output O``
or ``python -m benchmarks.baselines limit --model M [--rows N] [--batches 8192,16384,...]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LIMIT_BATCHES = (8192, 16384, 65536)


def hand_written_script(
    model_path: str, input_path: str, output_path: str, id_column: str = "id"
) -> int:
    """Scores ``input_path`` with pyarrow + eager Keras; returns the number of rows written."""
    import keras
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = keras.saving.load_model(model_path, compile=False)
    source = pq.ParquetFile(input_path)
    features = [n for n in source.schema_arrow.names if n != id_column]
    schema = pa.schema([source.schema_arrow.field(id_column), pa.field("prediction", pa.float32())])
    rows = 0
    with pq.ParquetWriter(output_path, schema) as writer:
        for batch in source.iter_batches(columns=[id_column, *features]):
            x = np.column_stack([batch.column(c).to_numpy() for c in features])
            scores = np.asarray(model(x))[:, 0]
            writer.write_table(
                pa.table({id_column: batch.column(id_column), "prediction": scores}, schema=schema)
            )
            rows += batch.num_rows
    return rows


def tuned_script(model_path: str, input_path: str, output_path: str, id_column: str = "id") -> int:
    """64k-row batches + a compiled ``tf.function``, serial read -> compute -> write; returns rows."""
    import keras
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf

    model = keras.saving.load_model(model_path, compile=False)
    source = pq.ParquetFile(input_path)
    features = [n for n in source.schema_arrow.names if n != id_column]
    spec = tf.TensorSpec((None, len(features)), tf.float32)
    predict = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    schema = pa.schema([source.schema_arrow.field(id_column), pa.field("prediction", pa.float32())])
    rows = 0
    with pq.ParquetWriter(output_path, schema) as writer:
        for batch in source.iter_batches(batch_size=65536, columns=[id_column, *features]):
            x = np.column_stack([batch.column(c).to_numpy() for c in features])
            scores = predict(x).numpy()[:, 0]
            writer.write_table(
                pa.table({id_column: batch.column(id_column), "prediction": scores}, schema=schema)
            )
            rows += batch.num_rows
    return rows


def compute_limit(
    model_path: str, rows: int = 1_000_000, batches: Sequence[int] = LIMIT_BATCHES
) -> dict:
    """The compiled model function on in-memory numpy, per batch size; eager for reference.

    The input is random float32 of the model's (single) input shape, so the
    same limit serves W1's MLP and W2's CNN. On a GPU each call copies its
    batch to the device and the result back, as a pipeline's calls must.
    """
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.saving.load_model(model_path, compile=False)
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(1).normal(size=(rows, *shape)).astype(np.float32)
    compiled = tf.function(
        lambda t: model(t, training=False),
        input_signature=[tf.TensorSpec((None, *shape), tf.float32)],
    )

    def rate(fn, batch: int) -> float:
        fn(x[:batch])
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            for i in range(0, rows, batch):
                np.asarray(fn(x[i : i + batch]))
            best = max(best, rows / (time.perf_counter() - start))
        return best

    by_batch = {b: rate(compiled, b) for b in batches}
    best_batch = max(by_batch, key=by_batch.get)
    return {
        "rows": rows,
        "compiled_rows_per_second_by_batch": by_batch,
        "best_batch": best_batch,
        "rows_per_second": by_batch[best_batch],
        "eager_rows_per_second_8192": rate(lambda t: model(t, training=False), 8192),
    }


def beam_stock(model_path: str, input_path: str, output_path: str, id_column: str = "id") -> int:
    """Beam's stock per-row RunInference(TFModelHandlerNumpy); returns the number of rows."""
    import apache_beam as beam
    import numpy as np
    import pyarrow.parquet as pq
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
    from apache_beam.options.pipeline_options import PipelineOptions

    table = pq.read_table(input_path)
    features = [n for n in table.column_names if n != id_column]
    x = np.column_stack([table.column(c).to_numpy() for c in features]).astype(np.float32)
    handler = TFModelHandlerNumpy(model_path)
    options = PipelineOptions(["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Rows" >> beam.Create(list(x))
            | "RunInference" >> RunInference(handler)
            | "Score" >> beam.Map(lambda r: float(np.asarray(r.inference).reshape(-1)[0]))
            | "Write" >> beam.io.WriteToText(output_path)
        )
    return len(x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("script", "tuned", "beam-stock", "limit"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--rows", type=int, default=1_000_000, help="limit: in-memory rows")
    parser.add_argument(
        "--batches",
        default=",".join(map(str, LIMIT_BATCHES)),
        help="limit: comma-separated batch sizes",
    )
    args = parser.parse_args(argv)
    if args.mode == "limit":
        import json

        batches = [int(b) for b in args.batches.split(",")]
        print(json.dumps(compute_limit(args.model, args.rows, batches)))
        return 0
    if not (args.input and args.output):
        parser.error(f"{args.mode} needs --input and --output")
    fn = {"script": hand_written_script, "tuned": tuned_script, "beam-stock": beam_stock}
    rows = fn[args.mode](args.model, args.input, args.output)
    print(f"rows={rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
