"""Run by tests/test_airflow.py with the Airflow venv's Python: loads the DAG, writes facts as JSON.

Usage: ``python tests/airflow_probe.py DAGS_FOLDER OUT.json``. Writes import errors,
the DAG's schedule settings and, for a DirectRunner and a DataflowRunner set
of params, the command-line flags the Beam operator would pass to the pipeline.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

DAG_ID = "batch_score_daily"


def rendered_flags(dag, params: dict) -> dict:
    """The pipeline flags of the ``score`` task for ``params`` (templates rendered)."""
    task = dag.get_task("score").prepare_for_execution()
    logical = datetime(2026, 1, 2, tzinfo=timezone.utc)
    context = {
        "params": {**{k: v.value for k, v in dag.params.items()}, **params},
        "ds": logical.strftime("%Y-%m-%d"),
        "ds_nodash": logical.strftime("%Y%m%d"),
        "logical_date": logical,
    }
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    return {
        "runner": task.runner,
        "args": beam_options_to_args(task.pipeline_options),
        "dataflow_config": dict(task.dataflow_config),
    }


def main(dags_folder: str, out_path: str) -> None:
    bag = DagBag(dag_folder=dags_folder)
    dag = bag.get_dag(DAG_ID)
    facts = {
        "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
        "dags": bag.dag_ids,
    }
    if dag is not None:
        score = dag.get_task("score")
        facts.update(
            schedule=str(dag.schedule),
            catchup=dag.catchup,
            tasks={t.task_id: type(t).__name__ for t in dag.tasks},
            downstream_of_score=sorted(score.downstream_task_ids),
            retries={t.task_id: t.retries for t in dag.tasks},
            py_interpreter=score.py_interpreter,
            direct=rendered_flags(dag, {}),
            dataflow=rendered_flags(
                dag,
                {
                    "runner": "DataflowRunner",
                    "gcp_project": "my-project",
                    "region": "europe-west4",
                    "temp_location": "gs://bucket/tmp",
                    "sdk_container_image": "europe-docker.pkg.dev/p/r/batch-score:1",
                    "dataflow_service_options": [
                        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
                    ],
                },
            ),
        )
    with open(out_path, "w") as f:
        json.dump(facts, f, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
