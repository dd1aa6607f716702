"""Run by tests/deploy/test_airflow.py with the Airflow venv's Python: loads a DAG, writes facts as JSON.

Usage::

    python tests/airflow_probe.py local DAGS_FOLDER OUT.json
    python tests/airflow_probe.py flex DAG_FILE OUT.json [GATE_DIR]

``local``: import errors, the Beam DAG's settings and, for a DirectRunner and
a FlinkRunner set of params, the flags the Beam operator would pass to the
pipeline. ``flex``: loads only the Flex Template DAG file, records whether
that imported TensorFlow or Beam, renders the sensor and the launch request
body for a sample logical date and runs the gate task's callable against a
fake ``GCSHook`` serving the files of ``GATE_DIR`` as ``gs://bucket/scores/...``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

LOGICAL = datetime(2026, 1, 2, tzinfo=timezone.utc)
HEAVY = ("tensorflow", "keras", "apache_beam", "pipelines", "transforms")


def _context(dag, params: dict) -> dict:
    return {
        "params": {**{k: v.value for k, v in dag.params.items()}, **params},
        "ds": LOGICAL.strftime("%Y-%m-%d"),
        "ds_nodash": LOGICAL.strftime("%Y%m%d"),
        "logical_date": LOGICAL,
    }


def _rendered(dag, task_id: str, params: dict):
    task = dag.get_task(task_id).prepare_for_execution()
    task.render_template_fields(_context(dag, params), jinja_env=dag.get_template_env())
    return task


def _bag_facts(bag: DagBag) -> dict:
    return {
        "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
        "dags": sorted(bag.dag_ids),
    }


def _dag_facts(dag) -> dict:
    return {
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "tasks": {t.task_id: type(t).__name__ for t in dag.tasks},
        "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "retries": {t.task_id: t.retries for t in dag.tasks},
    }


def local(dags_folder: str) -> dict:
    from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

    bag = DagBag(dag_folder=dags_folder)
    facts = _bag_facts(bag)
    dag = bag.get_dag("batch_score_daily")
    if dag is None:
        return facts

    def flags(params: dict) -> dict:
        task = _rendered(dag, "score", params)
        return {"runner": task.runner, "args": beam_options_to_args(task.pipeline_options)}

    facts.update(
        _dag_facts(dag),
        py_interpreter=dag.get_task("score").py_interpreter,
        direct=flags({}),
        flink=flags({"runner": "FlinkRunner", "flink_master": "flink-rest:8081"}),
    )
    return facts


class FakeGCSHook:
    """Serves ``gs://bucket/scores/<path>`` from the local directory ``root/<path>``."""

    root = Path(".")
    calls: list = []

    def __init__(self, gcp_conn_id: str = "") -> None:
        self.calls.append(("init", gcp_conn_id))

    def _path(self, bucket_name: str, object_name: str) -> Path:
        assert bucket_name == "bucket", bucket_name
        return self.root / object_name.removeprefix("scores/")

    def exists(self, bucket_name: str, object_name: str) -> bool:
        self.calls.append(("exists", object_name))
        return self._path(bucket_name, object_name).is_file()

    def download(self, bucket_name: str, object_name: str) -> bytes:
        self.calls.append(("download", object_name))
        return self._path(bucket_name, object_name).read_bytes()


def flex(dag_file: str, gate_dir: str | None) -> dict:
    bag = DagBag(dag_folder=dag_file)
    facts = _bag_facts(bag)
    facts["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    dag = bag.get_dag("batch_score_flex_daily")
    if dag is None:
        return facts
    sensor = _rendered(dag, "wait_for_input", {"input_root": "gs://in-bucket/features/"})
    facts.update(
        _dag_facts(dag),
        sensor={
            "bucket": sensor.bucket,
            "prefix": sensor.prefix,
            "mode": sensor.mode,
            "no_marker_prefix": _rendered(dag, "wait_for_input", {"input_marker": ""}).prefix,
        },
        default=_rendered(dag, "score", {}).body,
        custom=_rendered(
            dag,
            "score",
            {
                "id_columns": ["user_id", "ts"],
                "reference_profile": "gs://b/profile.json",
                "experiments": ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"],
                "score_options": {
                    "fail_on_drift": True,
                    "drift_threshold": ["psi=0.3", "ks=off"],
                    "calibration": "gs://b/calibration.json",
                },
            },
        ).body,
        score_location=_rendered(dag, "score", {"region": "europe-west4"}).location,
    )
    gate_task = dag.get_task("gate")
    rendered_gate = _rendered(dag, "gate", {"output_root": "gs://bucket/scores"})
    facts["gate_args"] = list(rendered_gate.op_args)
    if gate_dir:
        FakeGCSHook.root = Path(gate_dir)
        gate_task.python_callable.__globals__["GCSHook"] = FakeGCSHook
        try:
            facts["gate_result"] = gate_task.python_callable(*rendered_gate.op_args)
        except Exception as e:  # the AirflowFailException the task would raise
            facts["gate_error"] = f"{type(e).__name__}: {e}"
        facts["gate_calls"] = FakeGCSHook.calls
    return facts


def main(argv: list[str]) -> None:
    mode, target, out_path, *rest = argv
    facts = local(target) if mode == "local" else flex(target, rest[0] if rest else None)
    with open(out_path, "w") as f:
        json.dump(facts, f, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
