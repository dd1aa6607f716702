"""The wheel: compatible dependency ranges, metadata, and a build with no warnings of ours."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[email.message.Message, str, str]:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("keras_batch_score-*.whl")
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(z.read(name))
    return metadata, proc.stdout + proc.stderr, str(out)


@pytest.mark.slow
def test_build_prints_no_deprecation_warning(wheel):
    _, log, _ = wheel
    assert "BuildBackendWarning" not in log and "deprecated" not in log.lower(), log


@pytest.mark.slow
def test_runtime_dependencies_are_ranges_not_pins(wheel):
    metadata, _, _ = wheel
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert len(requires) >= 7
    pinned = [r for r in requires if "==" in r]
    assert not pinned, f"exact pins belong in requirements/constraints.txt: {pinned}"


@pytest.mark.slow
def test_metadata_has_license_and_python_classifiers(wheel):
    metadata, _, _ = wheel
    assert metadata["License-Expression"] == "Apache-2.0"
    classifiers = metadata.get_all("Classifier")
    for version in ("3.10", "3.11", "3.12"):
        assert f"Programming Language :: Python :: {version}" in classifiers


def test_constraints_pin_every_runtime_dependency():
    """The ranges are loose; the tested set stays exact in requirements/constraints.txt."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        line.split("==")[0].strip().lower().replace("_", "-")
        for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in project["dependencies"]:
        name = requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        assert name.lower().replace("_", "-") in pins, name


@pytest.mark.slow
def test_wheel_installs_one_import_namespace(wheel):
    """Everything lives under keras_batch_score: no bare `pipelines` or `transforms`."""
    (path,) = Path(wheel[2]).glob("keras_batch_score-*.whl")
    with zipfile.ZipFile(path) as z:
        tops = {name.split("/", 1)[0] for name in z.namelist()}
    assert tops == {"keras_batch_score", f"keras_batch_score-{_version()}.dist-info"}, tops


def _version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.slow
def test_pip_install_gives_the_command_and_python_m(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not (target / "pipelines").exists() and not (target / "transforms").exists()
    assert (target / "keras_batch_score" / "transforms" / "model" / "handler.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-m", "keras_batch_score", "--version"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0 and "keras-batch-score" in where.stdout, where.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import keras_batch_score.transforms.run.publish as m; print(m.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert imported.stdout.strip().startswith(str(target)), imported.stdout + imported.stderr
    script = target / "bin" / "batch-score"
    assert script.is_file()
    helped = subprocess.run(
        [sys.executable, str(script), "score", "--help"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0 and "--model" in helped.stdout, helped.stderr


def test_pyproject_lists_every_package_folder():
    """Packages are listed explicitly (package-dir mapping); a new folder must be added."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"keras_batch_score"}
    for top in ("pipelines", "transforms"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            if rel.parts[:2] == ("pipelines", "package_root"):
                continue
            found.add(".".join(("keras_batch_score", *rel.parts)))
    assert listed == found
