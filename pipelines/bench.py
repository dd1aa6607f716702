"""``make bench``: our pipeline against the alternatives, measured in one run.

Workload W1: 5,000,000 rows x 32 float32 features in Parquet (64k-row row
groups) and a Keras MLP 32-256-256-1. In one run it measures, as rows/s:

(a) ``batch-score score`` end to end on the local runner, as a whole process;
(b) a hand-written pyarrow + Keras script, as a whole process;
(c) the compute limit: the compiled model function on in-memory numpy at the
    best batch size (and eager ``model(x)`` for reference), in-process;
(d) Beam's stock per-row ``RunInference(TFModelHandlerNumpy)`` on a 50k-row subset;
(e) each ``--backend`` (keras, xla, onnxruntime, litert): the loaded model's
    predict call on in-memory batches of 8192 and 65536 rows, in-process, and its
    largest absolute difference from Keras' ``model(x, training=False)``.

(a) and (b) alternate over ``--rounds`` rounds; the best round of each is
reported, with peak RSS. Results go to ``<workdir>/bench_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

N_FEATURES = 32
ROW_GROUP = 65536


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def prepare_w1(workdir: Path, rows: int) -> tuple[Path, Path]:
    """Writes (once) the W1 Parquet input and the MLP; returns their paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.tf_quiet import import_tensorflow

    import_tensorflow()
    import keras

    data = workdir / f"w1_{rows}.parquet"
    model_path = workdir / "w1_mlp.keras"
    if not model_path.exists():
        keras.utils.set_random_seed(0)
        inp = keras.Input((N_FEATURES,), name="features")
        h = keras.layers.Dense(256, activation="relu")(inp)
        h = keras.layers.Dense(256, activation="relu")(h)
        keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h)).save(model_path)
    if not data.exists():
        rng = np.random.default_rng(0)
        schema = pa.schema(
            [("id", pa.int64())] + [(f"f{i}", pa.float32()) for i in range(N_FEATURES)]
        )
        tmp = data.with_suffix(".partial")
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, rows, ROW_GROUP):
                n = min(ROW_GROUP, rows - start)
                x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
                cols = [pa.array(np.arange(start, start + n, dtype=np.int64))] + [
                    pa.array(x[:, i]) for i in range(N_FEATURES)
                ]
                writer.write_table(
                    pa.Table.from_arrays(cols, schema=schema), row_group_size=ROW_GROUP
                )
        tmp.rename(data)
    return data, model_path


def timed_process(cmd: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs ``cmd``; returns wall seconds and peak RSS (MiB) of that process alone.

    Output goes to temporary files, not pipes, so a chatty child cannot fill a
    pipe and block while we wait for it.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code != 0:
            out.seek(0)
            err.seek(0)
            tail = (
                out.read().decode(errors="replace")[-2000:],
                err.read().decode(errors="replace")[-4000:],
            )
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{tail[0]}\n{tail[1]}")
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def compute_limit(model_path: Path, rows: int = 1_000_000) -> dict[str, Any]:
    """(c): compiled model function on in-memory numpy, per batch size; eager for reference."""
    import numpy as np

    from transforms.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    x = np.random.default_rng(1).normal(size=(rows, N_FEATURES)).astype(np.float32)
    compiled = tf.function(
        lambda t: model(t, training=False),
        input_signature=[tf.TensorSpec((None, N_FEATURES), tf.float32)],
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

    by_batch = {b: rate(compiled, b) for b in (2048, 8192, 16384, 65536)}
    best_batch = max(by_batch, key=by_batch.get)
    return {
        "compiled_rows_per_second_by_batch": by_batch,
        "best_batch": best_batch,
        "rows_per_second": by_batch[best_batch],
        "eager_rows_per_second_8192": rate(lambda t: model(t, training=False), 8192),
    }


def backend_table(
    model_path: Path, rows: int = 1_000_000, batches: Sequence[int] = (8192, 65536)
) -> dict[str, Any]:
    """(e): per backend, rows/s of its predict call per batch size, and max |diff| vs Keras.

    Each backend is loaded as the pipeline loads it (:func:`transforms.keras_model.load`,
    converting the model where the backend needs it). A backend that is not
    installed or cannot take the model is reported with the reason instead.
    """
    import numpy as np

    from transforms.backends import BACKENDS, missing_modules
    from transforms.errors import ConfigError
    from transforms.keras_model import ModelSpec, load
    from transforms.tf_quiet import import_tensorflow

    import_tensorflow()
    import keras

    reference_model = keras.saving.load_model(model_path, compile=False)
    x = np.random.default_rng(2).normal(size=(rows, N_FEATURES)).astype(np.float32)
    check = x[: min(rows, 65536)]
    reference = np.asarray(reference_model(check, training=False)).reshape(-1)
    table: dict[str, Any] = {}
    for backend in BACKENDS:
        missing = missing_modules(backend)
        if missing:
            table[backend] = {"skipped": f"not installed: {', '.join(missing)}"}
            continue
        start = time.perf_counter()
        try:
            model = load(ModelSpec(str(model_path), backend=backend))
        except ConfigError as e:
            table[backend] = {"skipped": str(e)}
            continue
        load_seconds = time.perf_counter() - start

        def predict(batch: np.ndarray, model: Any = model) -> np.ndarray:
            return model.predict({model.inputs[0].name: batch})[model.outputs[0].name]

        by_batch = {}
        for size in batches:
            predict(x[:size])  # warm up (traces, allocates)
            best = 0.0
            for _ in range(2):
                began = time.perf_counter()
                for i in range(0, rows, size):
                    predict(x[i : i + size])
                best = max(best, rows / (time.perf_counter() - began))
            by_batch[size] = best
        got = np.concatenate(
            [predict(check[i : i + batches[0]]) for i in range(0, len(check), batches[0])]
        )
        table[backend] = {
            "rows_per_second_by_batch": by_batch,
            "max_abs_diff_vs_keras": float(np.abs(got.reshape(-1) - reference).max()),
            "load_seconds": round(load_seconds, 2),
        }
    return table


def format_backend_table(table: dict[str, Any]) -> str:
    """The (e) table: a user picks a backend by speed and by difference from Keras."""
    sizes = sorted({int(b) for r in table.values() for b in r.get("rows_per_second_by_batch", {})})
    lines = [
        "| --backend | " + " | ".join(f"rows/s, batch {b:,}" for b in sizes) + " | max abs diff |",
        "|---|" + "---:|" * len(sizes) + "---:|",
    ]
    for backend, r in table.items():
        if "rows_per_second_by_batch" not in r:
            lines.append(f"| {backend} | {r.get('skipped', '')} |")
            continue
        rates = r["rows_per_second_by_batch"]
        cells = [f"{rates.get(b, rates.get(str(b), 0)):,.0f}" for b in sizes]
        lines.append(f"| {backend} | {' | '.join(cells)} | {r['max_abs_diff_vs_keras']:.1e} |")
    return "\n".join(lines)


def stock_env(workdir: Path) -> dict[str, str] | None:
    """PYTHONPATH with tensorflow_hub (+ tf-keras) installed beside, not into, the venv."""
    site = workdir / "stock-site"
    if not (site / "pkg_resources").exists():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            "tensorflow-hub==0.16.1",
            "tf-keras==2.21.0",
            # tensorflow_hub imports pkg_resources, which setuptools 81 removed.
            "setuptools==80.9.0",
        ]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def subset(data: Path, workdir: Path, rows: int) -> Path:
    import pyarrow.parquet as pq

    path = workdir / f"w1_subset_{rows}.parquet"
    if not path.exists():
        pq.write_table(pq.ParquetFile(data).read_row_groups([0]).slice(0, rows), path)
    return path


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description="Benchmark keras-batch-score against its baselines."
    )
    parser.add_argument("--workdir", default=".bench")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stock-rows", type=int, default=50_000)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--skip-w2", action="store_true", help="Skip the image workload (W2).")
    parser.add_argument(
        "--backend-rows", type=int, default=1_000_000, help="Rows per backend in (e)."
    )
    parser.add_argument(
        "--pipeline-flag",
        action="append",
        default=[],
        help="Extra flag for (a), e.g. --batch-size=8192.",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"W1: preparing {args.rows:,} rows x {N_FEATURES} features in {workdir} ...", flush=True)
    data, model = prepare_w1(workdir, args.rows)
    bin_dir = _venv_bin()
    results: dict[str, Any] = {
        "workload": f"W1: {args.rows:,} rows x {N_FEATURES} float32, Parquet 64k row groups, MLP 32-256-256-1",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }

    print("(c) compute limit (in-process) ...", flush=True)
    results["c_compute_limit"] = compute_limit(model)
    print("(e) backends (in-process) ...", flush=True)
    results["e_backends"] = backend_table(model, rows=args.backend_rows)

    runs: dict[str, list[dict[str, Any]]] = {"a_pipeline": [], "b_script": [], "a_bf16": []}
    for r in range(args.rounds):
        out_a = workdir / "out_pipeline"
        cmd_a = [
            str(bin_dir / "batch-score"),
            "score",
            "--model",
            str(model),
            "--input",
            str(data),
            "--output",
            str(out_a),
            "--id-column",
            "id",
            "--quiet",
            *args.pipeline_flag,
        ]
        runs["a_pipeline"].append(timed_process(cmd_a))
        cmd_b = [
            sys.executable,
            "-m",
            "pipelines.bench_baselines",
            "script",
            "--model",
            str(model),
            "--input",
            str(data),
            "--output",
            str(workdir / "out_script.parquet"),
        ]
        runs["b_script"].append(timed_process(cmd_b))
        cmd_bf16 = [*cmd_a, "--precision", "bfloat16"]
        cmd_bf16[cmd_bf16.index(str(out_a))] = str(workdir / "out_pipeline_bf16")
        runs["a_bf16"].append(timed_process(cmd_bf16))
        print(
            f"  round {r + 1}: pipeline {runs['a_pipeline'][-1]['seconds']:.1f}s, "
            f"script {runs['b_script'][-1]['seconds']:.1f}s, "
            f"pipeline --precision bfloat16 {runs['a_bf16'][-1]['seconds']:.1f}s",
            flush=True,
        )
    for key, measured in runs.items():
        best = min(measured, key=lambda m: m["seconds"])
        results[key] = {
            "rows_per_second": args.rows / best["seconds"],
            "seconds": [round(m["seconds"], 2) for m in measured],
            "peak_rss_mib": round(max(m["peak_rss_mib"] for m in measured), 1),
        }
    with open(workdir / "out_pipeline" / "run_summary.json") as f:
        summary = json.load(f)
    assert summary["rows_scored"] == args.rows, (
        f"pipeline scored {summary['rows_scored']} of {args.rows} rows"
    )

    if not args.skip_stock:
        env = stock_env(workdir)
        if env is None:
            results["d_beam_stock"] = {
                "skipped": "could not install tensorflow-hub into the side directory"
            }
        else:
            print(
                f"(d) stock Beam RunInference, one element per row, {args.stock_rows:,} rows ...",
                flush=True,
            )
            small = subset(data, workdir, args.stock_rows)
            cmd_d = [
                sys.executable,
                "-m",
                "pipelines.bench_baselines",
                "beam-stock",
                "--model",
                str(model),
                "--input",
                str(small),
                "--output",
                str(workdir / "out_stock"),
            ]
            try:
                m = timed_process(cmd_d, env=env)
            except RuntimeError as e:
                results["d_beam_stock"] = {"failed": str(e)[-1500:]}
            else:
                results["d_beam_stock"] = {
                    "rows_per_second": args.stock_rows / m["seconds"],
                    "rows": args.stock_rows,
                    "seconds": round(m["seconds"], 2),
                    "peak_rss_mib": round(m["peak_rss_mib"], 1),
                }

    a = results["a_pipeline"]["rows_per_second"]
    ratios = {
        "a/b": a / results["b_script"]["rows_per_second"],
        "a/c": a / results["c_compute_limit"]["rows_per_second"],
        "a_bf16/b": results["a_bf16"]["rows_per_second"] / results["b_script"]["rows_per_second"],
    }
    if "rows_per_second" in results.get("d_beam_stock", {}):
        ratios["a/d"] = a / results["d_beam_stock"]["rows_per_second"]
    results["ratios"] = ratios

    if not args.skip_w2:
        try:
            from pipelines import bench_images
        except ImportError:
            bench_images = None  # type: ignore[assignment]
        if bench_images is not None and hasattr(bench_images, "run_w2"):
            print("W2: image workload ...", flush=True)
            results["w2"] = bench_images.run_w2(workdir)

    with open(workdir / "bench_results.json", "w") as f:
        json.dump(results, f, indent=2)
    print(format_table(results))
    return results


def format_table(results: dict[str, Any]) -> str:
    rows = [
        ("(a) batch-score pipeline, whole process", results["a_pipeline"]),
        ("(b) hand-written pyarrow + Keras script, whole process", results["b_script"]),
        ("(a') batch-score pipeline, --precision bfloat16 (opt-in)", results.get("a_bf16", {})),
        ("(c) compute limit: compiled fn, in-memory, best batch", results["c_compute_limit"]),
        ("(d) stock Beam RunInference, per row", results.get("d_beam_stock", {})),
    ]
    lines = [
        results["workload"],
        results["machine"],
        "",
        "| way of scoring | rows/s | peak RSS MiB |",
        "|---|---:|---:|",
    ]
    for name, r in rows:
        if "rows_per_second" in r:
            lines.append(f"| {name} | {r['rows_per_second']:,.0f} | {r.get('peak_rss_mib', '')} |")
    c = results["c_compute_limit"]
    lines.append(
        f"| eager model(x), 8192 rows, in-memory (reference) | {c['eager_rows_per_second_8192']:,.0f} | |"
    )
    if "e_backends" in results:
        lines += ["", "(e) backends: predict call on in-memory batches, in-process"]
        lines.append(format_backend_table(results["e_backends"]))
    lines.append("")
    lines.append("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in results["ratios"].items()))
    if "w2" in results:
        lines.append(f"W2: {json.dumps(results['w2'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    run()
