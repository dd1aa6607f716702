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

from keras_batch_score.pipelines import flex_metadata, score
from keras_batch_score.pipelines.config import REQUIRED_SETTINGS, add_score_arguments
from tests import deploy_support as ds
from tests import util

DATAFLOW = ds.REPO / "templates" / "dataflow"
FLINK = ds.REPO / "templates" / "flink"


def _pins() -> dict[str, str]:
    """The exact versions tested: requirements/constraints.txt (pyproject.toml holds ranges)."""
    text = (ds.REPO / "requirements" / "constraints.txt").read_text()
    return {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M)
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


def test_dockerfile_pins_the_launcher_and_stages_nothing():
    """Dependencies are baked in: no setup file, no global PIP_NO_DEPS; launcher tag pinned."""
    text = _dockerfile()
    (tag,) = re.findall(r"^ARG LAUNCHER_TAG=(\S+)$", text, re.M)
    assert tag != "latest" and re.search(r"20\d{6}", tag), tag
    assert "template-launcher-base:${LAUNCHER_TAG} AS launcher" in text
    assert not re.search(r"^FROM \S+:latest", text, re.M)
    env = dict(re.findall(r"^ENV (\w+)=(.*)$", text, re.M))
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in env
    assert "PIP_NO_DEPS" not in env


def test_dockerfile_flex_template_files_exist_and_are_copied():
    text = _dockerfile()
    env = dict(re.findall(r'^ENV (\w+)="?\$\{WORKDIR\}/([^"\s]+)"?$', text, re.M))
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "main.py"
    copies = re.findall(r"^COPY (?!--from)(.+) (\S+)$", text, re.M)
    sources = [src for srcs, _ in copies for src in srcs.split()]
    for src in sources:
        assert (ds.REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert ("templates/dataflow/main.py", "main.py") in copies
    assert "setup.py" in sources and "pipelines" in sources and "transforms" in sources
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text


def test_metadata_json_is_the_generated_one():
    """Regenerate with `make flex-metadata` after changing a score flag."""
    committed = (DATAFLOW / "metadata.json").read_text()
    assert committed == flex_metadata.render(), (
        "templates/dataflow/metadata.json is stale: run `make flex-metadata`"
    )


def test_metadata_has_one_parameter_per_score_flag():
    """Every flag, counted from the parser here (not by the generator)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_score_arguments(parser)
    expected = {
        a.option_strings[0][2:].replace("-", "_") for a in parser._actions if a.option_strings
    }
    params = {p["name"]: p for p in flex_metadata.metadata()["parameters"]}
    assert set(params) == expected
    assert len(expected) >= 30
    for name in ("input_format", "preprocess", "calibration", "drift_threshold", "fail_on_drift"):
        assert name in params
    assert params["fail_on_drift"]["regexes"] == ["^(true|false)$"]
    assert params["batch_size"]["regexes"] == [flex_metadata.INTEGER]
    assert params["input_format"]["regexes"] == ["^(auto|parquet|tfrecord)$"]
    assert "comma-separated" in params["drift_threshold"]["helpText"]
    for param in params.values():
        for regex in param.get("regexes", []):
            re.compile(regex)
    assert re.fullmatch(params["drift_share"]["regexes"][0], "0.25")
    assert re.fullmatch(params["clip_min"]["regexes"][0], "-1e-3")
    assert not re.fullmatch(params["clip_min"]["regexes"][0], "abc")
    assert not re.fullmatch(params["output"]["regexes"][0], "/local/out")


def test_flex_metadata_cli_writes_the_file(tmp_path):
    target = tmp_path / "metadata.json"
    assert flex_metadata.main(["--output", str(target)]) == 0
    assert json.loads(target.read_text()) == flex_metadata.metadata()


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
    for required in REQUIRED_SETTINGS:
        assert required in by_name, f"required flag --{required} missing from metadata.json"
        assert by_name[required]["isOptional"] is False
    optional = {p["name"] for p in metadata["parameters"] if p["isOptional"]}
    assert optional == set(names) - set(REQUIRED_SETTINGS)


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


def test_every_metadata_parameter_translates_to_a_flag_the_cli_parses():
    """A value for each parameter of metadata.json, through main.py, parsed by the real CLI."""
    flex = _flex_main()
    samples = {
        "^(true|false)$": "true",
        flex_metadata.INTEGER: "3",
        flex_metadata.NUMBER: "0.5",
    }
    params = json.loads((DATAFLOW / "metadata.json").read_text())["parameters"]
    argv = []
    for param in params:
        regex = (param.get("regexes") or [None])[0]
        if regex in samples:
            value = samples[regex]
        elif regex and regex.startswith("^("):
            value = regex[2:].split("|")[0].rstrip(")$")
        else:
            value = "gs://b/x"
        if param["name"] in ("ensemble_weights", "ab_split"):
            value = "a=0.5,b=0.5"
        argv.append(f"--{param['name']}={value}")
    argv.append("--drift_threshold=psi=0.3,ks=off")
    args = flex.to_cli_args(argv)
    parser = argparse.ArgumentParser(add_help=False)
    add_score_arguments(parser)
    namespace, unknown = parser.parse_known_args(args)
    assert unknown == []
    assert namespace.fail_on_drift is True and namespace.batch_size == 3
    assert namespace.drift_thresholds == ["gs://b/x", "psi=0.3", "ks=off"]
    assert namespace.ensemble_weights == {"a": 0.5, "b": 0.5}
    assert len(vars(namespace)) == len(params)
    # false leaves a switch out, an empty value leaves any flag out.
    assert flex.to_cli_args(["--fail_on_drift=false", "--calibration=", "--id_column="]) == []


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


def _flink_documents() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((FLINK / "flink-deployment.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def test_flink_manifest_matches_the_options():
    manifest = _flink_documents()["FlinkDeployment"]
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


def _quantity(value) -> float:
    """A Kubernetes / Flink quantity (2, "500m", "4Gi", "4096m" memory) as a number."""
    text = str(value)
    units = {"Gi": 2**30, "Mi": 2**20, "Ki": 2**10, "G": 1e9, "M": 1e6, "k": 1e3, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_flink_manifest_uses_workload_identity_and_limits_resources():
    docs = _flink_documents()
    account = docs["ServiceAccount"]
    gsa = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert re.fullmatch(
        r"[A-Za-z][-A-Za-z0-9]*@[A-Za-z][-A-Za-z0-9]*\.iam\.gserviceaccount\.com", gsa
    )
    spec = docs["FlinkDeployment"]["spec"]
    assert spec["serviceAccount"] == account["metadata"]["name"]
    pod = spec["podTemplate"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    binding = docs["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]

    text = (FLINK / "flink-deployment.yaml").read_text()
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in text and "secretName" not in text
    assert "volumes" not in pod
    for container in pod["containers"]:
        assert not container.get("volumeMounts") and not container.get("env"), container["name"]

    pool = {c["name"]: c for c in pod["containers"]}["beam-worker-pool"]
    requests, limits = pool["resources"]["requests"], pool["resources"]["limits"]
    for key in ("cpu", "memory"):
        assert 0 < _quantity(requests[key]) <= _quantity(limits[key]), key
    # The Flink containers: requests from *.resource, limits through the limit factors.
    for role in ("jobManager", "taskManager"):
        resource = spec[role]["resource"]
        assert _quantity(resource["cpu"]) > 0 and _quantity(resource["memory"]) > 0
    conf = spec["flinkConfiguration"]
    for role in ("jobmanager", "taskmanager"):
        for key in ("cpu", "memory"):
            assert float(conf[f"kubernetes.{role}.{key}.limit-factor"]) >= 1.0


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


def test_deployment_docs_give_the_exact_commands():
    readme = (ds.REPO / "docs" / "deployment.md").read_text()
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
        assert snippet in readme, f"docs/deployment.md is missing {snippet!r}"
