"""The Airflow DAGs in templates/airflow/: import cleanly, render their requests, run end to end.

``score_flex_dag.py`` launches the Dataflow Flex Template (its request body is
checked against metadata.json); ``score_dag.py`` runs the pipeline through
BeamRunPythonPipelineOperator on DirectRunner or Flink. Airflow lives in its
own venv (``make airflow-venv``; ``make test`` builds it), so these tests
drive it through subprocesses: DagBag probes (tests/airflow_probe.py) and
``airflow dags test`` on DirectRunner against local files. The gate rule
itself (``score_gate``) is tested here directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PortableOptions,
    StandardOptions,
)

from keras_batch_score.pipelines import score
from keras_batch_score.pipelines.config import REQUIRED_SETTINGS
from tests import deploy_support as ds
from tests import util

# The Airflow venv: `make airflow-venv` builds .venv-airflow; a worktree may point elsewhere.
AIRFLOW_BIN = Path(os.environ.get("BATCH_SCORE_AIRFLOW_VENV", ds.REPO / ".venv-airflow")) / "bin"
DAGS = ds.REPO / "templates" / "airflow"
DAG_ID = "batch_score_daily"
FLEX_DAG_ID = "batch_score_flex_daily"
METADATA = ds.REPO / "templates" / "dataflow" / "metadata.json"
needs_airflow = pytest.mark.skipif(
    not (AIRFLOW_BIN / "airflow").exists(),
    reason="no .venv-airflow: run `make airflow-venv` (make test does)",
)


def _gate_module():
    spec = importlib.util.spec_from_file_location("score_gate", DAGS / "score_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gate = _gate_module()


def _write(path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


# --------------------------------------------------------------------------- the gate rule


def test_gate_passes_within_limit_and_fails_above(tmp_path):
    _write(tmp_path / "run_summary.json", {"rows_read": 10, "rows_scored": 7, "rows_failed": 3})
    assert gate.check_run(str(tmp_path), 3) == {"rows_read": 10, "rows_scored": 7, "rows_failed": 3}
    with pytest.raises(gate.GateFailure, match=r"3 of 10 rows failed \(limit 2\)"):
        gate.check_run(str(tmp_path), 2)


def test_gate_fails_without_summary(tmp_path):
    with pytest.raises(gate.GateFailure, match="did not finish"):
        gate.check_run(str(tmp_path / "missing"))


def test_gate_reads_drift_json_when_present(tmp_path):
    _write(tmp_path / "run_summary.json", {"rows_read": 5, "rows_scored": 5, "rows_failed": 0})
    _write(tmp_path / "drift.json", {"drift_detected": False, "message": "0 of 3 features drifted"})
    assert gate.check_run(str(tmp_path))["drift_detected"] is False
    _write(tmp_path / "drift.json", {"drift_detected": True, "message": "2 of 3 features drifted"})
    with pytest.raises(gate.GateFailure, match="dataset drift detected: 2 of 3 features drifted"):
        gate.check_run(str(tmp_path))


class _FakeHook:
    """GCSHook's exists/download over a dict of gs:// objects."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str, str]] = []

    def exists(self, bucket_name: str, object_name: str) -> bool:
        self.calls.append(("exists", bucket_name, object_name))
        return f"gs://{bucket_name}/{object_name}" in self.objects

    def download(self, bucket_name: str, object_name: str) -> bytes:
        self.calls.append(("download", bucket_name, object_name))
        return self.objects[f"gs://{bucket_name}/{object_name}"]


def test_gate_reads_gcs_through_the_hook_as_bytes():
    summary = {"rows_read": 9, "rows_scored": 9, "rows_failed": 0}
    hook = _FakeHook(
        {
            "gs://b/scores/dt=1/run_summary.json": json.dumps(summary).encode(),
            "gs://b/scores/dt=1/drift.json": b'{"drift_detected": false}',
        }
    )
    made = []
    read = gate.gcs_reader(lambda: made.append(1) or hook)
    assert gate.check_run("gs://b/scores/dt=1/", 0, read=read) == {
        **summary,
        "drift_detected": False,
    }
    assert made == [1]  # one hook, built on the first gs:// read
    assert ("download", "b", "scores/dt=1/run_summary.json") in hook.calls
    with pytest.raises(gate.GateFailure, match=r"gs://b/scores/dt=2/run_summary.json does not"):
        gate.check_run("gs://b/scores/dt=2", 0, read=read)


def test_gate_module_imports_neither_beam_nor_airflow():
    source = (DAGS / "score_gate.py").read_text()
    assert not re.search(r"^\s*(import|from) (apache_beam|airflow|tensorflow)", source, re.M)
    assert gate.split_gcs_uri("gs://bucket/a/b") == ("bucket", "a/b")
    with pytest.raises(ValueError, match="not a gs:// URI"):
        gate.split_gcs_uri("/local/a")


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower().strip()] = version
    return pins


def test_airflow_constraints_agree_with_the_project_pins():
    """`make airflow-venv` installs this project under the Airflow pins: they must not clash."""
    requirements = ds.REPO / "requirements"
    airflow = _pins(requirements / "airflow-constraints.txt")
    main = _pins(requirements / "constraints.txt")
    allowed = {"importlib-metadata"}  # Airflow 3.3 needs < 9
    clashes = {k: (v, airflow[k]) for k, v in main.items() if airflow.get(k, v) != v}
    assert set(clashes) <= allowed, f"constraints.txt vs airflow-constraints.txt: {clashes}"
    text = (ds.REPO / "pyproject.toml").read_text()
    runtime = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)"', runtime):
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert airflow.get(key) == version, f"{name}=={version} is not pinned so for Airflow"
    for name, version in _pins(requirements / "airflow.txt").items():
        assert airflow[name] == version


# --------------------------------------------------------------------------- Airflow itself


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = ds.venv_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        BATCH_SCORE_PYTHON=str(AIRFLOW_BIN / "python"),
    )
    env["PATH"] = f"{AIRFLOW_BIN}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ds.REPO)  # this checkout's pipelines/ for the score subprocess
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


def _probe(env: dict, *args) -> dict:
    out = args[2]  # mode, target, OUT.json[, gate dir]
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "python"), str(ds.REPO / "tests" / "airflow_probe.py"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@needs_airflow
def test_dagbag_imports_and_renders_direct_and_flink_flags(tmp_path, airflow_env):
    facts = _probe(airflow_env, "local", DAGS, tmp_path / "facts.json")
    assert facts["import_errors"] == {}
    assert facts["dags"] == sorted([DAG_ID, FLEX_DAG_ID])
    assert facts["schedule"] == "@daily" and facts["catchup"] is False
    assert facts["tasks"]["score"] == "BeamRunPythonPipelineOperator"
    assert facts["downstream"]["score"] == ["gate"]
    assert facts["retries"]["score"] >= 1 and facts["retries"]["gate"] == 0
    assert facts["py_interpreter"] == airflow_env["BATCH_SCORE_PYTHON"]

    direct = facts["direct"]
    assert direct["runner"] == "DirectRunner"
    assert "--input=gs://my-bucket/features/dt=2026-01-02" in direct["args"]
    assert "--output=gs://my-bucket/scores/dt=2026-01-02" in direct["args"]
    assert "--id-column=id" in direct["args"] and "--batch-size=16384" in direct["args"]
    assert not any(
        a.startswith(("--flink", "--environment", "--verbose", "--wait")) for a in direct["args"]
    )

    flink = facts["flink"]
    assert flink["runner"] == "FlinkRunner"
    assert "--wait" in flink["args"]  # run_summary.json exists when the gate runs
    assert not any(a.startswith("--verbose") for a in flink["args"])
    # The operator adds --runner; the rest must parse as our CLI, like flink.args does.
    config, beam_args, _ = score.parse_args([*flink["args"], "--runner=FlinkRunner"])
    assert config.input.endswith("/dt=2026-01-02") and config.id_columns == ["id"]
    options = score.pipeline_options(beam_args)
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    flink_options = options.view_as(FlinkRunnerOptions)
    assert flink_options.flink_master == "flink-rest:8081"
    assert flink_options.flink_version == "1.20" and flink_options.flink_submit_uber_jar
    assert flink_options.parallelism == 4
    # Without BATCH_SCORE_PYTHON the DAG does not load (no silent fallback to Airflow's python).
    env = {k: v for k, v in airflow_env.items() if k != "BATCH_SCORE_PYTHON"}
    bare = _probe(env, "local", DAGS, tmp_path / "bare.json")
    assert bare["dags"] == [FLEX_DAG_ID]
    (error,) = bare["import_errors"].values()
    assert "set BATCH_SCORE_PYTHON" in error
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == (
        "EXTERNAL",
        "localhost:50000",
    )


def _metadata() -> dict[str, dict]:
    return {p["name"]: p for p in json.loads(METADATA.read_text())["parameters"]}


def _check_body(body: dict, metadata: dict[str, dict]) -> dict[str, str]:
    """The launch request is well formed and its parameters are metadata.json's; returns them."""
    (launch,) = body.values()
    assert list(body) == ["launchParameter"]
    assert launch["containerSpecGcsPath"].startswith("gs://")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", launch["jobName"]), launch["jobName"]
    params = launch["parameters"]
    assert set(params) <= set(metadata), set(params) - set(metadata)
    for name, value in params.items():
        assert isinstance(value, str), (name, value)
        for regex in metadata[name].get("regexes", []):
            assert re.fullmatch(regex, value), (name, value, regex)
    required = {n for n, p in metadata.items() if not p["isOptional"]}
    assert required == set(REQUIRED_SETTINGS) and required <= set(params)
    return params


@pytest.mark.slow
@needs_airflow
def test_flex_dag_request_matches_metadata_and_imports_no_tensorflow(tmp_path, airflow_env):
    _write(
        tmp_path / "gate" / "dt=2026-01-02" / "run_summary.json",
        {"rows_read": 10, "rows_scored": 10, "rows_failed": 0},
    )
    facts = _probe(
        airflow_env, "flex", DAGS / "score_flex_dag.py", tmp_path / "facts.json", tmp_path / "gate"
    )
    assert facts["import_errors"] == {}
    assert facts["dags"] == [FLEX_DAG_ID]
    assert facts["heavy_modules"] == []  # no TensorFlow, Keras, Beam or this project in Airflow
    assert facts["tasks"] == {
        "wait_for_input": "GCSObjectsWithPrefixExistenceSensor",
        "score": "DataflowStartFlexTemplateOperator",
        "gate": "_PythonDecoratedOperator",
    }
    assert facts["downstream"] == {"wait_for_input": ["score"], "score": ["gate"], "gate": []}
    assert facts["retries"]["gate"] == 0 and facts["retries"]["score"] >= 1

    sensor = facts["sensor"]
    assert sensor["mode"] == "reschedule"
    assert (sensor["bucket"], sensor["prefix"]) == ("in-bucket", "features/dt=2026-01-02/_SUCCESS")
    assert sensor["no_marker_prefix"] == "features/dt=2026-01-02/"
    assert facts["score_location"] == "europe-west4"

    metadata = _metadata()
    params = _check_body(facts["default"], metadata)
    assert params == {
        "model": "gs://my-bucket/models/model.keras",
        "input": "gs://my-bucket/features/dt=2026-01-02",
        "output": "gs://my-bucket/scores/dt=2026-01-02",
        "id_column": "id",
        "batch_size": "16384",
    }
    environment = facts["default"]["launchParameter"]["environment"]
    assert environment["sdkContainerImage"].endswith("/batch-score:1")
    assert environment["maxWorkers"] == 10 and "additionalExperiments" not in environment

    custom = _check_body(facts["custom"], metadata)
    assert custom["id_column"] == "user_id,ts" and custom["fail_on_drift"] == "true"
    assert custom["drift_threshold"] == "psi=0.3,ks=off"
    experiments = facts["custom"]["launchParameter"]["environment"]["additionalExperiments"]
    assert experiments == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    # What the template's main.py makes of these parameters parses as the score command.
    flex = importlib.util.spec_from_file_location("flex_main", METADATA.parent / "main.py")
    main = importlib.util.module_from_spec(flex)
    flex.loader.exec_module(main)
    config, _, _ = score.parse_args(main.to_cli_args([f"--{k}={v}" for k, v in custom.items()]))
    assert config.id_columns == ["user_id", "ts"] and config.fail_on_drift is True
    assert config.output == "gs://my-bucket/scores/dt=2026-01-02"

    # The gate reads gs:// through GCSHook (a fake serving tmp_path/gate here).
    assert facts["gate_args"] == ["gs://bucket/scores/dt=2026-01-02", 0]
    assert facts["gate_result"] == {"rows_read": 10, "rows_scored": 10, "rows_failed": 0}
    downloads = [c[1] for c in facts["gate_calls"] if c[0] == "download"]
    assert downloads == ["scores/dt=2026-01-02/run_summary.json"]


@pytest.mark.slow
@needs_airflow
def test_airflow_dags_test_scores_the_logical_date_partition(tmp_path, airflow_env):
    day = "2026-01-02"
    model_path, _, table, reference = ds.make_job(tmp_path / "job")
    util.write_parquet(tmp_path / "features" / f"dt={day}" / "part-0.parquet", table)
    # Another day's partition must not be read.
    util.write_parquet(
        tmp_path / "features" / "dt=2026-01-01" / "part-0.parquet",
        util.feature_table(50, ds.N_FEATURES, seed=1),
    )
    conf = {
        "model": model_path,
        "input_root": str(tmp_path / "features"),
        "output_root": str(tmp_path / "scores"),
        "batch_size": 128,
    }
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "dags", "test", DAG_ID, day, "-c", json.dumps(conf)],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "Returned value was: {'rows_read': 600, 'rows_scored': 600, 'rows_failed': 0}" in log

    out = tmp_path / "scores" / f"dt={day}"
    summary = util.read_summary(out)
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (600, 600, 0)
    ds.assert_predictions(util.read_predictions(out), table, reference)


@pytest.mark.slow
@needs_airflow
def test_gate_task_fails_without_retry_on_too_many_failed_rows(tmp_path, airflow_env):
    _write(
        tmp_path / "scores" / "dt=2026-01-03" / "run_summary.json",
        {"rows_read": 10, "rows_scored": 7, "rows_failed": 3},
    )
    params = {"output_root": str(tmp_path / "scores"), "max_rows_failed": 1}
    command = ["tasks", "test", DAG_ID, "gate", "2026-01-03", "-t", json.dumps(params)]
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), *command],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "AirflowFailException: 3 of 10 rows failed (limit 1)" in log, log[-5000:]
    assert "new_state=failed" in log and "up_for_retry" not in log, log[-5000:]
