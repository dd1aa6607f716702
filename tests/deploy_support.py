"""Helpers for the runner, template, GCS and Airflow tests: free ports, child services, a job."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests import util

REPO = util.REPO
BUCKET = "kbs-test"
"""The bucket the ``gcs`` emulator fixture (tests/conftest.py) creates."""


def upload(client, local: str, name: str) -> str:
    """Uploads the file ``local`` to ``BUCKET/name`` through ``client``; returns its ``gs://`` URI."""
    client.bucket(BUCKET).blob(name).upload_from_filename(local)
    return f"gs://{BUCKET}/{name}"


VENV_BIN = Path(sys.executable).parent
N_ROWS = 600
N_FEATURES = 3
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Blocks until ``port`` accepts connections; fails if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{proc.args} did not listen on port {port} within {timeout}s")


def venv_env(**extra: str) -> dict[str, str]:
    """The environment with this venv's ``bin`` first on PATH (worker pools start ``python``)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@contextlib.contextmanager
def service(args: Sequence[str], port: int, log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """Starts a child process listening on ``port`` and stops it (by its pid) afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, env=venv_env(**env), cwd=log.parent
        )
        try:
            wait_for_port(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def make_job(directory: Path) -> tuple[str, str, pa.Table, np.ndarray]:
    """A tiny model and Parquet input; returns (model, input, table, Keras reference predictions)."""
    directory.mkdir(parents=True, exist_ok=True)
    table = util.feature_table(N_ROWS, N_FEATURES, seed=7)
    input_path = util.write_parquet(directory / "input.parquet", table, row_group_size=150)
    model = util.mlp(N_FEATURES, seed=3)
    model_path = str(directory / "model.keras")
    model.save(model_path)
    reference = util.keras_reference(model, util.stacked(table, FEATURES)).reshape(-1)
    return model_path, input_path, table, reference


def job_flags(model: str, input_path: str, output: str) -> list[str]:
    return ["--model", model, "--input", input_path, "--output", output, "--id-column", "id"]


def assert_predictions(predictions: pa.Table, table: pa.Table, reference: np.ndarray) -> None:
    """Every input row scored once, ids aligned, values equal to Keras's."""
    predictions = predictions.sort_by("id")
    np.testing.assert_array_equal(
        predictions.column("id").to_numpy(), table.column("id").to_numpy()
    )
    np.testing.assert_allclose(
        predictions.column("prediction").to_numpy(), reference, rtol=1e-5, atol=1e-6
    )
