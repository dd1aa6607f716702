"""Output ownership: a run touches only what it wrote, and a failed run changes nothing published."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keras_batch_score.pipelines import cli, score
from keras_batch_score.transforms.core.errors import ReconciliationError
from tests import util
from tests.deploy_support import BUCKET

FEATURES = ["f0", "f1", "f2", "f3"]
N_ROWS = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ownership")
    model = util.mlp(len(FEATURES), seed=4)
    model_path = str(root / "model.keras")
    model.save(model_path)
    table = util.feature_table(N_ROWS, len(FEATURES), seed=2)
    data = util.write_parquet(root / "in" / "part-0.parquet", table, row_group_size=100)
    profile_path = str(root / "profile.json")
    argv = ["profile", "--input", data, "--output", profile_path, "--id-column", "id"]
    assert cli.main([*argv, "--model", model_path, "--quiet"]) == 0
    return {"root": root, "model": model, "model_path": model_path, "table": table, "data": data,
            "profile": profile_path}  # fmt: skip


def _score(env, out, *extra: str, data: str | None = None) -> list[str]:
    return [
        "score",
        "--model",
        env["model_path"],
        "--input",
        data or env["data"],
        "--output",
        str(out),
        "--id-column",
        "id",
        "--batch-size",
        "128",
        "--quiet",
        *extra,
    ]


def _run(capsys, argv: list[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _snapshot(directory) -> dict[str, bytes]:
    """Every published file (staging leftovers excluded) with its bytes."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


def _manifest(out) -> dict:
    with open(os.path.join(str(out), "_manifest.json")) as f:
        return json.load(f)


def _published_predictions(out) -> pa.Table:
    names = [e["name"] for e in _manifest(out)["files"] if e["name"].startswith("predictions-")]
    return pa.concat_tables(pq.read_table(os.path.join(str(out), n)) for n in names).sort_by("id")


def _assert_one_error_line(err: list[str], *needles: str) -> None:
    assert err and err[0].startswith("error: "), err
    assert not any("Traceback" in line for line in err), err
    assert len([line for line in err if line.startswith("error:")]) == 1, err
    for needle in needles:
        assert needle in err[0], err


def test_manifest_lists_exactly_the_published_files(env, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(capsys, _score(env, out, "--reference-profile", env["profile"]))
    assert code == 0, err
    manifest = _manifest(out)
    on_disk = {n: os.path.getsize(out / n) for n in os.listdir(out) if n != "_manifest.json"}
    assert {e["name"]: e["size"] for e in manifest["files"]} == on_disk
    assert {"run_summary.json", "drift.json", "drift.html"} <= set(on_disk)
    assert manifest["run_id"] == util.read_summary(out)["run_id"]
    expected = util.keras_reference(env["model"], util.stacked(env["table"], FEATURES))[:, 0]
    got = _published_predictions(out)
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)


def test_rerun_keeps_a_user_file_named_like_predictions(env, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, _score(env, out))[0] == 0
    user = out / "predictions-important.parquet"
    user.write_bytes(b"the user's own file")
    code, err = _run(capsys, _score(env, out))
    assert code == 2
    _assert_one_error_line(err, "predictions-important.parquet", "--overwrite")
    assert user.read_bytes() == b"the user's own file"
    code, err = _run(capsys, _score(env, out, "--overwrite"))
    assert code == 0, err
    assert user.read_bytes() == b"the user's own file"
    assert "predictions-important.parquet" not in {e["name"] for e in _manifest(out)["files"]}
    assert _published_predictions(out).num_rows == N_ROWS


def test_rerun_without_a_profile_removes_the_stale_drift_report(env, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, _score(env, out, "--reference-profile", env["profile"]))[0] == 0
    assert (out / "drift.json").exists() and (out / "drift.html").exists()
    assert _run(capsys, _score(env, out))[0] == 0
    assert not (out / "drift.json").exists() and not (out / "drift.html").exists()
    assert sorted(os.listdir(out)) == sorted(
        ["_manifest.json", *(e["name"] for e in _manifest(out)["files"])]
    )


def _fail_reconcile(counts):
    raise ReconciliationError("forced: rows do not add up; outputs were not published")


def _fail_summary_write(path, payload):
    raise OSError(errno.ENOSPC, "No space left on device", path)


@pytest.mark.parametrize("failure", ["reconcile", "summary_write", "mid_publish"])
def test_failed_run_changes_nothing_published(env, tmp_path, capsys, monkeypatch, failure):
    out = tmp_path / "out"
    first = _score(env, out, "--reference-profile", env["profile"], "--num-shards", "2")
    assert _run(capsys, first)[0] == 0
    before = _snapshot(out)
    assert {"drift.json", "drift.html", "run_summary.json"} <= set(before)
    if failure == "reconcile":
        monkeypatch.setattr("keras_batch_score.transforms.run.finalize.reconcile", _fail_reconcile)
    elif failure == "summary_write":
        monkeypatch.setattr(
            "keras_batch_score.transforms.run.finalize.write_json", _fail_summary_write
        )
    else:  # a rename fails after the old files were moved away and some new ones moved in
        from keras_batch_score.transforms.run import publish

        real, failed = publish.move_file, []

        def flaky(source: str, target: str) -> None:
            if target.endswith("run_summary.json") and "_staging-" not in target and not failed:
                failed.append(target)  # once: moving the old summary back must work
                raise OSError(errno.EIO, "Input/output error", target)
            real(source, target)

        monkeypatch.setattr("keras_batch_score.transforms.run.publish.move_file", flaky)
    # The failed run has one shard, no drift report: anything published would show.
    code, err = _run(capsys, _score(env, out, "--num-shards", "1"))
    assert code == 1
    _assert_one_error_line(err)
    if failure == "summary_write":
        assert "No space left on device" in err[0]
    if failure == "mid_publish":
        assert failed and "previous outputs were restored" in err[0]
    assert _snapshot(out) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (a disk that fills up); skipped where mounting is not allowed."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    args = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)]
    if subprocess.run(args, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_during_the_job_is_one_error_line(env, tmp_path, capsys, small_disk):
    out = small_disk / "out"
    assert _run(capsys, _score(env, out))[0] == 0
    before = _snapshot(out)
    big = util.write_parquet(
        tmp_path / "big" / "in.parquet", util.feature_table(100_000, len(FEATURES), seed=3)
    )
    code, err = _run(capsys, _score(env, out, "--batch-size", "8192", data=big))
    assert code == 1
    _assert_one_error_line(err, "No space left on device")
    assert _snapshot(out) == before
    assert not [n for n in os.listdir(out) if n.startswith("_staging-")]  # the disk is freed


def test_foreign_file_refused_without_overwrite_and_kept_with_it(env, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    code, err = _run(capsys, _score(env, out))
    assert code == 2
    _assert_one_error_line(err, "notes.txt", "--overwrite")
    assert sorted(os.listdir(out)) == ["notes.txt", "sub"]
    for _ in range(2):
        code, err = _run(capsys, _score(env, out, "--overwrite"))
        assert code == 0, err
        assert (out / "notes.txt").read_text() == "mine" and (out / "sub").is_dir()
    assert _published_predictions(out).num_rows == N_ROWS


def test_overwrite_refuses_a_foreign_file_with_an_output_name(env, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_summary.json").write_text("{}")
    code, err = _run(capsys, _score(env, out, "--overwrite"))
    assert code == 2
    _assert_one_error_line(err, "run_summary.json")
    assert (out / "run_summary.json").read_text() == "{}"


def test_output_inside_the_input_is_refused(env, tmp_path, capsys):
    data_dir = tmp_path / "data"
    util.write_parquet(data_dir / "part-0.parquet", env["table"])
    glob = str(data_dir / "*.parquet")
    for source, output in [
        (str(data_dir), data_dir),
        (str(data_dir), data_dir / "scores"),
        (glob, tmp_path / "data" / "." / "x" / ".."),
        (str(data_dir / "**"), data_dir / "scores"),  # the glob would read the outputs back
        (str(data_dir / "*" / "*.parquet"), data_dir / "scores"),
    ]:
        code, err = _run(capsys, _score(env, output, data=source))
        assert code == 2, (source, output)
        _assert_one_error_line(err, "input")
    assert sorted(os.listdir(data_dir)) == ["part-0.parquet"]
    # A glob that cannot match what the run writes may have its output below its directory.
    code, err = _run(capsys, _score(env, data_dir / "scores", data=glob))
    assert code == 0, err
    assert _published_predictions(data_dir / "scores").num_rows == N_ROWS


def test_output_that_is_a_file_or_below_a_file_is_refused(env, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for output in (a_file, a_file / "out"):
        code, err = _run(capsys, _score(env, output))
        assert code == 2, output
        _assert_one_error_line(err, str(a_file))
    assert a_file.read_text() == "x"


def _unwritable_dir() -> str:
    """A directory even root cannot create files in (sysfs refuses new entries)."""
    probe = f"/sys/kbs-probe-{uuid.uuid4().hex[:8]}"
    try:
        open(probe, "wb").close()
    except OSError:
        return f"/sys/kbs-out-{uuid.uuid4().hex[:8]}"
    os.remove(probe)
    pytest.skip("no read-only location on this machine")


def test_unwritable_output_fails_before_reading_data(env, capsys, monkeypatch):
    monkeypatch.setattr(score, "read_input", _no_data_read)
    code, err = _run(capsys, _score(env, _unwritable_dir()))
    assert code == 2
    _assert_one_error_line(err, "not writable")


def _no_data_read(*_args, **_kwargs):
    raise AssertionError("data was read before the output was checked")


@pytest.mark.parametrize("column", ["prediction", "model"])
def test_id_column_with_an_output_column_name_is_refused(env, tmp_path, capsys, column):
    table = env["table"].append_column(column, pa.array(np.arange(N_ROWS)))
    data = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out"
    code, err = _run(capsys, [*_score(env, out, data=data), "--id-column", column])
    assert code == 2
    _assert_one_error_line(err, repr(column))
    assert not out.exists()


# --------------------------------------------------------------------------- calibrate, profile


@pytest.fixture(scope="module")
def labelled(env):
    table = env["table"]
    rng = np.random.default_rng(5)
    table = table.append_column("y", pa.array(rng.integers(0, 2, size=N_ROWS)))
    return util.write_parquet(env["root"] / "labelled" / "l.parquet", table)


def _calibrate(env, labelled, output: str) -> list[str]:
    return [
        "calibrate",
        "--model",
        env["model_path"],
        "--input",
        labelled,
        "--label-column",
        "y",
        "--id-column",
        "id",
        "--output",
        output,
        "--quiet",
    ]


def test_calibrate_output_directory_or_json(env, labelled, tmp_path, capsys):
    names = ["calibration.json", "calibration.reliability.html"]
    new_dir = str(tmp_path / "calib") + "/"
    assert _run(capsys, _calibrate(env, labelled, new_dir))[0] == 0
    assert sorted(os.listdir(tmp_path / "calib")) == names
    existing = tmp_path / "existing"
    existing.mkdir()
    assert _run(capsys, _calibrate(env, labelled, str(existing)))[0] == 0
    assert sorted(os.listdir(existing)) == names
    as_json = tmp_path / "j" / "c.json"
    assert _run(capsys, _calibrate(env, labelled, str(as_json)))[0] == 0
    assert sorted(os.listdir(tmp_path / "j")) == ["c.json", "c.reliability.html"]
    assert json.loads(as_json.read_text())["method"] == "temperature"


def test_calibrate_and_profile_check_the_output_before_reading(
    env, labelled, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(score, "read_input", _no_data_read)
    monkeypatch.setattr("keras_batch_score.transforms.io.read.ReadInput.expand", _no_data_read)
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    a_dir = tmp_path / "dir.json"
    a_dir.mkdir()
    for output in (str(a_file), str(a_file / "c.json"), str(a_dir), _unwritable_dir()):
        code, err = _run(capsys, _calibrate(env, labelled, output))
        assert code == 2, output
        _assert_one_error_line(err, "--output")
        code, err = _run(capsys, ["profile", "--input", env["data"], "--output", output])
        assert code == 2, output
        _assert_one_error_line(err, "--output")
    assert a_file.read_text() == "x" and os.listdir(a_dir) == []


def test_profile_output_directory_or_json(env, tmp_path, capsys):
    base = ["profile", "--input", env["data"], "--id-column", "id", "--quiet", "--output"]
    assert _run(capsys, [*base, str(tmp_path / "p") + "/"])[0] == 0
    assert os.listdir(tmp_path / "p") == ["profile.json"]
    (tmp_path / "q").mkdir()
    assert _run(capsys, [*base, str(tmp_path / "q")])[0] == 0
    assert os.listdir(tmp_path / "q") == ["profile.json"]
    assert _run(capsys, [*base, str(tmp_path / "r.json")])[0] == 0
    profile = json.loads((tmp_path / "r.json").read_text())
    assert profile["rows"] == N_ROWS
    assert sorted(profile["features"]) == FEATURES


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("score", ["--overwrite", "never deleted"]),
        ("calibrate", ["directory", ".json"]),
        ("profile", ["directory", ".json"]),
    ],
)
def test_help_explains_the_output(command, needles, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in needles:
        assert needle in text, needle


# --------------------------------------------------------------------------- gs://


def test_ownership_on_gcs(env, capsys, request):
    """The same rules through Beam FileSystems on an emulated bucket (listing, probe, renames)."""
    client = request.getfixturevalue("gcs")
    out = f"gs://{BUCKET}/ownership/out"
    first = _score(env, out, "--reference-profile", env["profile"])
    assert _run(capsys, first)[0] == 0
    client.bucket(BUCKET).blob("ownership/out/sub/notes.txt").upload_from_string(b"mine")
    code, err = _run(capsys, _score(env, out))
    assert code == 2
    _assert_one_error_line(err, "sub", "--overwrite")
    code, err = _run(capsys, _score(env, out, "--overwrite"))
    assert code == 0, err
    names = sorted(
        b.name[len("ownership/out/") :] for b in client.list_blobs(BUCKET, prefix="ownership/out/")
    )
    manifest = json.loads(
        client.bucket(BUCKET).blob("ownership/out/_manifest.json").download_as_bytes()
    )
    listed = sorted(e["name"] for e in manifest["files"])
    assert names == sorted(["_manifest.json", "sub/notes.txt", *listed])
    assert "drift.json" not in listed and "run_summary.json" in listed
