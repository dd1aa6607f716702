"""Shared fixtures and the test layers.

The folders under ``tests/`` are layers:

* ``unit/``: pure modules (numpy, pyarrow, parsing, HTML), no pipeline runs;
* ``transforms/``: single PTransforms and DoFns under Beam's ``TestPipeline``;
* ``e2e/``: whole commands (``batch-score score`` / ``profile`` / ...), in-process or
  as subprocesses;
* ``deploy/``: templates, Airflow, runners, the GCS emulator, packaging.

Every test in ``e2e/`` and ``deploy/`` is marked ``slow`` here, so that
``make test-fast`` (``pytest -m "not slow"``) runs exactly ``unit/`` and
``transforms/``; a ``slow`` mark inside those two is refused.

The plain helpers (tiny models, Parquet files, readers, :func:`tests.util.run_score`)
live in :mod:`tests.util`; this module only wraps them as fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import util

SLOW_LAYERS = ("e2e", "deploy")
FAST_LAYERS = ("unit", "transforms")
TESTS = Path(__file__).resolve().parent


def layer_of(path: Path) -> str | None:
    """The layer folder directly under ``tests/`` that holds ``path`` (None: not in one)."""
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every ``e2e/`` and ``deploy/`` test ``slow``; refuses ``slow`` in the fast layers."""
    misplaced = []
    for item in items:
        layer = layer_of(item.path)
        if layer in SLOW_LAYERS:
            item.add_marker(pytest.mark.slow)
        elif layer in FAST_LAYERS and item.get_closest_marker("slow") is not None:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            f"tests in {'/ and '.join(FAST_LAYERS)}/ run in `make test-fast` and must not be "
            f"marked slow; move them to tests/e2e/ or tests/deploy/: {', '.join(misplaced)}"
        )


# --------------------------------------------------------------------------- tiny models and inputs

MLP3_FEATURES = ["f0", "f1", "f2"]


@pytest.fixture(scope="session")
def mlp3(tmp_path_factory) -> tuple[Any, str]:
    """A 3-feature, 1-output Keras MLP (seed 3) and the ``.keras`` file it is saved in."""
    model = util.mlp(len(MLP3_FEATURES), seed=3)
    path = tmp_path_factory.mktemp("mlp3") / "mlp3.keras"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="session")
def features3(tmp_path_factory) -> tuple[Any, str]:
    """400 rows of ``id, f0, f1, f2`` (float32) and the Parquet file holding them (row groups of 150)."""
    table = util.feature_table(400, len(MLP3_FEATURES), seed=1)
    path = tmp_path_factory.mktemp("features3") / "part-0.parquet"
    return table, util.write_parquet(path, table, row_group_size=150)


@pytest.fixture
def score_job(tmp_path) -> Callable[..., util.ScoreJob]:
    """``score_job(*extra_flags, **options)`` runs ``batch-score score`` in-process.

    Options become flags (:func:`tests.util.job_argv`: ``id_columns=["id"]`` ->
    ``--id-column id``, ``quiet=True`` -> ``--quiet``); without ``output`` each call
    writes to a new folder under ``tmp_path``. Returns a :class:`tests.util.ScoreJob`.
    """
    runs = iter(range(1_000_000))

    def run(*extra: str, output: Path | str | None = None, **options: Any) -> util.ScoreJob:
        target = output if output is not None else tmp_path / f"job-{next(runs)}"
        return util.run_score(target, *extra, **options)

    return run


# --------------------------------------------------------------------------- GCS emulator


@pytest.fixture(scope="module")
def gcs(tmp_path_factory) -> Iterator[Any]:
    """A running GCS emulator with an empty bucket (``deploy_support.BUCKET``); yields a storage client."""
    from apache_beam.internal.gcp import auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tests import deploy_support as ds

    port = ds.free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    args = [str(ds.VENV_BIN / "gcp-storage-emulator"), "start", f"--port={port}", "--in-memory"]
    with pytest.MonkeyPatch.context() as mp, ds.service(args, port, log):
        mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        # Beam looks up Google default credentials once per process and retries for
        # ~30 s when there are none; the emulator takes anonymous requests, so skip that.
        mp.setattr(auth._Credentials, "_credentials_init", True)
        mp.setattr(auth._Credentials, "_credentials", None)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        client.create_bucket(ds.BUCKET)
        yield client
