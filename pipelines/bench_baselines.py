"""The baselines that ``make bench`` measures our pipeline against, each run as a whole process.

* ``script``: what a careful engineer writes by hand: pyarrow reads row
  batches, eager ``model(x)`` scores them, pyarrow writes Parquet.
* ``beam-stock``: Beam's stock ``RunInference(TFModelHandlerNumpy)`` with one
  element per row, as the Beam ML examples do. It needs ``tensorflow_hub``,
  which the bench installs into a side directory, never into the runtime venv.

Usage: ``python -m pipelines.bench_baselines {script,beam-stock} --model M --input I --output O``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
    parser.add_argument("mode", choices=("script", "beam-stock"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    fn = hand_written_script if args.mode == "script" else beam_stock
    rows = fn(args.model, args.input, args.output)
    print(f"rows={rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
