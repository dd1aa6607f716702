"""The wheel: compatible dependency ranges, metadata, and a build with no warnings of ours."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[email.message.Message, str]:
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
    return metadata, proc.stdout + proc.stderr


@pytest.mark.slow
def test_build_prints_no_deprecation_warning(wheel):
    _, log = wheel
    assert "BuildBackendWarning" not in log and "deprecated" not in log.lower(), log


@pytest.mark.slow
def test_runtime_dependencies_are_ranges_not_pins(wheel):
    metadata, _ = wheel
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert len(requires) >= 7
    pinned = [r for r in requires if "==" in r]
    assert not pinned, f"exact pins belong in requirements/constraints.txt: {pinned}"


@pytest.mark.slow
def test_metadata_has_license_and_python_classifiers(wheel):
    metadata, _ = wheel
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
