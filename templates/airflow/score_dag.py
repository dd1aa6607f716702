"""Daily batch scoring on Flink or locally: ``batch-score score`` through BeamRunPythonPipelineOperator.

For Dataflow use ``score_flex_dag.py`` (the Flex Template; no TensorFlow in
Airflow). This DAG runs the pipeline's launcher as a subprocess of the Airflow
worker, so it needs an interpreter with keras-batch-score installed, named by
``BATCH_SCORE_PYTHON`` (e.g. ``/opt/batch-score/.venv/bin/python``). It is
required: the DAG does not fall back to Airflow's own interpreter, whose
environment should not carry TensorFlow and Beam.

``runner`` is ``DirectRunner`` (scoring on the Airflow worker: small jobs and
tests) or ``FlinkRunner`` (the cluster of ``templates/flink``; the launcher
submits the job and waits for it with ``--wait``). Input and output paths
carry the logical date: ``<input_root>/dt=YYYY-MM-DD`` ->
``<output_root>/dt=YYYY-MM-DD``. The gate task then reads the job's
``run_summary.json`` and ``drift.json`` (local paths directly, ``gs://`` with
``GCSHook``) and fails, without retries, when more than ``max_rows_failed``
rows were rejected or dataset drift was detected.

Install next to ``score_gate.py`` in the DAGs folder. Defaults come from the
environment (``BATCH_SCORE_*``) so one file serves every deployment.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # score_gate.py sits next to this file
    sys.path.insert(0, _HERE)
from score_gate import GateFailure, check_run, gcs_reader  # noqa: E402

PYTHON = os.environ.get("BATCH_SCORE_PYTHON")
if not PYTHON:
    raise RuntimeError(
        "score_dag.py: set BATCH_SCORE_PYTHON to the python of a venv with keras-batch-score "
        "installed (Airflow's own interpreter is not used); for Dataflow use score_flex_dag.py"
    )
GCP_CONN_ID = os.environ.get("BATCH_SCORE_GCP_CONN_ID", "google_cloud_default")
OUTPUT_DIR = "{{ params.output_root }}/dt={{ ds }}"


def beam_options(params: dict[str, Any], ds: str) -> dict[str, Any]:
    """The pipeline's flags for the run (lists repeat the flag, ``None`` leaves it out)."""
    options: dict[str, Any] = {
        "model": params["model"],
        "input": f"{params['input_root']}/dt={ds}",
        "output": f"{params['output_root']}/dt={ds}",
        "id-column": params["id_columns"],
        "batch-size": params["batch_size"],
        "reference-profile": params["reference_profile"],
    }
    if params["runner"] == "FlinkRunner":  # as templates/flink/flink.args
        options.update(
            {
                # Submitting to Flink returns at once: block until run_summary.json is written.
                "wait": True,
                "flink_master": params["flink_master"],
                "flink_version": params["flink_version"],
                "flink_job_server_jar": params["flink_job_server_jar"],
                "flink_submit_uber_jar": True,
                # Python work runs in the TaskManagers' worker-pool sidecars.
                "environment_type": "EXTERNAL",
                "environment_config": "localhost:50000",
                "parallelism": params["parallelism"],
            }
        )
    return options


with DAG(
    dag_id="batch_score_daily",
    description="Score the day's partition with a Keras model on Beam (Flink or local).",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    render_template_as_native_obj=True,  # pipeline_options renders to beam_options()'s dict
    user_defined_macros={"beam_options": beam_options},
    params={
        "runner": Param("DirectRunner", enum=["DirectRunner", "FlinkRunner"]),
        "model": Param(os.environ.get("BATCH_SCORE_MODEL", "gs://my-bucket/models/model.keras")),
        "input_root": Param(os.environ.get("BATCH_SCORE_INPUT_ROOT", "gs://my-bucket/features")),
        "output_root": Param(os.environ.get("BATCH_SCORE_OUTPUT_ROOT", "gs://my-bucket/scores")),
        "id_columns": Param(["id"], type="array"),
        "batch_size": Param(16384, type="integer", minimum=1),
        "max_rows_failed": Param(0, type="integer", minimum=0),
        "reference_profile": Param(None, type=["null", "string"]),
        # Flink only (templates/flink/flink.args, flink-deployment.yaml):
        "flink_master": Param(
            os.environ.get("BATCH_SCORE_FLINK_MASTER", "batch-score-flink-rest:8081")
        ),
        "flink_version": Param("1.20", type="string"),
        "flink_job_server_jar": Param(
            os.environ.get(
                "BATCH_SCORE_FLINK_JOB_SERVER_JAR",
                "/opt/beam/jars/beam-runners-flink-1.20-job-server-2.77.0.jar",
            )
        ),
        "parallelism": Param(4, type="integer", minimum=1),
    },
    tags=["batch-score"],
) as dag:
    score = BeamRunPythonPipelineOperator(
        task_id="score",
        runner="{{ params.runner }}",
        py_interpreter=PYTHON,  # the pipeline's launcher: has TensorFlow, Beam and this project
        py_options=["-m"],
        py_file="keras_batch_score.pipelines.score",
        pipeline_options="{{ beam_options(params, ds) }}",
    )

    @task(retries=0)
    def gate(output_dir: str, max_rows_failed: int) -> dict:
        """Fails the run when too many rows were rejected or drift was detected."""
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        read = gcs_reader(lambda: GCSHook(gcp_conn_id=GCP_CONN_ID))
        try:
            return check_run(output_dir, int(max_rows_failed), read=read)
        except GateFailure as e:
            raise AirflowFailException(str(e)) from None

    score >> gate(OUTPUT_DIR, "{{ params.max_rows_failed }}")
