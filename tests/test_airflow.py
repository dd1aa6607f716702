"""The Airflow DAG in templates/airflow/: imports cleanly, renders Dataflow flags, runs end to end.

Airflow lives in its own venv (``make airflow-venv``; ``make test`` builds it),
so these tests drive it through subprocesses: a DagBag probe and
``airflow dags test`` on DirectRunner against local files. The gate rule
itself (``score_gate.check_run``) is tested here directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions

from pipelines import score
from tests import deploy_support as ds
from tests import util

AIRFLOW_BIN = ds.REPO / ".venv-airflow" / "bin"
DAGS = ds.REPO / "templates" / "airflow"
DAG_ID = "batch_score_daily"
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
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


@pytest.mark.slow
@needs_airflow
def test_dagbag_imports_and_renders_direct_and_dataflow_flags(tmp_path, airflow_env):
    out = tmp_path / "facts.json"
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "python"), str(ds.REPO / "tests" / "airflow_probe.py"), str(DAGS), out],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(out.read_text())
    assert facts["import_errors"] == {}
    assert facts["dags"] == [DAG_ID]
    assert facts["schedule"] == "@daily" and facts["catchup"] is False
    assert facts["tasks"]["score"] == "BeamRunPythonPipelineOperator"
    assert facts["downstream_of_score"] == ["gate"]
    assert facts["retries"]["score"] >= 1 and facts["retries"]["gate"] == 0

    direct = facts["direct"]
    assert direct["runner"] == "DirectRunner"
    assert "--input=gs://my-bucket/features/dt=2026-01-02" in direct["args"]
    assert "--output=gs://my-bucket/scores/dt=2026-01-02" in direct["args"]
    assert not any(a.startswith(("--temp_location", "--verbose")) for a in direct["args"])

    dataflow = facts["dataflow"]
    assert dataflow["runner"] == "DataflowRunner"
    assert dataflow["dataflow_config"]["project_id"] == "my-project"
    assert dataflow["dataflow_config"]["job_name"] == "batch-score-20260102"
    # The operator adds --runner/--project/--region/--job_name; the rest must parse as our CLI.
    config, beam_args, verbosity = score.parse_args(
        [
            *dataflow["args"],
            "--runner=DataflowRunner",
            "--project=my-project",
            "--region=europe-west4",
            "--job_name=batch-score-20260102",
        ]
    )
    assert verbosity == "verbose"  # Beam then logs the job id the operator follows
    assert config.input.endswith("/dt=2026-01-02") and config.id_columns == ["id"]
    options = score.pipeline_options(beam_args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert cloud.temp_location == "gs://bucket/tmp"
    assert cloud.dataflow_service_options == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    assert options.view_as(WorkerOptions).sdk_container_image.endswith("batch-score:1")
    assert not score.waits_for_job(options)


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
