"""``make bench-gpu``: W1 and W2 on a GPU against the GPU compute limit, into ``bench-gpu.json``.

Run it where TensorFlow sees a GPU (``tf.config.list_physical_devices("GPU")``).
Without one it stops with an ``error:`` line; ``--allow-cpu`` runs the same
harness on the CPU to check it end to end (its figures then say nothing about a
GPU). Whole processes, start-up included, the best of ``--rounds`` kept, as in
``make bench``:

* the W1 limit: the compiled MLP on in-memory numpy batches, each copied to
  the device and back as a pipeline's calls must be, per batch size (best kept);
* W1 ``batch-score score`` at the default batch size and at the limit's best
  batch size, each against that limit (target >= 0.8x);
* the W2 limit: the compiled CNN on in-memory 32x32x3 float32 images, i.e.
  after the decoding and resizing that W2's pipeline does on the CPU;
* W2 ``batch-score score`` against that limit (target >= 0.8x) and against the
  ``tf.data`` script of :mod:`benchmarks.images`.

Results: ``<workdir>/bench-gpu.json`` and ``<workdir>/bench-gpu.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    _check_scored,
    _row,
    _say,
    _score_cmd,
    _summary,
    compute_limit,
    prepare_w1,
    timed_process,
    write_results,
)

TARGET = 0.8  # of the GPU compute limit

FULL = {
    "w1_rows": 5_000_000,
    "limit_rows": 4_194_304,
    "limit_batches": (16_384, 65_536, 262_144, 1_048_576),
    "w2_images": 100_000,
    "w2_limit_images": 65_536,
    "w2_limit_batches": (1024, 4096, 16_384),
    "rounds": 3,
}
QUICK = {
    "w1_rows": 200_000,
    "limit_rows": 131_072,
    "limit_batches": (16_384, 65_536),
    "w2_images": 2_000,
    "w2_limit_images": 2_048,
    "w2_limit_batches": (256, 1024),
    "rounds": 1,
}

_DETECT = (
    "import json\n"
    "from keras_batch_score.transforms.core.tf_quiet import import_tensorflow\n"
    "tf = import_tensorflow()\n"
    "print(json.dumps([d.name for d in tf.config.list_physical_devices('GPU')]))\n"
)


class NoGPUError(RuntimeError):
    """No GPU is visible to TensorFlow here, or TensorFlow cannot be imported."""


def visible_gpus() -> list[str]:
    """The GPUs TensorFlow sees, asked in a child process (this one stays free of TensorFlow).

    Raises:
        NoGPUError: when TensorFlow cannot be imported here.
    """
    done = subprocess.run([sys.executable, "-c", _DETECT], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise NoGPUError(f"TensorFlow cannot be imported here: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (ours, reference, ratio, target, met) from the raw GPU runs."""
    raw, sizes = results["runs"], results["sizes"]
    device = "GPU" if results["gpus"] else "CPU (--allow-cpu)"
    w1_limit = raw["w1_limit"]["rows_per_second"]
    out = []
    for key, run in raw["w1_ours"].items():
        ours = run["rows_per_second"]
        out.append(
            _row(
                f"w1_batch_{key}_vs_limit",
                f"W1 {sizes['w1_rows']:,} rows, batch {int(key):,}: batch-score score vs the "
                f"{device} compute limit (best batch {raw['w1_limit']['best_batch']:,})",
                ours,
                w1_limit,
                "rows/s",
                ours / w1_limit,
                f">= {TARGET}x",
                ours / w1_limit >= TARGET,
            )
        )
    w2, w2_limit = raw["w2"], raw["w2_limit"]["rows_per_second"]
    n = sizes["w2_images"]
    out.append(
        _row(
            "w2_vs_limit",
            f"W2 {n:,} PNG images: batch-score score vs the {device} compute limit "
            "(the CNN on decoded images)",
            w2["ours_rows_per_s"],
            w2_limit,
            "images/s",
            w2["ours_rows_per_s"] / w2_limit,
            f">= {TARGET}x",
            w2["ours_rows_per_s"] / w2_limit >= TARGET,
        )
    )
    out.append(
        _row(
            "w2_vs_tfdata",
            f"W2 {n:,} PNG images: batch-score score vs a tf.data script",
            w2["ours_rows_per_s"],
            w2["tfdata_script_rows_per_s"],
            "images/s",
            w2["ratio"],
            "(info)",
            None,
        )
    )
    return out


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    sizes = dict(QUICK if args.quick else FULL)
    overrides = {"w1_rows": args.rows, "w2_images": args.images, "rounds": args.rounds}
    sizes.update({key: value for key, value in overrides.items() if value})
    return sizes


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--workdir", default=".bench")
    parser.add_argument("--quick", action="store_true", help="Small sizes, one round.")
    parser.add_argument("--rounds", type=int, help="Rounds per run (default 3, quick 1).")
    parser.add_argument("--rows", type=int, help="W1 rows (default 5,000,000, quick 200,000).")
    parser.add_argument("--images", type=int, help="W2 images (default 100,000, quick 2,000).")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="Run without a GPU, to check the harness (the figures are then the CPU's).",
    )
    args = parser.parse_args(argv)
    try:
        gpus = visible_gpus()
    except NoGPUError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not gpus and not args.allow_cpu:
        print(
            "error: no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') "
            "is empty): run `make bench-gpu` where one is, or pass --allow-cpu to check the "
            "harness on the CPU",
            file=sys.stderr,
        )
        return 2
    from benchmarks import images as bench_images
    from keras_batch_score.pipelines.options.flag import DEFAULT_BATCH_SIZE

    # This process builds the data and models with TensorFlow while its children score: without
    # this, the first to touch the GPU would reserve nearly all of its memory for itself.
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    sizes = _sizes(args)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "command": "make bench-gpu",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, GPUs: {', '.join(gpus) or 'none (--allow-cpu)'}",
        "gpus": gpus,
        "load_average_at_start": list(os.getloadavg()),
        "quick": args.quick,
        "sizes": sizes,
        "runs": {},
    }
    raw = results["runs"]
    rows = sizes["w1_rows"]
    _say(f"W1: preparing {rows:,} rows in {workdir} ...")
    data, model = prepare_w1(workdir, rows)
    _say("W1 compute limit (compiled fn, in-memory, child process) ...")
    raw["w1_limit"] = compute_limit(model, sizes["limit_rows"], sizes["limit_batches"])
    raw["w1_ours"] = {}
    for batch in sorted({DEFAULT_BATCH_SIZE, raw["w1_limit"]["best_batch"]}):
        _say(f"W1: batch-score score, batch {batch:,} ...")
        out = workdir / "out_gpu"
        cmd = _score_cmd(model, data, out, "--batch-size", str(batch))
        raw["w1_ours"][str(batch)] = _summary(
            [timed_process(cmd) for _ in range(sizes["rounds"])], rows
        )
        _check_scored(out, rows)
        shutil.rmtree(out, ignore_errors=True)
    n = sizes["w2_images"]
    _say(f"W2: {n:,} images, ours and the tf.data script ...")
    raw["w2"] = bench_images.run_w2(workdir, n, sizes["rounds"])
    _say("W2 compute limit (the CNN on in-memory images, child process) ...")
    w2_model = bench_images.prepare_w2(workdir, n)["model"]
    raw["w2_limit"] = compute_limit(w2_model, sizes["w2_limit_images"], sizes["w2_limit_batches"])
    results["rows"] = gpu_rows(results)
    results["total_seconds"] = round(time.time() - started, 1)
    write_results(results, workdir, "bench-gpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
