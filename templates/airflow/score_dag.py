"""Daily batch scoring: ``batch-score score`` through BeamRunPythonPipelineOperator, then a gate.

Runs on DirectRunner by default; trigger with ``{"runner": "DataflowRunner",
"gcp_project": ..., "region": ..., "temp_location": "gs://..."}`` (or change
the defaults below) to run on Dataflow. Input and output paths carry the
logical date: ``<input_root>/dt=YYYY-MM-DD`` -> ``<output_root>/dt=YYYY-MM-DD``.
The gate task fails (without retries) when more than ``max_rows_failed`` rows
were rejected or when ``drift.json`` reports dataset drift.

Install next to ``score_gate.py`` in the DAGs folder. Defaults come from the
environment (``BATCH_SCORE_*``) so one file serves every deployment;
``BATCH_SCORE_PYTHON`` names the interpreter that has ``keras-batch-score``
installed (default: the one running Airflow).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # score_gate.py sits next to this file
    sys.path.insert(0, _HERE)
from score_gate import GateFailure, check_run  # noqa: E402

OUTPUT_DIR = "{{ params.output_root }}/dt={{ ds }}"
ON_DATAFLOW = "params.runner == 'DataflowRunner'"


def _dataflow_only(param: str) -> str:
    """A template that renders to the param on Dataflow and to None (flag left out) otherwise."""
    return f"{{{{ params.{param} if {ON_DATAFLOW} else None }}}}"


with DAG(
    dag_id="batch_score_daily",
    description="Score the day's Parquet partition with a Keras model on Beam.",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    render_template_as_native_obj=True,  # lists -> repeated flags, None -> flag left out
    params={
        "runner": Param("DirectRunner", enum=["DirectRunner", "DataflowRunner"]),
        "model": Param(os.environ.get("BATCH_SCORE_MODEL", "gs://my-bucket/models/model.keras")),
        "input_root": Param(os.environ.get("BATCH_SCORE_INPUT_ROOT", "gs://my-bucket/features")),
        "output_root": Param(os.environ.get("BATCH_SCORE_OUTPUT_ROOT", "gs://my-bucket/scores")),
        "id_columns": Param(["id"], type="array"),
        "batch_size": Param(16384, type="integer", minimum=1),
        "max_rows_failed": Param(0, type="integer", minimum=0),
        "reference_profile": Param(None, type=["null", "string"]),
        # Dataflow only:
        "gcp_project": Param(os.environ.get("BATCH_SCORE_GCP_PROJECT"), type=["null", "string"]),
        "region": Param(os.environ.get("BATCH_SCORE_REGION", "us-central1")),
        "temp_location": Param(os.environ.get("BATCH_SCORE_TEMP"), type=["null", "string"]),
        "sdk_container_image": Param(os.environ.get("BATCH_SCORE_IMAGE"), type=["null", "string"]),
        "setup_file": Param(None, type=["null", "string"]),
        "machine_type": Param("n1-standard-4"),
        "max_num_workers": Param(10, type="integer", minimum=1),
        "dataflow_service_options": Param([], type="array"),
    },
    tags=["batch-score"],
) as dag:
    score = BeamRunPythonPipelineOperator(
        task_id="score",
        runner="{{ params.runner }}",
        # An interpreter with this project installed (the pipeline's launcher).
        py_interpreter=os.environ.get("BATCH_SCORE_PYTHON", sys.executable),
        py_options=["-m"],
        py_file="pipelines.score",
        pipeline_options={
            "model": "{{ params.model }}",
            "input": "{{ params.input_root }}/dt={{ ds }}",
            "output": OUTPUT_DIR,
            "id-column": "{{ params.id_columns }}",
            "batch-size": "{{ params.batch_size }}",
            "reference-profile": "{{ params.reference_profile }}",
            # Beam logs the Dataflow job id, which the operator needs to follow the job.
            "verbose": f"{{{{ {ON_DATAFLOW} }}}}",
            "temp_location": _dataflow_only("temp_location"),
            "sdk_container_image": _dataflow_only("sdk_container_image"),
            "setup_file": _dataflow_only("setup_file"),
            "machine_type": _dataflow_only("machine_type"),
            "max_num_workers": _dataflow_only("max_num_workers"),
            "dataflow_service_options": _dataflow_only("dataflow_service_options"),
        },
        dataflow_config={
            "job_name": "batch-score-{{ ds_nodash }}",
            "project_id": "{{ params.gcp_project }}",
            "location": "{{ params.region }}",
            "wait_until_finished": True,
        },
    )

    @task(retries=0)
    def gate(output_dir: str, max_rows_failed: int) -> dict:
        """Fails the run when too many rows were rejected or drift was detected."""
        try:
            return check_run(output_dir, int(max_rows_failed))
        except GateFailure as e:
            raise AirflowFailException(str(e)) from None

    score >> gate(OUTPUT_DIR, "{{ params.max_rows_failed }}")
