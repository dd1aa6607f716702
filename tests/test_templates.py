"""Deployment templates stay in step with the code: Dataflow Flex Template and Flink.

The Dockerfile pins the same Beam (and TensorFlow) as pyproject.toml, every
metadata.json parameter is a real ``batch-score score`` flag, the Flex
Template entry point runs a real job, and the Flink options build a
FlinkRunner pipeline whose workers are the manifest's worker-pool sidecar and
whose uber jar reaches (a stand-in of) Flink's REST API.
"""

from __future__ import annotations

import argparse
import email
import http.server
import importlib.util
import io
import json
import re
import subprocess
import sys
import threading
import zipfile

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import portable_runner
from google.protobuf import json_format

from pipelines import score
from pipelines.config import _REQUIRED, add_score_arguments
from tests import deploy_support as ds
from tests import util

DATAFLOW = ds.REPO / "templates" / "dataflow"
FLINK = ds.REPO / "templates" / "flink"


def _pins() -> dict[str, str]:
    """Pinned runtime dependencies of pyproject.toml (regex: tomllib is 3.11+ only)."""
    text = (ds.REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    return {
        name.lower(): version
        for name, version in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)"', deps)
    }


def _dockerfile() -> str:
    return (DATAFLOW / "Dockerfile").read_text()


def _flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", DATAFLOW / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score_flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_score_arguments(parser)
    return {opt: a for a in parser._actions for opt in a.option_strings}


# --------------------------------------------------------------------------- Dataflow


def test_dockerfile_pins_the_project_beam_and_tensorflow():
    text = _dockerfile()
    pins = _pins()
    (beam_version,) = re.findall(r"^ARG BEAM_VERSION=(\S+)$", text, re.M)
    assert beam_version == pins["apache-beam"] == beam.__version__
    assert "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    (python,) = re.findall(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M)
    assert f"python{python.replace('.', '')}-template-launcher-base" in text
    assert "python:${PYTHON_VERSION}-slim" in text
    gpu = re.findall(r'"tensorflow\[and-cuda\]==([^"]+)"', text)
    assert gpu == [pins["tensorflow"]]
    assert "-c requirements/constraints.txt" in text


def test_dockerfile_flex_template_files_exist_and_are_copied():
    text = _dockerfile()
    env = dict(re.findall(r'^ENV (\w+)="?\$\{WORKDIR\}/([^"\s]+)"?$', text, re.M))
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "main.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "setup.py"
    copies = re.findall(r"^COPY (?!--from)(.+) (\S+)$", text, re.M)
    sources = [src for srcs, _ in copies for src in srcs.split()]
    for src in sources:
        assert (ds.REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert ("templates/dataflow/main.py", "main.py") in copies
    assert "setup.py" in sources and "pipelines" in sources and "transforms" in sources
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text


def test_metadata_parameters_are_real_flags_and_required_ones_are_there():
    metadata = json.loads((DATAFLOW / "metadata.json").read_text())
    flags = _score_flags()
    flex = _flex_main()
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names)), "duplicate parameter"
    for param in metadata["parameters"]:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", param["name"]), param["name"]
        assert param["helpText"] and param["label"]
        (cli,) = {a.split("=")[0] for a in flex.to_cli_args([f"--{param['name']}=true"])}
        assert cli in flags, f"metadata parameter {param['name']!r} is not a flag ({cli})"
    by_name = {p["name"]: p for p in metadata["parameters"]}
    for required in _REQUIRED:
        assert required in by_name, f"required flag --{required} missing from metadata.json"
        assert by_name[required]["isOptional"] is False
    optional = {p["name"] for p in metadata["parameters"] if p["isOptional"]}
    assert optional == set(names) - set(_REQUIRED)


def test_flex_parameters_translate_to_cli_flags():
    flex = _flex_main()
    args = flex.to_cli_args(
        [
            "--model=gs://b/m.keras",
            "--id_column=user_id, ts",
            "--batch_size=512",
            "--reshuffle=true",
            "--unsafe_deserialization=false",
            "--runner=DataflowRunner",
            "--temp_location=gs://b/tmp",
        ]
    )
    assert args == [
        "--model=gs://b/m.keras",
        "--id-column=user_id",
        "--id-column=ts",
        "--batch-size=512",
        "--reshuffle",
        "--runner=DataflowRunner",
        "--temp_location=gs://b/tmp",
    ]
    with pytest.raises(SystemExit, match="--reshuffle expects true or false"):
        flex.to_cli_args(["--reshuffle=maybe"])


@pytest.mark.slow
def test_flex_template_entry_point_runs_a_job(tmp_path):
    """main.py with template-style parameters, as the Flex launcher calls it (locally)."""
    model, input_path, table, reference = ds.make_job(tmp_path / "job")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(DATAFLOW / "main.py"),
            f"--model={model}",
            f"--input={input_path}",
            f"--output={out}",
            "--id_column=id",
            "--batch_size=200",
            "--reshuffle=true",
        ],
        capture_output=True,
        text=True,
        env=ds.venv_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = util.read_summary(out)
    assert summary["config"]["batch_size"] == 200 and summary["config"]["reshuffle"] is True
    ds.assert_predictions(util.read_predictions(out), table, reference)


# --------------------------------------------------------------------------- Flink


def _flink_args() -> list[str]:
    lines = (FLINK / "flink.args").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_flink_options_build_a_flink_pipeline_on_the_worker_pool(tmp_path):
    model, input_path, _, _ = ds.make_job(tmp_path / "job")
    config, beam_args, _ = score.parse_args(
        [*ds.job_flags(model, input_path, "gs://bucket/scores"), *_flink_args()]
    )
    options = score.pipeline_options(beam_args)
    flink = options.view_as(FlinkRunnerOptions)
    assert flink.flink_master == "batch-score-flink-rest:8081"
    assert flink.flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert flink.flink_job_server_jar.endswith(
        f"beam-runners-flink-{flink.flink_version}-job-server-{beam.__version__}.jar"
    )
    assert flink.parallelism == 4
    assert flink.flink_submit_uber_jar  # artifacts travel in the jar; no launcher-side server
    assert not score.waits_for_job(options)

    pipeline = beam.Pipeline(options=options)
    assert type(pipeline.runner).__name__ == "FlinkRunner"
    # The output bucket is not reachable here: skip the output checks (they probe gs://).
    score.build_pipeline(pipeline, score.plan(config, check_output=False))
    environment = portable_runner.PortableRunner._create_environment(
        options.view_as(PortableOptions)
    )
    proto = pipeline.to_runner_api(default_environment=environment)
    envs = list(proto.components.environments.values())
    assert [e.urn for e in envs] == [common_urns.environments.EXTERNAL.urn]
    assert environment.url == "localhost:50000"
    names = {t.unique_name for t in proto.components.transforms.values()}
    for label in ("Read", "Validate", "WritePredictions", "Finalize"):
        assert label in names


def test_flink_manifest_matches_the_options():
    manifest = yaml.safe_load((FLINK / "flink-deployment.yaml").read_text())
    assert manifest["kind"] == "FlinkDeployment"
    spec = manifest["spec"]
    options = dict(arg.lstrip("-").split("=", 1) for arg in _flink_args() if "=" in arg)
    assert spec["flinkVersion"] == "v" + options["flink_version"].replace(".", "_")
    assert spec["image"].startswith(f"flink:{options['flink_version']}")
    containers = {c["name"]: c for c in spec["podTemplate"]["spec"]["containers"]}
    pool = containers["beam-worker-pool"]
    assert pool["args"] == ["--worker_pool"]
    port = int(options["environment_config"].rsplit(":", 1)[1])
    assert [p["containerPort"] for p in pool["ports"]] == [port]
    slots = int(spec["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    assert slots * spec["taskManager"]["replicas"] == int(options["parallelism"])
    assert pool["image"].endswith(f"beam-{beam.__version__}")
    assert options["flink_master"].startswith(manifest["metadata"]["name"] + "-rest:")


class _FakeFlinkRest(http.server.BaseHTTPRequestHandler):
    """The part of Flink's REST API that Beam's uber-jar submission uses; records uploads."""

    def _reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/jars/upload":
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            parts = email.message_from_bytes(head + body).get_payload()
            self.server.uploads.append(parts[0].get_payload(decode=True))
            self._reply({"filename": "/tmp/flink-web-upload/abc_beam.jar", "status": "success"})
        elif self.path == "/v1/jars/abc_beam.jar/run":
            self.server.runs.append(json.loads(body))
            self._reply({"jobid": "f1f1"})
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        if self.path == "/v1/jobs/f1f1/execution-result":
            self._reply({"status": {"id": "IN_PROGRESS"}})
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


def test_flink_uber_jar_submission_to_the_rest_api(tmp_path):
    """The launcher builds the jar Flink would run and uploads it, then returns without waiting."""
    model, input_path, _, _ = ds.make_job(tmp_path / "job")
    job_server_jar = tmp_path / "beam-runners-flink-job-server.jar"  # stands in for Maven's jar
    with zipfile.ZipFile(job_server_jar, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeFlinkRest)
    server.uploads, server.runs = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        info = score.run(
            [
                *ds.job_flags(model, input_path, str(tmp_path / "out")),
                *_flink_args(),
                f"--flink_master=127.0.0.1:{server.server_port}",
                f"--flink_job_server_jar={job_server_jar}",
            ]
        )
    finally:
        server.shutdown()
        thread.join()
    assert info["submitted"] is True and info["state"] == "RUNNING"
    assert server.runs == [{"entryClass": "org.apache.beam.runners.flink.FlinkPipelineRunner"}]
    (uploaded,) = server.uploads
    with zipfile.ZipFile(io.BytesIO(uploaded)) as jar:
        names = set(jar.namelist())
        pipeline = json_format.Parse(
            jar.read("BEAM-PIPELINE/pipeline/pipeline.json"), beam_runner_api_pb2.Pipeline()
        )
        options = json.loads(jar.read("BEAM-PIPELINE/pipeline/pipeline-options.json"))
    assert "META-INF/MANIFEST.MF" in names  # the job server jar, extended
    envs = list(pipeline.components.environments.values())
    assert [e.urn for e in envs] == [common_urns.environments.EXTERNAL.urn]
    payload = beam_runner_api_pb2.ExternalPayload.FromString(envs[0].payload)
    assert payload.endpoint.url == "localhost:50000"
    labels = {t.unique_name for t in pipeline.components.transforms.values()}
    assert {"Read", "Validate", "WritePredictions", "Finalize"} <= labels
    assert int(options["beam:option:parallelism:v1"]) == 4
    assert not (tmp_path / "out" / "run_summary.json").exists()  # nothing ran locally


# --------------------------------------------------------------------------- docs


def test_readme_documents_the_exact_commands():
    readme = (ds.REPO / "README.md").read_text()
    for snippet in (
        "gcloud dataflow flex-template build",
        "gcloud dataflow flex-template run",
        "templates/dataflow/metadata.json",
        "tensorflow[and-cuda]",
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--flink_job_server_jar",
        "--environment_type=EXTERNAL",
        "worker_pool_main",
        "make airflow-venv",
    ):
        assert snippet in readme, f"README is missing {snippet!r}"
