"""The garbage collector during start-up: paused by the console script, frozen and resumed before the job."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keras_batch_score.pipelines import cli, startup_gc
from keras_batch_score.pipelines.command import Command, Job, Parsed


@pytest.fixture
def collector():
    """Restores this test process's collector (enabled, nothing frozen) afterwards."""
    was_enabled = gc.isenabled()
    yield
    startup_gc._paused = False
    gc.unfreeze()
    if was_enabled:
        gc.enable()


def test_pause_then_resume_freezes_what_exists_and_collects_again(collector):
    startup_gc.pause()
    assert not gc.isenabled()
    survivor = [object() for _ in range(1000)]
    before = gc.get_freeze_count()
    startup_gc.resume()
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= before + len(survivor)
    startup_gc.resume()  # a second resume freezes nothing more
    assert gc.get_freeze_count() == frozen


def test_resume_without_pause_leaves_the_collector_as_the_program_set_it(collector):
    gc.disable()  # a program that runs a command with its own collector settings
    startup_gc.resume()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


class _Probe(Command[str, str]):
    name = "probe"
    beam = False

    def parse(self, argv):
        return Parsed(config="config", verbosity="quiet")

    def plan(self, config):
        self.planned_with_collector = gc.isenabled()
        return "plan"

    def execute(self, plan, job: Job):
        return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}

    def report(self, plan, job, outcome):
        return outcome


def test_a_command_runs_its_job_with_the_collector_resumed(collector):
    probe = _Probe()
    startup_gc.pause()
    outcome = probe.run([])
    assert probe.planned_with_collector is False  # planning loads modules and the model
    assert outcome["enabled"] is True
    assert outcome["frozen"] > 0


def test_the_console_script_pauses_the_collector_before_the_command(collector, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "main", lambda: seen.append(gc.isenabled()) or 0)
    monkeypatch.setattr(cli.os, "_exit", lambda code: seen.append(code))
    cli.entry()
    assert seen == [False, 0]


def test_a_real_job_makes_no_full_collection_before_its_pipeline_runs(tmp_path):
    """In a fresh ``batch-score profile`` process, importing Beam alone makes full
    collections unless the collector is paused; the job itself runs with it on."""
    pq.write_table(pa.table({"x": np.arange(2000, dtype=np.float64)}), tmp_path / "d.parquet")
    script = textwrap.dedent(
        f"""
        import gc, json, os, sys
        full = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and full.append(info["generation"]))
        from keras_batch_score.pipelines import startup_gc
        seen = {{}}
        resume = startup_gc.resume
        def probing_resume():
            seen["full_before"] = full.count(2)
            resume()
            seen["enabled_after"] = gc.isenabled()
        startup_gc.resume = probing_resume
        exit_ = os._exit
        def report(code):
            print("PROBE " + json.dumps(seen), flush=True)
            exit_(code)
        os._exit = report
        sys.argv = ["batch-score", "profile", "--input", {str(tmp_path / "d.parquet")!r},
                    "--output", {str(tmp_path / "p.json")!r}, "--quiet"]
        from keras_batch_score.pipelines.cli import entry
        entry()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.json").exists()
    line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE "))
    assert json.loads(line.removeprefix("PROBE ")) == {"full_before": 0, "enabled_after": True}
