"""Daily batch scoring on Dataflow: wait for the input, launch the Flex Template, gate the result.

``wait_for_input`` (a GCS sensor in reschedule mode) waits for
``<input_root>/dt=YYYY-MM-DD/<input_marker>`` (``_SUCCESS`` by default; an
empty marker waits for any object in the partition). ``score`` launches the
Flex Template built from ``templates/dataflow`` with
``DataflowStartFlexTemplateOperator`` and waits for the job (deferred when
``[operators] default_deferrable`` is on). ``gate`` reads the job's
``run_summary.json`` and ``drift.json`` with ``GCSHook`` and fails, without
retries, when more than ``max_rows_failed`` rows were rejected or dataset
drift was detected.

The Airflow environment needs only Airflow and the Google provider: no
TensorFlow, no Beam, no keras-batch-score. Install this file next to
``score_gate.py`` in the DAGs folder. Defaults come from the environment
(``BATCH_SCORE_*``) so one file serves every deployment; ``score_options``
takes any further template parameter of ``templates/dataflow/metadata.json``
(e.g. ``{"fail_on_drift": true, "calibration": "gs://.../calibration.json"}``).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.google.cloud.hooks.gcs import GCSHook
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.providers.google.cloud.sensors.gcs import GCSObjectsWithPrefixExistenceSensor
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # score_gate.py sits next to this file
    sys.path.insert(0, _HERE)
from score_gate import GateFailure, check_run, gcs_reader, split_gcs_uri  # noqa: E402

GCP_CONN_ID = os.environ.get("BATCH_SCORE_GCP_CONN_ID", "google_cloud_default")
OUTPUT_DIR = "{{ partition(params.output_root, ds) }}"


def _as_parameter(value: Any) -> str:
    """A Flex Template parameter value: always a string (lists comma-joined, booleans lowercase)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_parameter(v) for v in value)
    return str(value)


def partition(root: str, ds: str) -> str:
    """The day's directory under ``root``: ``<root>/dt=YYYY-MM-DD``."""
    return f"{root.rstrip('/')}/dt={ds}"


def template_parameters(params: dict[str, Any], ds: str) -> dict[str, str]:
    """The launch request's ``parameters``: names from metadata.json, unset ones left out."""
    values = {
        "model": params["model"],
        "input": partition(params["input_root"], ds),
        "output": partition(params["output_root"], ds),
        "id_column": params["id_columns"],
        "batch_size": params["batch_size"],
        "reference_profile": params["reference_profile"],
        **(params.get("score_options") or {}),
    }
    return {k: _as_parameter(v) for k, v in values.items() if v not in (None, "", [])}


def launch_environment(params: dict[str, Any]) -> dict[str, Any]:
    """The launch request's ``environment`` (FlexTemplateRuntimeEnvironment), unset ones left out.

    The workers run the template's own image (``sdkContainerImage``): it has
    TensorFlow and this project installed, so nothing is pip-installed on them.
    """
    values = {
        "sdkContainerImage": params["image"],
        "tempLocation": params["temp_location"],
        "serviceAccountEmail": params["service_account"],
        "machineType": params["machine_type"],
        "maxWorkers": params["max_workers"],
        # e.g. worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver
        "additionalExperiments": params["experiments"],
    }
    return {k: v for k, v in values.items() if v not in (None, "", [])}


def gcs_bucket(uri: str) -> str:
    return split_gcs_uri(uri)[0]


def gcs_object(uri: str) -> str:
    return split_gcs_uri(uri)[1]


with DAG(
    dag_id="batch_score_flex_daily",
    description="Score the day's partition with the keras-batch-score Dataflow Flex Template.",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    # The request body's parameters/environment come from the functions above as dicts.
    render_template_as_native_obj=True,
    user_defined_macros={
        "partition": partition,
        "template_parameters": template_parameters,
        "launch_environment": launch_environment,
        "gcs_bucket": gcs_bucket,
        "gcs_object": gcs_object,
    },
    params={
        "gcp_project": Param(os.environ.get("BATCH_SCORE_GCP_PROJECT", "my-project")),
        "region": Param(os.environ.get("BATCH_SCORE_REGION", "us-central1")),
        # `gcloud dataflow flex-template build` output (docs/deployment.md).
        "template": Param(
            os.environ.get("BATCH_SCORE_TEMPLATE", "gs://my-bucket/templates/batch-score.json"),
            pattern="^gs://",
        ),
        "image": Param(
            os.environ.get(
                "BATCH_SCORE_IMAGE", "us-central1-docker.pkg.dev/my-project/repo/batch-score:1"
            )
        ),
        "model": Param(os.environ.get("BATCH_SCORE_MODEL", "gs://my-bucket/models/model.keras")),
        "input_root": Param(
            os.environ.get("BATCH_SCORE_INPUT_ROOT", "gs://my-bucket/features"), pattern="^gs://"
        ),
        "input_marker": Param("_SUCCESS", type="string"),
        "output_root": Param(
            os.environ.get("BATCH_SCORE_OUTPUT_ROOT", "gs://my-bucket/scores"), pattern="^gs://"
        ),
        "id_columns": Param(["id"], type="array"),
        "batch_size": Param(16384, type="integer", minimum=1),
        "reference_profile": Param(None, type=["null", "string"]),
        "score_options": Param({}, type="object"),
        "max_rows_failed": Param(0, type="integer", minimum=0),
        "temp_location": Param(os.environ.get("BATCH_SCORE_TEMP"), type=["null", "string"]),
        "service_account": Param(
            os.environ.get("BATCH_SCORE_SERVICE_ACCOUNT"), type=["null", "string"]
        ),
        "machine_type": Param("n1-standard-4"),
        "max_workers": Param(10, type="integer", minimum=1),
        "experiments": Param([], type="array"),
    },
    tags=["batch-score"],
) as dag:
    wait_for_input = GCSObjectsWithPrefixExistenceSensor(
        task_id="wait_for_input",
        bucket="{{ gcs_bucket(params.input_root) }}",
        prefix="{{ gcs_object(partition(params.input_root, ds) ~ '/' ~ params.input_marker) }}",
        google_cloud_conn_id=GCP_CONN_ID,
        mode="reschedule",  # frees the worker slot between pokes
        poke_interval=timedelta(minutes=10).total_seconds(),
        timeout=timedelta(hours=12).total_seconds(),
    )

    score = DataflowStartFlexTemplateOperator(
        task_id="score",
        project_id="{{ params.gcp_project }}",
        location="{{ params.region }}",
        gcp_conn_id=GCP_CONN_ID,
        body={
            "launchParameter": {
                "containerSpecGcsPath": "{{ params.template }}",
                "jobName": "batch-score-{{ ds_nodash }}",  # the operator appends a unique suffix
                "parameters": "{{ template_parameters(params, ds) }}",
                "environment": "{{ launch_environment(params) }}",
            }
        },
    )

    @task(retries=0)
    def gate(output_dir: str, max_rows_failed: int) -> dict:
        """Fails the run when too many rows were rejected or drift was detected."""
        read = gcs_reader(lambda: GCSHook(gcp_conn_id=GCP_CONN_ID))
        try:
            return check_run(output_dir, int(max_rows_failed), read=read)
        except GateFailure as e:
            raise AirflowFailException(str(e)) from None

    wait_for_input >> score >> gate(OUTPUT_DIR, "{{ params.max_rows_failed }}")
