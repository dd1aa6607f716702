"""``make bench``: every row of the performance table, measured in one run, into ``bench.json``.

Whole processes, start-up included, alternating rounds (the best round of
each is kept). Per row it records our figure, the reference figure, their
ratio and the target:

* W1 (5M rows x 32 float32 in Parquet with 64k-row row groups, MLP
  32-256-256-1): ``batch-score score`` against the hand-written pyarrow + Keras
  script and the *tuned* script (64k-row batches + compiled ``tf.function``),
  and against the compute limit (compiled function on in-memory numpy);
* W1 on Ray Data and on Spark ``local[2]`` (:mod:`benchmarks.frameworks`, one
  round each, installed beside the venv), same model, predictions compared;
* W1 at 20M rows: peak RSS against 5M, and the steady-state marginal rate
  ``(20M - 5M) / (t20 - t5)`` against the compute limit;
* W1 with ``--reference-profile`` (a profile of 1M of the rows, with the
  model's predictions) against without;
* ``batch-score profile`` at 1M and 5M rows: whole-process time and the rate
  after start-up (the difference of the two);
* W2 (PNG images in TFRecord, :mod:`benchmarks.images`) at 20k and 100k
  images against a ``tf.data`` script;
* the time from launch to the first ``progress:`` line of a W1 run;
* each ``--backend`` (keras, xla, onnxruntime, litert): the loaded model's
  predict call on in-memory batches of 8192 and 65536 rows, in-process, and its
  largest absolute difference from Keras' ``model(x, training=False)``.

Peak RSS is the child's own (``/usr/bin/time -f %M``, else psutil sampling of
the child's process tree); ``wait4``'s ``ru_maxrss`` is not used, since a
forked child inherits the parent's high-water mark.

``--quick`` runs the same harness on small sizes (one round) to check it end
to end. Results: ``<workdir>/bench.json``, and a markdown table printed and
written to ``<workdir>/bench.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

N_FEATURES = 32
ROW_GROUP = 65536
PROGRESS_MARKER = "progress:"

FULL = {
    "w1_rows": 5_000_000,
    "w1_big_rows": 20_000_000,
    "profile_rows": 1_000_000,  # profile's small size, and the reference profile's rows
    "w2_images": (20_000, 100_000),
    "limit_rows": 1_000_000,
    "rounds": 3,
    "w2_rounds": 3,  # the tf.data script has a fast and a slow speed; its best of 3 counts
    "big_rounds": 2,  # the steady state is best 20M minus best 5M: both need a best of several
}
QUICK = {
    "w1_rows": 200_000,
    "w1_big_rows": 800_000,
    "profile_rows": 100_000,
    "w2_images": (2_000, 4_000),
    "limit_rows": 200_000,
    "rounds": 1,
    "w2_rounds": 1,
    "big_rounds": 1,
}


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def prepare_w1(workdir: Path, rows: int) -> tuple[Path, Path]:
    """Writes (once) the W1 Parquet input and the MLP; returns their paths.

    Files of different sizes share their first rows (same seed, same row groups).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

    data = workdir / f"w1_{rows}.parquet"
    model_path = workdir / "w1_mlp.keras"
    if not model_path.exists():
        import_tensorflow()
        import keras

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


class _TreeRssSampler:
    """Peak RSS of a process and its children, sampled every 50 ms (psutil)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed_process(
    cmd: Sequence[str], env: dict[str, str] | None = None, *, marker: str = PROGRESS_MARKER
) -> dict[str, Any]:
    """Runs ``cmd``; returns its wall seconds, its own peak RSS (MiB) and when ``marker`` first showed.

    Peak RSS comes from ``/usr/bin/time -f %M`` when present, else from psutil
    sampling of the child's process tree, else it is None. The child's stdout
    and stderr are read as they come (so a chatty child never blocks), each
    line timestamped; ``first_marker_seconds`` is the time from launch to the
    first line containing ``marker`` (None if none did).
    """
    time_bin = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        full = list(cmd)
        method = "none"
        if time_bin:
            full = [time_bin, "-f", "%M", "-o", rss_file.name, *full]
            method = "/usr/bin/time -f %M"
        start = time.perf_counter()
        proc = subprocess.Popen(
            full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        sampler = None
        if not time_bin:
            try:
                sampler = _TreeRssSampler(proc.pid)
                method = "psutil (child process tree)"
            except ImportError:
                pass
        tail: collections.deque[str] = collections.deque(maxlen=60)
        first_marker = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if first_marker is None and marker and marker in line:
                first_marker = time.perf_counter() - start
            tail.append(line)
        code = proc.wait()
        wall = time.perf_counter() - start
        peak_kib = sampler.stop() / 1024 if sampler else None
        if time_bin:
            rss_file.seek(0)
            lines = [x for x in rss_file.read().split() if x.isdigit()]
            peak_kib = int(lines[-1]) if lines else None
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{''.join(tail)[-4000:]}")
    return {
        "seconds": round(wall, 3),
        "peak_rss_mib": None if peak_kib is None else round(peak_kib / 1024, 1),
        "first_marker_seconds": None if first_marker is None else round(first_marker, 3),
        "rss_method": method,
    }


def backend_table(
    model_path: Path, rows: int = 1_000_000, batches: Sequence[int] = (8192, 65536)
) -> dict[str, Any]:
    """(e): per backend, rows/s of its predict call per batch size, and max |diff| vs Keras.

    Each backend is loaded as the pipeline loads it (:func:`keras_batch_score.transforms.model.load.load`,
    converting the model where the backend needs it). A backend that is not
    installed or cannot take the model is reported with the reason instead.
    """
    import numpy as np

    from keras_batch_score.transforms.core.errors import ConfigError
    from keras_batch_score.transforms.core.tf_quiet import import_tensorflow
    from keras_batch_score.transforms.model.backends import BACKENDS, missing_modules
    from keras_batch_score.transforms.model.load import load
    from keras_batch_score.transforms.model.spec import ModelSpec

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


def compute_limit(
    model_path: Path, rows: int = 1_000_000, batches: Sequence[int] = ()
) -> dict[str, Any]:
    """The compute limit, measured in a child process (compiled fn on in-memory numpy).

    ``batches``: the batch sizes tried (default: the baseline's own).
    """
    cmd = [*_baseline_prefix("limit"), "--model", str(model_path), "--rows", str(rows)]
    if batches:
        cmd += ["--batches", ",".join(map(str, batches))]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compute limit failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def _best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def _summary(runs: Sequence[dict[str, Any]], rows: int | None = None) -> dict[str, Any]:
    best = _best(runs)
    out = {
        "seconds": [r["seconds"] for r in runs],
        "best_seconds": best["seconds"],
        "peak_rss_mib": max((r["peak_rss_mib"] or 0) for r in runs) or None,
    }
    if rows:
        out["rows"] = rows
        out["rows_per_second"] = round(rows / best["seconds"], 1)
    markers = [r["first_marker_seconds"] for r in runs if r["first_marker_seconds"] is not None]
    if markers:
        out["first_progress_seconds"] = markers
    return out


def _row(
    key: str,
    what: str,
    ours: float | None,
    reference: float | None,
    unit: str,
    ratio: float | None,
    target: str,
    met: bool | None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "key": key,
        "workload": what,
        "ours": ours,
        "reference": reference,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
        "note": note,
    }


def _score_cmd(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(_venv_bin() / "batch-score"),
        "score",
        "--model",
        str(model),
        "--input",
        str(data),
        "--output",
        str(out),
        "--id-column",
        "id",
        *extra,
    ]


def _baseline_cmd(mode: str, model: Path, data: Path, out: Path) -> list[str]:
    return [
        *_baseline_prefix(mode),
        "--model",
        str(model),
        "--input",
        str(data),
        "--output",
        str(out),
    ]


def _baseline_prefix(mode: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.baselines", mode]


def _profile_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(_venv_bin() / "batch-score"),
        "profile",
        "--input",
        str(data),
        "--output",
        str(out),
        "--id-column",
        "id",
        "--quiet",
        *extra,
    ]


def _check_scored(out_dir: Path, rows: int) -> None:
    with open(out_dir / "run_summary.json") as f:
        summary = json.load(f)
    if summary["rows_scored"] != rows:
        raise RuntimeError(f"{out_dir}: scored {summary['rows_scored']:,} of {rows:,} rows")


def _say(message: str) -> None:
    print(message, flush=True)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Measure the performance table into bench.json.")
    parser.add_argument("--workdir", default=".bench")
    parser.add_argument("--quick", action="store_true", help="Small sizes, one round.")
    parser.add_argument("--rounds", type=int, help="Alternating rounds (default 3, quick 1).")
    parser.add_argument("--skip-w2", action="store_true", help="Skip the image workload (W2).")
    parser.add_argument("--skip-big", action="store_true", help="Skip the 20M-row W1 run.")
    parser.add_argument(
        "--skip-frameworks", action="store_true", help="Skip W1 on Ray Data and Spark."
    )
    parser.add_argument("--bf16", action="store_true", help="Also W1 with --precision bfloat16.")
    parser.add_argument(
        "--stock", action="store_true", help="Also Beam's per-row stock RunInference (50k rows)."
    )
    parser.add_argument(
        "--backend-rows", type=int, help="Rows per backend in the backend table (default 1M)."
    )
    parser.add_argument(
        "--pipeline-flag",
        action="append",
        default=[],
        help="Extra flag for our W1 runs, e.g. --batch-size=65536.",
    )
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.rounds:
        sizes["rounds"] = sizes["w2_rounds"] = sizes["big_rounds"] = args.rounds
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rows, big, small = sizes["w1_rows"], sizes["w1_big_rows"], sizes["profile_rows"]
    rounds = sizes["rounds"]
    started = time.time()

    _say(f"W1: preparing {small:,}, {rows:,} and {big:,} rows in {workdir} ...")
    data, model = prepare_w1(workdir, rows)
    ref_data, _ = prepare_w1(workdir, small)
    big_data = None if args.skip_big else prepare_w1(workdir, big)[0]

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_at_start": list(os.getloadavg()),
        "quick": args.quick,
        "sizes": sizes,
        "runs": {},
    }
    raw = results["runs"]

    _say("compute limit (compiled fn, in-memory, child process) ...")
    raw["compute_limit"] = compute_limit(model, sizes["limit_rows"])
    _say("backends: predict call on in-memory batches, in-process ...")
    results["backends"] = backend_table(
        model, rows=args.backend_rows or (131_072 if args.quick else 1_000_000)
    )

    _say(f"reference profile: {small:,} rows with the model's predictions ...")
    ref_profile = workdir / "w1_reference_profile.json"
    raw["reference_profile_build"] = timed_process(
        _profile_cmd(ref_data, ref_profile, "--model", str(model))
    )

    variants: dict[str, list[str]] = {
        "ours": _score_cmd(model, data, workdir / "out_ours", *args.pipeline_flag),
        "script": _baseline_cmd("script", model, data, workdir / "out_script.parquet"),
        "tuned": _baseline_cmd("tuned", model, data, workdir / "out_tuned.parquet"),
        "ours_drift": _score_cmd(
            model,
            data,
            workdir / "out_ours_drift",
            "--reference-profile",
            str(ref_profile),
            *args.pipeline_flag,
        ),
        "profile_small": _profile_cmd(ref_data, workdir / "profile_small.json"),
        "profile_large": _profile_cmd(data, workdir / "profile_large.json"),
    }
    if args.bf16:
        variants["ours_bf16"] = _score_cmd(
            model, data, workdir / "out_ours_bf16", "--precision", "bfloat16"
        )
    measured: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for r in range(rounds):
        for key, cmd in variants.items():
            measured[key].append(timed_process(cmd))
        _say(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1]['seconds']:.1f}s" for k, v in measured.items())
        )
    _check_scored(workdir / "out_ours", rows)
    _check_scored(workdir / "out_ours_drift", rows)
    for key in ("ours", "script", "tuned", "ours_drift", "ours_bf16"):
        if key in measured:
            raw[f"w1_{key}"] = _summary(measured[key], rows)
    raw["profile_small"] = _summary(measured["profile_small"], small)
    raw["profile_large"] = _summary(measured["profile_large"], rows)

    if not args.skip_frameworks:
        raw.update(run_frameworks(workdir, model, data, rows))

    if big_data is not None:
        _say(f"W1 at {big:,} rows (memory, steady state) ...")
        out_big = workdir / "out_ours_big"
        big_cmd = _score_cmd(model, big_data, out_big, *args.pipeline_flag)
        raw["w1_ours_big"] = _summary(
            [timed_process(big_cmd) for _ in range(sizes["big_rounds"])], big
        )
        _check_scored(out_big, big)
        shutil.rmtree(out_big, ignore_errors=True)

    if args.stock:
        env = stock_env(workdir)
        if env is None:
            raw["beam_stock"] = {"skipped": "could not install tensorflow-hub beside the venv"}
        else:
            _say("stock Beam RunInference, one element per row, 50,000 rows ...")
            small_subset = subset(data, workdir, 50_000)
            cmd = _baseline_cmd("beam-stock", model, small_subset, workdir / "out_stock")
            raw["beam_stock"] = _summary([timed_process(cmd, env=env)], 50_000)

    if not args.skip_w2:
        from benchmarks import images as bench_images

        for n in sizes["w2_images"]:
            _say(f"W2: {n:,} images ...")
            raw[f"w2_{n}"] = bench_images.run_w2(workdir, n, sizes["w2_rounds"])

    results["rows"] = table_rows(results)
    results["total_seconds"] = round(time.time() - started, 1)
    results["load_average_at_end"] = list(os.getloadavg())
    write_results(results, workdir, "bench")
    return results


def write_results(results: dict[str, Any], workdir: Path, stem: str) -> None:
    """Writes ``<stem>.json`` and its markdown table ``<stem>.md`` into ``workdir``; prints the table."""
    with open(workdir / f"{stem}.json", "w") as f:
        json.dump(results, f, indent=2)
    table = format_table(results)
    (workdir / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {workdir / f'{stem}.json'}, {workdir / f'{stem}.md'}")


def run_frameworks(workdir: Path, model: Path, data: Path, rows: int) -> dict[str, Any]:
    """W1 on Ray Data and on Spark, one round each, predictions compared with ours."""
    from benchmarks import frameworks

    _say("W1 on Ray Data and Spark local[2] (one round each) ...")
    env, why = frameworks.framework_env(workdir)
    out: dict[str, Any] = {}
    for engine in ("ray", "spark"):
        if env is None or (engine == "spark" and not frameworks.has_java()):
            out[f"w1_{engine}"] = {"skipped": why or "no Java runtime on the PATH"}
            continue
        target = workdir / f"out_{engine}"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-m", "benchmarks.frameworks", engine, "--model", str(model),
               "--input", str(data), "--output", str(target)]  # fmt: skip
        run = timed_process(cmd, env=env)
        out[f"w1_{engine}"] = {
            **_summary([run], rows),
            "max_abs_prediction_diff": _prediction_diff(target, workdir / "out_ours", rows),
        }
        shutil.rmtree(target, ignore_errors=True)
    return out


def _prediction_diff(theirs: Path, ours: Path, rows: int) -> float:
    """Largest absolute difference between two outputs' predictions, matched by id."""
    import numpy as np
    import pyarrow.parquet as pq

    a = pq.read_table(theirs, columns=["id", "prediction"]).sort_by("id")
    b = pq.read_table(sorted(ours.glob("predictions-*.parquet")), columns=["id", "prediction"])
    b = b.sort_by("id")
    if a.num_rows != rows or b.num_rows != rows:
        raise RuntimeError(f"{theirs}: {a.num_rows:,} rows, ours {b.num_rows:,}, expected {rows:,}")
    if not np.array_equal(a.column("id").to_numpy(), b.column("id").to_numpy()):
        raise RuntimeError(f"{theirs}: the ids differ from ours")
    diff = a.column("prediction").to_numpy() - b.column("prediction").to_numpy()
    return float(np.abs(diff).max())


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance table's rows (ours, reference, ratio, target, met) from the raw runs."""
    raw, sizes = results["runs"], results["sizes"]
    rows_n, big_n, small_n = sizes["w1_rows"], sizes["w1_big_rows"], sizes["profile_rows"]
    ours = raw["w1_ours"]
    limit = raw["compute_limit"]["rows_per_second"]
    a = ours["rows_per_second"]
    out = []
    for key, name, target in (
        ("script", "hand-written script", 1.5),
        ("tuned", "tuned script", 1.2),
    ):
        b = raw[f"w1_{key}"]["rows_per_second"]
        out.append(
            _row(
                f"w1_vs_{key}",
                f"W1 {rows_n:,} rows: batch-score score vs the {name}",
                a,
                b,
                "rows/s",
                a / b,
                f">= {target}x",
                a / b >= target,
            )
        )
    for key, name in (
        ("ray", "Ray Data (map_batches, 64k)"),
        ("spark", "Spark local[2] (mapInArrow)"),
    ):
        engine = raw.get(f"w1_{key}", {})
        if "rows_per_second" in engine:
            b = engine["rows_per_second"]
            out.append(
                _row(
                    f"w1_vs_{key}",
                    f"W1 {rows_n:,} rows: batch-score score vs {name}",
                    a,
                    b,
                    "rows/s",
                    a / b,
                    "> 1x (stay ahead)",
                    a / b > 1,
                )
            )
    out.append(
        _row(
            "w1_vs_limit",
            "W1 vs the compiled compute limit (in-memory)",
            a,
            limit,
            "rows/s",
            a / limit,
            ">= 0.5x",
            a / limit >= 0.5,
        )
    )
    if "w1_ours_big" in raw:
        big = raw["w1_ours_big"]
        dt = big["best_seconds"] - ours["best_seconds"]
        marginal = (big_n - rows_n) / dt if dt > 0 else None
        out.append(
            _row(
                "w1_steady_state",
                f"W1 steady state: ({big_n:,} - {rows_n:,}) rows / time difference, vs the limit",
                marginal,
                limit,
                "rows/s",
                None if marginal is None else marginal / limit,
                ">= 0.8x",
                None if marginal is None else marginal / limit >= 0.8,
            )
        )
        rss_big, rss = big["peak_rss_mib"], ours["peak_rss_mib"]
        if rss_big and rss:
            out.append(
                _row(
                    "w1_peak_rss",
                    f"peak RSS, W1 {big_n:,} vs {rows_n:,} rows (child only)",
                    rss_big,
                    rss,
                    "MiB",
                    rss_big / rss,
                    "<= 1.10x",
                    rss_big / rss <= 1.10,
                )
            )
    drift = raw["w1_ours_drift"]["best_seconds"]
    out.append(
        _row(
            "w1_drift_overhead",
            f"W1 with --reference-profile ({small_n:,}-row profile) vs without",
            drift,
            ours["best_seconds"],
            "s",
            drift / ours["best_seconds"],
            "<= 1.05x",
            drift / ours["best_seconds"] <= 1.05,
        )
    )
    p_small, p_large = raw["profile_small"], raw["profile_large"]
    out.append(
        _row(
            "profile_small_seconds",
            f"batch-score profile, {small_n:,} rows, whole process",
            p_small["best_seconds"],
            None,
            "s",
            None,
            "<= 8 s" if small_n == 1_000_000 else "(<= 8 s at 1M rows)",
            p_small["best_seconds"] <= 8 if small_n == 1_000_000 else None,
        )
    )
    dt = p_large["best_seconds"] - p_small["best_seconds"]
    rate = (rows_n - small_n) / dt if dt > 0 else None
    out.append(
        _row(
            "profile_after_startup",
            f"batch-score profile after start-up: ({rows_n:,} - {small_n:,}) rows / time difference",
            rate,
            None,
            "rows/s",
            None,
            ">= 250,000 rows/s",
            None if rate is None else rate >= 250_000,
        )
    )
    for key in sorted(k for k in raw if k.startswith("w2_")):
        w2 = raw[key]
        out.append(
            _row(
                key,
                f"W2 {w2['images']:,} PNG images: batch-score score vs a tf.data script",
                w2["ours_rows_per_s"],
                w2["tfdata_script_rows_per_s"],
                "images/s",
                w2["ratio"],
                ">= 1.2x",
                w2["ratio"] >= 1.2,
            )
        )
    first = ours.get("first_progress_seconds")
    if first:
        out.append(
            _row(
                "first_progress",
                f"W1 {rows_n:,} rows: launch to the first progress line (best round)",
                min(first),
                None,
                "s",
                None,
                "<= 5 s",
                min(first) <= 5,
            )
        )
    if "w1_ours_bf16" in raw:
        c = raw["w1_ours_bf16"]["rows_per_second"]
        out.append(
            _row(
                "w1_bf16_vs_script",
                "W1 --precision bfloat16 (opt-in) vs the hand-written script",
                c,
                raw["w1_script"]["rows_per_second"],
                "rows/s",
                c / raw["w1_script"]["rows_per_second"],
                "(info)",
                None,
            )
        )
    if "rows_per_second" in raw.get("beam_stock", {}):
        d = raw["beam_stock"]["rows_per_second"]
        out.append(
            _row(
                "w1_vs_beam_stock",
                "W1 vs Beam's stock per-row RunInference (50k rows)",
                a,
                d,
                "rows/s",
                a / d,
                "(info)",
                None,
            )
        )
    return out


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return ""
    if unit in ("rows/s", "images/s", "MiB"):
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def format_table(results: dict[str, Any]) -> str:
    """The performance table as markdown, with the date, the machine and the load."""
    lines = [
        f"`{results.get('command', 'make bench')}`{' --quick' if results['quick'] else ''}, "
        f"{results['date']}, "
        f"{results['machine']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in results['load_average_at_start'])}.",
        "",
        "| workload | ours | reference | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in results["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            f"| {r['workload']} | {_fmt(r['ours'], r['unit'])} | "
            f"{_fmt(r['reference'], r['unit'])} | {ratio} | {r['target']} | {met} |"
        )
    if results.get("backends"):
        lines += [
            "",
            "Backends (`--backend`): the loaded model's predict call on in-memory batches.",
        ]
        lines += ["", format_backend_table(results["backends"])]
    return "\n".join(lines)


if __name__ == "__main__":
    run()
