"""``make demo``: train a small Keras model on a real dataset, then score it with the pipeline.

The data is scikit-learn's bundled Wisconsin breast-cancer dataset (569 rows,
30 numeric features; offline). The demo trains a classifier whose first layer
is a ``Normalization`` adapted on the training rows (so scoring needs no
separate preprocessing), writes the held-out rows to Parquet with an ``id``
column, spoils three rows on purpose (NaN, null, Inf) to show the errors
output, and runs ``batch-score score`` on them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keras_batch_score.pipelines import console


def load_dataset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    return data.data.astype(np.float32), data.target.astype(np.float32), names


def train_model(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A 30-32-1 classifier with a built-in Normalization layer."""
    from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(name="standardize")
    norm.adapt(x)
    inp = keras.Input((x.shape[1],), name="features")
    h = keras.layers.Dense(32, activation="relu")(norm(inp))
    out = keras.layers.Dense(1, activation="sigmoid", name="malignant_probability")(h)
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"]
    )
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    return model


def to_table(
    x: np.ndarray, names: Sequence[str], ids: np.ndarray, y: np.ndarray | None = None
) -> pa.Table:
    columns: dict[str, Any] = {"id": pa.array(ids.astype(np.int64))}
    columns.update({name: pa.array(x[:, i]) for i, name in enumerate(names)})
    if y is not None:
        columns["label"] = pa.array(y.astype(np.int64))
    return pa.table(columns)


def prepare(workdir: Path) -> dict[str, Path]:
    """Trains the model and writes the demo's Parquet files; returns their paths.

    Splits: 300 rows to train, 120 to fit the calibration, 149 to score (three
    of them spoiled on purpose: NaN, Inf and null).
    """
    x, y, names = load_dataset()
    order = np.random.default_rng(0).permutation(len(x))
    train, calib, held_out = order[:300], order[300:420], order[420:]
    model = train_model(x[train], y[train])
    paths = {
        "model": workdir / "model" / "breast_cancer.keras",
        "train": workdir / "data" / "train.parquet",
        "calib": workdir / "data" / "calibration.parquet",
        "score": workdir / "data" / "to_score.parquet",
        "shifted": workdir / "data" / "to_score_shifted.parquet",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    model.save(paths["model"])
    pq.write_table(to_table(x[train], names, train, y[train]), paths["train"])
    pq.write_table(to_table(x[calib], names, calib, y[calib]), paths["calib"])
    spoiled = x[held_out].copy()
    spoiled[0, 0] = np.nan
    spoiled[1, 5] = np.inf
    table = to_table(spoiled, names, held_out, y[held_out])
    null_mask = np.zeros(len(held_out), dtype=bool)
    null_mask[2] = True
    table = table.set_column(3, names[2], pa.array(spoiled[:, 2], mask=null_mask))
    pq.write_table(table, paths["score"], row_group_size=64)
    # The "next month" slice: the ten worst_* measurements read one training std higher.
    shifted = x[held_out].copy()
    worst = [i for i, n in enumerate(names) if n.startswith("worst_")]
    shifted[:, worst] += x[train][:, worst].std(axis=0)
    pq.write_table(
        to_table(shifted, names, held_out, y[held_out]), paths["shifted"], row_group_size=64
    )
    return paths


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".demo")
    args = parser.parse_args(argv)
    console.configure("normal")
    workdir = Path(args.workdir).resolve()
    console.echo(
        f"demo: training a breast-cancer classifier and writing Parquet under {workdir} ..."
    )
    paths = prepare(workdir)
    _, _, names = load_dataset()
    from keras_batch_score.pipelines import calibrate, profile, score

    columns = ["--id-column", "id", "--feature-columns", ",".join(names)]
    profile_path = workdir / "profile.json"
    calib_path = workdir / "calibration" / "calibration.json"
    console.echo(
        "\n1. reference profile of the training data and its predictions (batch-score profile)"
    )
    profile.run(
        [
            "--input",
            str(paths["train"]),
            "--output",
            str(profile_path),
            "--model",
            str(paths["model"]),
            *columns,
        ]
    )
    console.echo("\n2. temperature calibration on the calibration split (batch-score calibrate)")
    calibrate.run(
        ["--model", str(paths["model"]), "--input", str(paths["calib"]), "--label-column", "label",
         "--method", "temperature", "--output", str(calib_path), *columns]
    )  # fmt: skip

    console.echo("\n3. the scoring job (batch-score score): held-out rows, calibrated")
    out = workdir / "scores"
    summary = score.run(
        ["--model", str(paths["model"]), "--input", str(paths["score"]), "--output", str(out),
         "--calibration", str(calib_path), "--batch-size", "64", *columns]
    )  # fmt: skip
    console.echo("run_summary.json:")
    shown = (
        "rows_read",
        "rows_scored",
        "rows_failed",
        "reconciled",
        "elapsed_seconds",
        "rows_per_second",
        "model",
    )
    console.echo(json.dumps({k: summary[k] for k in shown}, indent=2))
    with open(next(out.glob("errors-*.jsonl"))) as f:
        for line in f:
            error = json.loads(line)
            console.echo(
                f"rejected: id={error['row']['id']} stage={error['stage']} reason={error['reason']!r}"
            )
    _report_calibration(paths, out, names)

    console.echo("\n4. a deliberately shifted slice against the same reference profile")
    shifted_out = workdir / "scores_shifted"
    shifted = score.run(
        ["--model", str(paths["model"]), "--input", str(paths["shifted"]), "--output", str(shifted_out),
         "--reference-profile", str(profile_path), "--batch-size", "64", *columns]
    )  # fmt: skip
    console.echo(
        f"machine-readable drift report: {shifted_out / 'drift.json'} (drift_detected={shifted['drift']['drift_detected']})"
    )
    console.echo(f"\noutputs in {out}: {sorted(os.listdir(out))}")
    return summary


def _report_calibration(paths: dict[str, Path], out: Path, names: Sequence[str]) -> None:
    """ECE of the raw model and of the calibrated job output on the held-out rows."""
    import keras

    from keras_batch_score.transforms.postprocess.calibration_metrics import metrics

    scored = pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("predictions-*.parquet"))])
    truth = pq.read_table(paths["score"]).select(["id", "label", *names])
    joined = scored.join(truth, "id")
    labels = joined["label"].to_numpy()
    x = np.column_stack([joined[n].to_numpy() for n in names]).astype(np.float32)
    raw = np.asarray(keras.saving.load_model(paths["model"])(x, training=False))[:, 0]
    before, after = metrics(raw, labels), metrics(joined["prediction"].to_numpy(), labels)
    console.echo(
        f"calibration on {len(labels)} held-out rows: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
        f"NLL {before['nll']:.4f} -> {after['nll']:.4f}, Brier {before['brier']:.4f} -> {after['brier']:.4f}"
    )


if __name__ == "__main__":
    run()
