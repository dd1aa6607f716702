"""The one skeleton of every ``batch-score`` sub-command: parse -> plan -> build -> run -> report.

A command module subclasses :class:`Command` and fills in its steps;
:meth:`Command.run` calls them in order and :meth:`Command.main` runs the
command through :func:`keras_batch_score.pipelines.cli.main` (one ``error:``
line and exit status 2 for a configuration problem). The shared console flags
(:func:`add_console_flags`) and Beam's options (:func:`pipeline_options`) live
here too, with the runner facts the ``score`` command needs to decide whether
to wait for its job.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult

from keras_batch_score.pipelines import console, startup_gc

LOCAL_RUNNER = "FnApiRunner"
VERBOSITIES = ("quiet", "normal", "verbose")

ConfigT = TypeVar("ConfigT")
PlanT = TypeVar("PlanT")


def add_console_flags(parser: argparse.ArgumentParser, *, wait: bool = False) -> None:
    """Adds ``--verbose`` / ``--quiet`` (and, for jobs that may only be submitted, ``--wait``)."""
    group = parser.add_argument_group("console")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--verbose", action="store_true", help="Show every log line (Beam, TensorFlow)."
    )
    exclusive.add_argument("--quiet", action="store_true", help="Show only errors.")
    if wait:
        group.add_argument(
            "--wait",
            action="store_true",
            help="Block until the job ends and print its summary (default: only on local runners).",
        )


def pop_console_flags(namespace: argparse.Namespace) -> tuple[str, bool]:
    """Removes the console flags from ``namespace``; returns ``(verbosity, wait)``."""
    verbosity = (
        "verbose"
        if getattr(namespace, "verbose", False)
        else "quiet"
        if getattr(namespace, "quiet", False)
        else "normal"
    )
    wait = bool(getattr(namespace, "wait", False))
    for name in ("verbose", "quiet", "wait"):
        if hasattr(namespace, name):
            delattr(namespace, name)
    return verbosity, wait


@dataclasses.dataclass(frozen=True)
class Parsed(Generic[ConfigT]):
    """A command line, parsed: the command's settings, Beam's flags and the console flags."""

    config: ConfigT
    beam_args: tuple[str, ...] = ()
    verbosity: str = "normal"
    wait: bool = False


@dataclasses.dataclass(frozen=True)
class Job:
    """What the run and report steps get besides the plan.

    Attributes:
        options: Beam's pipeline options (None for a command without a pipeline).
        verbosity: ``quiet``, ``normal`` or ``verbose``.
        wait: ``--wait`` was given.
        started: When the command started (epoch seconds).
    """

    options: PipelineOptions | None
    verbosity: str = "normal"
    wait: bool = False
    started: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.time() - self.started


class Command(abc.ABC, Generic[ConfigT, PlanT]):
    """A sub-command: parse -> plan -> (describe) -> build -> run -> report.

    Subclasses set :attr:`name` and implement :meth:`parse`, :meth:`plan`,
    :meth:`build` and :meth:`report`; :meth:`execute` (build the pipeline, run
    it and wait) is overridden by commands that run differently.
    """

    name: str = ""
    beam: bool = True  # whether the command runs a Beam pipeline (takes Beam's flags)

    @abc.abstractmethod
    def parse(self, argv: Sequence[str]) -> Parsed[ConfigT]:
        """Parses and validates the flags; raises ConfigError before anything is read."""

    @abc.abstractmethod
    def plan(self, config: ConfigT) -> PlanT:
        """Checks everything against the files and models; reads no data."""

    def describe(self, plan: PlanT) -> Iterable[str]:
        """Console lines saying what the command is about to do."""
        return ()

    def build(self, pipeline: beam.Pipeline, plan: PlanT, job: Job) -> None:
        """Adds the command's steps to ``pipeline``."""
        raise NotImplementedError(f"{type(self).__name__} builds no pipeline")

    def execute(self, plan: PlanT, job: Job) -> dict[str, Any] | None:
        """Builds the pipeline, runs it and waits for it; returns an early result or None."""
        pipeline = beam.Pipeline(options=job.options)
        self.build(pipeline, plan, job)
        pipeline.run().wait_until_finish()
        return None

    @abc.abstractmethod
    def report(self, plan: PlanT, job: Job, outcome: dict[str, Any] | None) -> dict[str, Any]:
        """Reads what the run wrote, prints the summary line and returns the result."""

    def run(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        """Runs the command's steps in order.

        Raises:
            ConfigError: for any configuration problem, before data is read.
        """
        started = time.time()
        parsed = self.parse(list(sys.argv[1:] if argv is None else argv))
        console.configure(parsed.verbosity)
        options = pipeline_options(parsed.beam_args) if self.beam else None
        plan = self.plan(parsed.config)
        for line in self.describe(plan):
            console.echo(line)
        job = Job(options, parsed.verbosity, parsed.wait, started)
        startup_gc.resume()  # the model and modules are loaded; the job's own objects come next
        return self.report(plan, job, self.execute(plan, job))

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point for ``python -m keras_batch_score.pipelines.<command>``."""
        from keras_batch_score.pipelines.cli import main as cli_main

        return cli_main([self.name, *(argv if argv is not None else sys.argv[1:])])


# --------------------------------------------------------------------------- runners


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the leftover flags; the local default runner is chosen explicitly.

    Without ``--runner`` (or with ``--runner=DirectRunner``) the job runs on
    Beam's FnApi runner, which is the batch engine DirectRunner picks anyway,
    without first trying to download and start the Prism runner.
    """
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "SwitchingDirectRunner"):
        standard.runner = LOCAL_RUNNER
    options.view_as(SetupOptions).save_main_session = False
    return options


def runner_name(options: PipelineOptions) -> str:
    """The runner's class name (``FnApiRunner`` when none is set)."""
    return (options.view_as(StandardOptions).runner or LOCAL_RUNNER).split(".")[-1]


def runs_locally(options: PipelineOptions) -> bool:
    """Whether the job's workers run on this machine (they can report progress to its disk)."""
    runner = runner_name(options)
    return runner in (LOCAL_RUNNER, "DirectRunner", "BundleBasedDirectRunner") or (
        runner == "PortableRunner" and options.view_as(PortableOptions).job_endpoint == "embed"
    )


def waits_for_job(options: PipelineOptions) -> bool:
    """Whether the launcher should block on the job: yes when the job lives in this process.

    Dataflow (a Flex Template launcher must not block), Flink with
    ``--flink_submit_uber_jar`` and remote portable job servers only submit; the
    job writes ``run_summary.json`` itself. Local runners, an embedded job server
    and Flink through a job server this process starts must be waited for.
    """
    runner = runner_name(options)
    if runner in (LOCAL_RUNNER, "DirectRunner", "BundleBasedDirectRunner"):
        return True
    if runner == "FlinkRunner":
        flink = options.view_as(FlinkRunnerOptions)
        return not flink.flink_submit_uber_jar or flink.flink_master in ("[local]", "[auto]")
    endpoint = options.view_as(PortableOptions).job_endpoint
    return runner == "PortableRunner" and endpoint in (None, "embed")


def echo_console_url(result: PipelineResult, options: PipelineOptions) -> None:
    """On Dataflow, prints the job's page in the Cloud console."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from keras_batch_score.pipelines import progress

    runner = (options.view_as(StandardOptions).runner or "").split(".")[-1]
    job_id = result.job_id() if hasattr(result, "job_id") else None
    if runner in ("DataflowRunner", "TestDataflowRunner") and job_id:
        cloud = options.view_as(GoogleCloudOptions)
        console.echo(f"Dataflow job: {progress.console_url(job_id, cloud.region, cloud.project)}")
