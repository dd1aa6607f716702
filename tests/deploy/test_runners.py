"""The same scoring job on every runner we support gives the same predictions.

DirectRunner in memory and multi-process, the portable job API against a
Python worker pool (the protocol Flink uses with a worker-pool sidecar), and
a Dataflow dry run that builds the job graph and the ``setup.py`` package.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from keras_batch_score.pipelines import score
from keras_batch_score.pipelines.planning import scoring
from tests import deploy_support as ds
from tests import util

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return ds.make_job(tmp_path_factory.mktemp("job"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ds.VENV_BIN / "batch-score"), "score", *args],
        capture_output=True,
        text=True,
        env=ds.venv_env(),
        cwd=ds.REPO,
        timeout=300,
    )


def test_default_cli_run_is_fnapi_without_prism_noise(tmp_path, job):
    model, input_path, table, reference = job
    out = tmp_path / "out"
    proc = _cli(*ds.job_flags(model, input_path, str(out)))
    assert proc.returncode == 0, proc.stderr
    ds.assert_predictions(util.read_predictions(out), table, reference)
    noise = proc.stderr.lower()
    for word in ("prism", "falling back", "fallback", "traceback", "exception"):
        assert word not in noise, f"{word!r} in stderr of a default run:\n{proc.stderr}"
    assert "done: 600 rows read, 600 scored, 0 failed" in proc.stdout


def test_verbose_run_shows_beam_never_tries_prism(tmp_path, job):
    """With Beam's INFO logs visible, no Prism download or fallback is attempted."""
    model, input_path, table, reference = job
    out = tmp_path / "out"
    proc = _cli(*ds.job_flags(model, input_path, str(out)), "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "apache_beam" in proc.stderr  # Beam's own log lines are shown in this mode
    assert "prism" not in proc.stderr.lower(), proc.stderr
    ds.assert_predictions(util.read_predictions(out), table, reference)


def test_multi_processing_direct_runner(tmp_path, job):
    model, input_path, table, reference = job
    out = tmp_path / "out"
    summary = score.run(
        [
            *ds.job_flags(model, input_path, str(out)),
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
            "--batch-size=100",
        ]
    )
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (600, 600, 0)
    ds.assert_predictions(util.read_predictions(out), table, reference)


def test_portable_runner_against_worker_pool(tmp_path, job):
    """PortableRunner + EXTERNAL environment: Flink's job API and worker-pool protocol."""
    model, input_path, table, reference = job
    port = ds.free_port()
    pool = [
        sys.executable,
        "-m",
        "apache_beam.runners.worker.worker_pool_main",
        f"--service_port={port}",
    ]
    out = tmp_path / "out"
    with ds.service(pool, port, tmp_path / "worker_pool.log") as proc:
        summary = score.run(
            [
                *ds.job_flags(model, input_path, str(out)),
                "--runner=PortableRunner",
                "--job_endpoint=embed",
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{port}",
            ]
        )
        assert proc.poll() is None, "the worker pool died during the job"
    log = (tmp_path / "worker_pool.log").read_text()
    assert "Starting worker" in log, f"the job did not run on the worker pool:\n{log}"
    assert summary["rows_scored"] == 600
    ds.assert_predictions(util.read_predictions(out), table, reference)


def test_dataflow_dry_run_builds_job_with_setup_py(tmp_path, job, monkeypatch):
    model, input_path, _, _ = job
    results = []
    original_run = beam.Pipeline.run

    def recording_run(self, *args, **kwargs):
        results.append(original_run(self, *args, **kwargs))
        return results[-1]

    monkeypatch.setattr(beam.Pipeline, "run", recording_run)
    # gs://fake-bucket cannot be reached from here; the output checks on gs:// are tested
    # against the GCS emulator (tests/e2e/test_output_ownership.py::test_ownership_on_gcs).
    monkeypatch.setattr(scoring, "check_score_output", lambda *a, **k: None)
    monkeypatch.chdir(ds.REPO)
    info = score.run(
        [
            *ds.job_flags(model, input_path, "gs://fake-bucket/scores/2026-01-01"),
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=fake-project",
            "--region=us-central1",
            "--temp_location=gs://fake-bucket/tmp",
            "--staging_location=gs://fake-bucket/staging",
            "--setup_file=./setup.py",
        ]
    )
    # The launcher submits and returns: a Flex Template launcher must not block.
    assert info["submitted"] is True and info["state"] == "DONE"
    assert info["summary"] == "gs://fake-bucket/scores/2026-01-01/run_summary.json"

    dataflow_job = results[-1].job
    assert dataflow_job.google_cloud_options.project == "fake-project"
    steps = {t.unique_name for t in dataflow_job.proto_pipeline.components.transforms.values()}
    for label in ("Read", "Validate", "WritePredictions", "WriteErrors", "Finalize"):
        assert label in steps, f"{label} missing from the Dataflow job graph"
    staged = {}
    for env in dataflow_job.proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dep.role_payload
            ).staged_name
            staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
    assert "workflow.tar.gz" in staged, f"setup.py package not staged: {sorted(staged)}"
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        members = {m.split("/", 1)[-1] for m in sdist.getnames()}
    for module in ("setup.py", "pipelines/score.py", "transforms/model/handler.py"):
        assert module in members, f"{module} missing from the staged package"
    # What a Dataflow worker does with it: pip install, giving the one import namespace.
    site = tmp_path / "worker_site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--target", str(site), staged["workflow.tar.gz"]],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (site / "keras_batch_score" / "pipelines" / "score.py").is_file()
    assert not (site / "pipelines").exists() and not (site / "transforms").exists()


def test_local_and_portable_runners_block_remote_ones_submit():
    def waits(*flags: str) -> bool:
        return score.waits_for_job(score.pipeline_options(list(flags)))

    assert waits() and waits("--runner=DirectRunner")
    assert waits("--runner=PortableRunner", "--job_endpoint=embed")
    assert not waits("--runner=DataflowRunner")
    assert not waits("--runner=FlinkRunner", "--flink_master=flink:8081", "--flink_submit_uber_jar")
    # Without the uber jar the job server lives in the launcher: it must stay up.
    assert waits("--runner=FlinkRunner", "--flink_master=flink:8081")
    assert waits("--runner=FlinkRunner", "--flink_master=[local]", "--flink_submit_uber_jar")
    assert not waits("--runner=PortableRunner", "--job_endpoint=localhost:8099")
    # --wait is ours (blocks on remote runners too), never handed to Beam.
    _, beam_args, _ = score.parse_args(
        ["--model=m.keras", "--input=x", "--output=y", "--runner=DataflowRunner", "--wait"]
    )
    assert beam_args == ["--runner=DataflowRunner"]
