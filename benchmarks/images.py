"""Benchmark W2 (called by ``make bench``): PNG images in TFRecord -> decode + resize + scale -> CNN.

20,000 PNG images of 64x64x3 in one TFRecord file, resized to 32x32 and
scaled to 0-1, scored by a small CNN. In one run it alternates, as whole
processes:

(a) ``batch-score score --input-format tfrecord --preprocess spec.yaml``;
(b) a hand-written ``tf.data`` script: TFRecordDataset -> parse -> decode /
    resize map (AUTOTUNE) -> batch -> ``model(x)`` -> Parquet.

Both include process start-up. The best round of each is reported as rows/s,
with the ratio (a)/(b) and the largest difference between their predictions.

Run alone: ``python -m benchmarks.images --workdir .bench [--images N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench import timed_process

SIZE_IN = 64
SIZE_OUT = 32
BATCH = 1024

SCRIPT = '''"""W2 baseline: a hand-written tf.data pipeline (what a careful user would write)."""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import keras

data, model_path, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SIZE = int(sys.argv[5])
model = keras.saving.load_model(model_path, compile=False)
spec = {"id": tf.io.FixedLenFeature([], tf.int64), "image": tf.io.FixedLenFeature([], tf.string)}


def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    image = tf.io.decode_png(ex["image"], channels=3)
    image = tf.image.resize(image, (SIZE, SIZE), method="bilinear") / 255.0
    return ex["id"], image


ds = (
    tf.data.TFRecordDataset(data)
    .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    .batch(batch)
    .prefetch(tf.data.AUTOTUNE)
)
ids, preds = [], []
for i, x in ds:
    ids.append(i.numpy())
    preds.append(np.asarray(model(x, training=False)))
p = np.concatenate(preds)
table = pa.table(
    {
        "id": np.concatenate(ids),
        "prediction": pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), p.shape[1]),
    }
)
pq.write_table(table, out)
'''


def prepare_w2(workdir: Path, n_images: int) -> dict[str, Path]:
    """Writes (once) the TFRecord of PNGs, the CNN, the spec and the baseline script."""
    import numpy as np

    from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

    import_tensorflow()
    import keras
    import tensorflow as tf

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "data": workdir / f"w2_{n_images}.tfrecord",
        "model": workdir / "w2_cnn.keras",
        "spec": workdir / "w2_spec.yaml",
        "script": workdir / "w2_tfdata.py",
    }
    if not paths["data"].exists():
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:SIZE_IN, 0:SIZE_IN]
        tmp = paths["data"].with_suffix(".partial")
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for i in range(n_images):
                # smooth colour gradients plus noise: compresses like a photo thumbnail, not like noise
                a, b, c = rng.uniform(0.5, 3.0, 3)
                base = np.stack(
                    [np.sin(xx / (8 * a)), np.cos(yy / (8 * b)), np.sin((xx + yy) / (8 * c))], -1
                )
                img = (127.5 * (base + 1) + rng.normal(0, 8, base.shape)).clip(0, 255)
                png = tf.io.encode_png(img.astype(np.uint8)).numpy()
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                        }
                    )
                )
                writer.write(example.SerializeToString())
        tmp.rename(paths["data"])
    if not paths["model"].exists():
        keras.utils.set_random_seed(0)
        inp = keras.Input((SIZE_OUT, SIZE_OUT, 3), name="image")
        h = keras.layers.Conv2D(16, 3, activation="relu")(inp)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(32, 3, activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h)).save(paths["model"])
    paths["spec"].write_text(
        "features:\n"
        f"  image: {{type: image, size: [{SIZE_OUT}, {SIZE_OUT}], resize: bilinear, scale: 0-1}}\n"
    )
    paths["script"].write_text(SCRIPT)
    return paths


def _predictions(path: Path) -> Any:
    import glob

    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(glob.glob(str(path))) if "*" in str(path) else [str(path)]
    table = pq.read_table(files).sort_by("id")
    return np.asarray(table["prediction"].to_pylist(), dtype=np.float64)


def run_w2(
    workdir: Path, n_images: int = 20000, rounds: int = 3, batch: int = BATCH
) -> dict[str, Any]:
    """Runs W2 and returns rows/s of both sides, their ratio and the prediction agreement."""
    import numpy as np

    workdir = Path(workdir)
    paths = prepare_w2(workdir, n_images)
    python = sys.executable
    ours_out = workdir / "w2_ours"
    script_out = workdir / "w2_script.parquet"
    ours_cmd = [
        python, "-m", "keras_batch_score.pipelines.cli", "score",
        "--model", str(paths["model"]), "--input", str(paths["data"]),
        "--input-format", "tfrecord", "--preprocess", str(paths["spec"]),
        "--id-column", "id", "--batch-size", str(batch), "--output", str(ours_out), "--quiet",
    ]  # fmt: skip
    script_cmd = [python, str(paths["script"]), str(paths["data"]), str(paths["model"]),
                  str(script_out), str(batch), str(SIZE_OUT)]  # fmt: skip
    ours, script = [], []
    for _ in range(rounds):
        ours.append(timed_process(ours_cmd))
        script.append(timed_process(script_cmd))
    best_ours = min(ours, key=lambda r: r["seconds"])
    best_script = min(script, key=lambda r: r["seconds"])
    a, b = _predictions(ours_out / "predictions-*.parquet"), _predictions(script_out)
    result = {
        "workload": f"{n_images} PNG {SIZE_IN}x{SIZE_IN}x3 in TFRecord -> {SIZE_OUT}x{SIZE_OUT} 0-1 -> CNN",
        "images": n_images,
        "rounds": rounds,
        "ours_rows_per_s": round(n_images / best_ours["seconds"], 1),
        "tfdata_script_rows_per_s": round(n_images / best_script["seconds"], 1),
        "ratio": round(best_script["seconds"] / best_ours["seconds"], 3),
        "ours_seconds": [round(r["seconds"], 2) for r in ours],
        "script_seconds": [round(r["seconds"], 2) for r in script],
        "ours_peak_rss_mib": round(best_ours["peak_rss_mib"]),
        "script_peak_rss_mib": round(best_script["peak_rss_mib"]),
        "rows_compared": len(a),
        "max_abs_prediction_diff": float(np.abs(a - b).max()) if a.shape == b.shape else None,
    }
    (workdir / "w2_results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".bench")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run_w2(Path(args.workdir), args.images, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
