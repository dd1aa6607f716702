"""Progress: a line at once, a live bar on a terminal, plain lines when piped, multi_processing too.

The CLI runs as a subprocess, piped and under a pseudo-terminal (``pty.fork``).
Assertions are on what is printed, never on how long anything took.
"""

from __future__ import annotations

import os
import pty
import re
import select
import struct
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from tests import util

BIN = os.path.join(os.path.dirname(sys.executable), "batch-score")
ROWS = 3000


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BATCH_SCORE_VERBOSITY")
    }
    root = str(util.REPO)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    # SDK worker processes (multi_processing) start the `python` first on PATH.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    util.mlp(4, seed=2).save(root / "m.keras")
    table = util.feature_table(ROWS, 4)
    f0 = table.column("f0").to_numpy().copy()
    f0[:30] = np.nan  # 30 rows fail validation
    table = table.set_column(1, "f0", pa.array(f0))
    util.write_parquet(root / "in.parquet", table, row_group_size=250)
    return root


def _argv(job, out, *extra: str) -> list[str]:
    return [
        BIN,
        "score",
        "--model", str(job / "m.keras"),
        "--input", str(job / "in.parquet"),
        "--output", str(out),
        "--id-column", "id",
        "--batch-size", "100",
        "--progress-seconds", "0.1",
        *extra,
    ]  # fmt: skip


def _run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Runs ``argv`` with stdin, stdout and stderr on a pseudo-terminal; returns (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its standard streams are the terminal
        try:
            import fcntl
            import termios

            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


# --------------------------------------------------------------------------- end to end


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a POSIX pseudo-terminal")
def test_terminal_gets_a_live_progress_bar(job, tmp_path):
    code, out = _run_in_pty(
        _argv(job, tmp_path / "out"), _env(TERM="xterm-256color", COLUMNS="160")
    )
    assert code == 0, out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert plain.startswith("loading model m.keras (keras, 1 input) …")
    assert "\x1b[" in out, "no terminal control sequences: not a live display"
    assert "━" in plain, "no progress bar drawn"
    assert re.search(r"100%\s+3000/3000 rows [\d,]+ rows/s ETA [\d:]+ 30 failed", plain), plain
    assert "progress: " not in plain, "plain lines on a terminal"
    assert "done: 3,000 rows read, 2,970 scored, 30 failed" in plain


def test_piped_output_gets_plain_progress_lines_and_a_final_line(job, tmp_path):
    proc = subprocess.run(
        _argv(job, tmp_path / "out"), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "loading model m.keras (keras, 1 input) …"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert lines, proc.stderr
    for line in lines:
        assert re.fullmatch(
            r"progress: \d+% [\d,]+/3,000 rows, [\d,]+ failed \((-|[\d,]+) rows/s(, ETA [\d:]+)?\)",
            line,
        ), line
    assert re.fullmatch(r"progress: 100% 3,000/3,000 rows, 30 failed \([\d,]+ rows/s\)", lines[-1])
    assert "\x1b[" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_multi_processing_piped_gets_progress_lines(job, tmp_path):
    proc = subprocess.run(
        _argv(
            job,
            tmp_path / "out",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert lines and lines[-1].startswith("progress: 100% 3,000/3,000 rows, 30 failed")


@pytest.mark.slow
def test_workers_in_other_processes_report_every_row(job, tmp_path):
    """The channel itself under multi_processing: the launcher sees every scored and failed row."""
    from keras_batch_score.pipelines import score
    from keras_batch_score.pipelines.config import ScoreConfig
    from keras_batch_score.transforms.run.progress import read_channel

    channel = tmp_path / "channel"
    channel.mkdir()
    config = ScoreConfig(
        model=[str(job / "m.keras")],
        input=str(job / "in.parquet"),
        output=str(tmp_path / "out"),
        id_columns=["id"],
        batch_size=100,
    )
    plan = score.plan(config)
    options = score.pipeline_options(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    old_path = os.environ["PATH"]
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), old_path])
    try:
        pipeline = beam.Pipeline(options=options)
        score.build_pipeline(pipeline, plan, progress_dir=str(channel))
        pipeline.run().wait_until_finish()
    finally:
        os.environ["PATH"] = old_path
    assert read_channel(str(channel)) == {"scored": ROWS - 30, "failed": 30}
    assert len(list(channel.glob("*.json"))) >= 2, "expected one file per DoFn instance"


def test_quiet_shows_no_progress(job, tmp_path):
    proc = subprocess.run(
        _argv(job, tmp_path / "out", "--quiet"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


# --------------------------------------------------------------------------- pieces


def test_channel_sums_the_instances(tmp_path):
    from keras_batch_score.transforms.run.progress import ProgressChannel, read_channel

    a, b = ProgressChannel(str(tmp_path)), ProgressChannel(str(tmp_path))
    a.add(scored=10)
    a.add(scored=5, failed=2)
    b.add(failed=3)
    a.flush()
    b.flush()
    assert read_channel(str(tmp_path)) == {"scored": 15, "failed": 5}
    assert read_channel(str(tmp_path / "missing")) == {"scored": 0, "failed": 0}


def test_channel_without_a_directory_does_nothing():
    from keras_batch_score.transforms.run.progress import ProgressChannel

    channel = ProgressChannel(None)
    channel.add(scored=3)
    channel.flush()
    assert not channel.enabled


def test_total_comes_from_the_parquet_footers(tmp_path):
    from keras_batch_score.pipelines import progress

    sizes = (100, 250, 7)
    files = [
        util.write_parquet(tmp_path / f"{i}.parquet", util.feature_table(n, 2), row_group_size=40)
        for i, n in enumerate(sizes)
    ]
    assert progress.input_total(files, "parquet") == progress.Total(sum(sizes))


def test_tfrecord_total_is_estimated_from_file_sizes(tmp_path):
    import tensorflow as tf

    from keras_batch_score.pipelines import progress

    path = str(tmp_path / "in.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i in range(500):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[i, i]))}
                )
            )
            w.write(example.SerializeToString())
    total = progress.input_total([path], "tfrecord")
    assert total.estimated and total.rows == 500


def test_start_line_describes_the_model_without_loading_it(tmp_path):
    import keras

    from keras_batch_score.pipelines import progress

    inputs = [keras.Input((2,), name=n) for n in ("a", "b", "c")]
    out = keras.layers.Dense(1)(keras.layers.Concatenate()(inputs))
    keras.Model(inputs, out).save(tmp_path / "m.keras")
    line = progress.start_line("score", ["--model", str(tmp_path / "m.keras"), "--input", "x"])
    assert line == "loading model m.keras (keras, 3 inputs) …"
    named = progress.start_line("score", [f"--model=a={tmp_path / 'm.keras'}", "--model", "b.h5"])
    assert named == "loading model m.keras (keras, 3 inputs) and 1 more …"
    assert progress.start_line("score", ["--model", "m.keras", "--quiet"]) is None
    assert progress.start_line("score", ["--help"]) is None


def test_plain_line():
    from keras_batch_score.pipelines import progress

    total = progress.Total(3000)
    assert (
        progress.plain_line(1500, 3, total, 500.0)
        == "progress: 50% 1,500/3,000 rows, 3 failed (500 rows/s, ETA 0:00:03)"
    )
    assert (
        progress.plain_line(0, 0, total, None) == "progress: 0% 0/3,000 rows, 0 failed (- rows/s)"
    )
    assert (
        progress.plain_line(10, 0, progress.Total(None), 5.0)
        == "progress: 10 rows, 0 failed (5 rows/s)"
    )
    assert progress.plain_line(10, 0, progress.Total(20, estimated=True), None).startswith(
        "progress: 50% 10/~20 rows"
    )


def test_dataflow_console_url():
    from keras_batch_score.pipelines import progress

    assert (
        progress.console_url("2026-11-28_01_02_03-123", "europe-west1", "my-proj")
        == "https://console.cloud.google.com/dataflow/jobs/europe-west1/"
        "2026-11-28_01_02_03-123?project=my-proj"
    )


def test_dataflow_submission_prints_the_console_url(capsys, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_batch_score.pipelines import score

    class Submitted:
        def job_id(self) -> str:
            return "2026-11-28_j1"

    monkeypatch.setenv("KERAS_BATCH_SCORE_VERBOSITY", "normal")
    options = PipelineOptions(["--runner=DataflowRunner", "--region=us-east1", "--project=p1"])
    score.echo_console_url(Submitted(), options)
    assert capsys.readouterr().out == (
        "Dataflow job: https://console.cloud.google.com/dataflow/jobs/us-east1/2026-11-28_j1"
        "?project=p1\n"
    )
    score.echo_console_url(Submitted(), PipelineOptions([]))  # local: nothing
    assert capsys.readouterr().out == ""
