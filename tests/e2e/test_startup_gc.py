"""The garbage collector in a real ``batch-score`` process: no full pass during start-up.

The module's own behaviour (pause, checkpoint, resume) is tested in
tests/unit/test_startup_gc.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import gc, json, os, sys
    full = []
    gc.callbacks.append(lambda phase, info: phase == "stop" and full.append(info["generation"]))
    from keras_batch_score.pipelines import startup_gc
    seen = {}
    resume = startup_gc.resume
    def probing_resume():
        seen["full_passes_before"] = full.count(2)
        seen["young_objects"] = gc.get_count()[0]  # tracked since the last freeze
        resume()
        seen["enabled_after"] = gc.isenabled()
    startup_gc.resume = probing_resume
    exit_ = os._exit
    def report(code):
        print("PROBE " + json.dumps(seen), flush=True)
        exit_(code)
    os._exit = report
    sys.argv = ["batch-score", *json.loads(sys.argv[1])]
    from keras_batch_score.pipelines.cli import entry
    entry()
    """
)


def _probe(argv: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


@pytest.mark.parametrize("command", ["profile", "score"])
def test_start_up_makes_no_full_collection_and_the_job_runs_with_the_collector_on(
    command, tmp_path, mlp3, features3
):
    """Without the pause, importing Beam alone makes full passes. The checkpoints
    after the imports leave resume's collection only planning's objects to walk."""
    _, model_path = mlp3
    _, data_path = features3
    if command == "profile":
        argv = ["profile", "--input", data_path, "--output", str(tmp_path / "p.json")]
    else:
        argv = ["score", "--model", model_path, "--input", data_path]
        argv += ["--output", str(tmp_path / "out"), "--id-column", "id"]
    seen = _probe([*argv, "--quiet"])
    assert seen["full_passes_before"] == 0
    assert seen["enabled_after"] is True
    assert seen["young_objects"] < 50_000, seen  # without the checkpoint after TensorFlow: ~390k
