"""The garbage collector during start-up: paused by the console script, frozen and resumed before the job.

The whole-process checks are in tests/e2e/test_startup_gc.py.
"""

from __future__ import annotations

import gc
import weakref

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


class _Node:
    """A weak-referenceable object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_checkpoint_freezes_and_resume_collects_only_what_came_after(collector):
    startup_gc.pause()
    assert not gc.isenabled()
    survivors = [object() for _ in range(1000)]
    before_checkpoint = weakref.ref(_Node())  # garbage from "the imports"
    startup_gc.checkpoint()
    frozen = gc.get_freeze_count()
    assert frozen >= len(survivors)
    after_checkpoint = weakref.ref(_Node())  # garbage from "planning"
    startup_gc.resume()
    assert gc.isenabled()
    assert after_checkpoint() is None
    assert before_checkpoint() is not None  # frozen with the modules, never collected
    assert gc.get_freeze_count() >= frozen
    frozen = gc.get_freeze_count()
    startup_gc.resume()  # a second resume (or a checkpoint after it) does nothing
    startup_gc.checkpoint()
    assert gc.get_freeze_count() == frozen


def test_resume_without_pause_leaves_the_collector_as_the_program_set_it(collector):
    gc.disable()  # a program that runs a command with its own collector settings
    garbage = weakref.ref(_Node())
    startup_gc.checkpoint()
    startup_gc.resume()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert garbage() is not None


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
