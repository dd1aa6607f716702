"""Drift during scoring: the mergeable CombineFn, drift.json / drift.html, --fail-on-drift."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import apache_beam as beam
import datasketches
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from scipy.stats import wasserstein_distance

from keras_batch_score.pipelines import cli, profile, score
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.drift import histograms, report_files
from keras_batch_score.transforms.drift import plan as drift_plan
from keras_batch_score.transforms.drift import report as drift_report
from keras_batch_score.transforms.drift import transforms as drift
from keras_batch_score.transforms.drift.sketches import KLL_K
from tests import browser, util

FEATURES = ["f0", "f1", "f2", "f3"]
N_REF = 4000
N_CUR = 2000
XSS = "<script>alert(1)</script>"
# The KLL sketch's bin-mass error bound (99% confidence) for the profile's sketch size.
PMF_ERROR = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, True)


def _table(n: int, seed: int, *, shift: dict[str, float] | None = None, new_cat: bool = False):
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {"id": pa.array(np.arange(n, dtype=np.int64))}
    for i, name in enumerate(FEATURES):
        values = rng.normal(loc=i, scale=1.0 + i, size=n)
        values = values + (shift or {}).get(name, 0.0) * (1.0 + i)  # shift in reference stds
        cols[name] = pa.array(values.astype(np.float32))
    cats = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
    if new_cat:
        cats[: n // 3] = "purple"
    cols["colour"] = pa.array(cats.tolist(), pa.string())
    return pa.table(cols)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    model = util.mlp(len(FEATURES), seed=3)
    model_path = str(root / "model.keras")
    model.save(model_path)
    ref = _table(N_REF, seed=1)
    ref_path = util.write_parquet(root / "ref" / "part-0.parquet", ref, row_group_size=900)
    # The profile covers every non-id column (4 numeric + 1 categorical) and the predictions.
    prof_path = str(root / "profile.json")
    features_profile = str(root / "features_profile.json")
    profile.run(["--input", ref_path, "--output", features_profile, "--id-column", "id", "--quiet"])
    profile.run(
        [
            "--input",
            ref_path,
            "--output",
            prof_path,
            "--id-column",
            "id",
            "--model",
            model_path,
            "--quiet",
        ]
    )
    # One profile with the features of the first and the predictions of the second.
    with open(features_profile) as f:
        merged = json.load(f)
    with open(prof_path) as f:
        merged["predictions"] = json.load(f)["predictions"]
    both = str(root / "both_profile.json")
    with open(both, "w") as f:
        json.dump(merged, f)
    return {"root": root, "model": model_path, "profile": both, "ref": ref}


def _score(env, table: pa.Table, name: str, *extra: str) -> tuple[dict, dict, str]:
    root = env["root"]
    path = util.write_parquet(root / name / "in.parquet", table, row_group_size=700)
    out = root / name / "out"
    summary = score.run(
        [
            "--model",
            env["model"],
            "--input",
            path,
            "--output",
            str(out),
            "--id-column",
            "id",
            "--feature-columns",
            ",".join(FEATURES),
            "--batch-size",
            "512",
            "--reference-profile",
            env["profile"],
            "--quiet",
            *extra,
        ]
    )
    with open(out / "drift.json") as f:
        report = json.load(f)
    with open(out / "drift.html") as f:
        page = f.read()
    return summary, report, page


def _same_histograms(col: dict) -> None:
    """Predictions of the same rows: the reference counts (from the profile's KLL sketch)
    are within the sketch's mass error of the exact current counts (plus a few values on a
    bin edge moving by one float32 ulp when the model runs on batches of another size)."""
    ref, cur = np.asarray(col["histogram"]["reference"]), np.asarray(col["histogram"]["current"])
    n = cur.sum()
    assert ref.sum() == n and np.abs(ref - cur).max() <= PMF_ERROR * n + 5, col["name"]
    assert col["metrics"]["psi"] < 0.01


def _by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["features"] + report["predictions"]}


def test_identical_data_gives_no_drift(env):
    summary, report, _ = _score(env, env["ref"], "same")
    assert report["status"] == "ok"
    assert report["drift_detected"] is False
    assert report["prediction_drift_detected"] is False
    assert report["dataset"]["drifted_features"] == []
    assert report["rows"] == {"reference": N_REF, "current": N_REF}
    cols = _by_name(report)
    assert set(cols) == {*FEATURES, "colour", "prediction"}
    for name in [*FEATURES, "colour"]:
        col = cols[name]
        ref, cur = (
            np.asarray(col["histogram"]["reference"]),
            np.asarray(col["histogram"]["current"]),
        )
        if name == "colour":  # category counts are exact
            assert cur.tolist() == ref.tolist()
            assert col["metrics"]["psi"] == 0.0 and col["metrics"]["js"] == 0.0
            assert col["metrics"]["p_value"] == pytest.approx(1.0)
        else:  # reference bin counts come from the profile's KLL sketch (its mass error)
            assert ref.sum() == cur.sum() and np.abs(ref - cur).max() <= PMF_ERROR * N_REF + 1
            assert col["metrics"]["psi"] < 0.01 and col["metrics"]["js"] < 0.05
            assert col["metrics"]["p_value"] > 0.5
    _same_histograms(cols["prediction"])
    # Current moments match numpy on the same data.
    f2 = env["ref"].column("f2").to_numpy().astype(np.float64)
    assert cols["f2"]["current"]["mean"] == pytest.approx(f2.mean(), rel=1e-5)
    assert cols["f2"]["current"]["std"] == pytest.approx(f2.std(), rel=1e-5)
    assert summary["drift"]["drift_detected"] is False
    # The predictions file keeps only the id column, the prediction and the model.
    preds = util.read_predictions(Path(env["root"]) / "same" / "out")
    assert preds.column_names == ["id", "prediction", "model"]


def test_shift_of_one_std_flags_exactly_that_feature(env):
    current = _table(N_CUR, seed=2, shift={"f2": 1.0})
    _, report, page = _score(env, current, "shift")
    flagged = [c["name"] for c in report["features"] if c["drift_detected"]]
    assert flagged == ["f2"]
    assert report["features"][0]["name"] == "f2"  # drifted features first
    assert report["drift_detected"] is False  # 1 of 5 features: share 0.2 <= 0.5
    f2 = _by_name(report)["f2"]
    assert f2["metrics"]["mean_shift"] == pytest.approx(1.0, abs=0.15)
    # Wasserstein on the bin centres (out-of-range slots halfway to the current extremes),
    # divided by the reference std, checked with scipy.
    e, hist = np.asarray(f2["histogram"]["edges"]), f2["histogram"]
    lo = min(f2["current"]["min"], e[0])
    hi = max(f2["current"]["max"], e[-1])
    centres = [(lo + e[0]) / 2, *((e[:-1] + e[1:]) / 2), (e[-1] + hi) / 2]
    expected = wasserstein_distance(centres, centres, hist["reference"], hist["current"])
    assert f2["metrics"]["wasserstein"] == pytest.approx(
        expected / f2["reference"]["std"], rel=1e-4
    )
    assert f2["metrics"]["wasserstein"] > 0.5
    assert "psi" in f2["drifted_by"]
    # The current histogram equals numpy's on the reference edges (plus out-of-range slots).
    values = current.column("f2").to_numpy().astype(np.float64)
    edges = np.asarray(f2["histogram"]["edges"])
    inner, _ = np.histogram(values, edges)
    expected = [int((values < edges[0]).sum()), *inner.tolist(), int((values > edges[-1]).sum())]
    assert f2["histogram"]["current"] == expected
    # The page lists f2 first and highlights it.
    assert page.index(">f2 <") < page.index(">f0 <")
    assert re.search(r'class="card drift" id="[\w-]+"><h3>f2 ', page)


def test_new_category_flags_the_categorical(env):
    current = _table(N_CUR, seed=4, new_cat=True)
    _, report, _ = _score(env, current, "newcat")
    flagged = [c["name"] for c in report["features"] if c["drift_detected"]]
    assert flagged == ["colour"]
    colour = _by_name(report)["colour"]
    # A third of the rows moved to the unseen category: the "other" slot.
    assert colour["histogram"]["values"] == ["red", "green", "blue"]
    assert colour["histogram"]["current"][-1] == N_CUR // 3
    assert colour["histogram"]["reference"][-1] == 0
    assert colour["metrics"]["linf"] == pytest.approx(N_CUR // 3 / N_CUR, abs=1e-6)
    assert "linf" in colour["drifted_by"]


def test_empty_current_data_gives_a_no_data_report(env):
    empty = _table(0, seed=5)
    summary, report, page = _score(env, empty, "empty")
    assert report["status"] == "no_data"
    assert report["drift_detected"] is False
    assert "no current data" in report["message"]
    assert report["rows"]["current"] == 0
    assert all(c["status"] == "no_data" for c in report["features"])
    assert all(v is None for c in report["features"] for v in c["metrics"].values())
    assert "No data" in page
    assert summary["rows_read"] == 0


def test_fail_on_drift_exits_3_after_writing_everything(env, tmp_path, capsys):
    current = _table(N_CUR, seed=6, shift={"f0": 2.0, "f1": 2.0, "f2": 2.0})
    path = util.write_parquet(tmp_path / "in.parquet", current)
    out = tmp_path / "out"
    argv = [
        "score",
        "--model",
        env["model"],
        "--input",
        path,
        "--output",
        str(out),
        "--id-column",
        "id",
        "--feature-columns",
        ",".join(FEATURES),
        "--reference-profile",
        env["profile"],
        "--quiet",
    ]
    assert cli.main([*argv, "--fail-on-drift"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("drift: dataset drift detected")
    with open(out / "drift.json") as f:
        report = json.load(f)
    assert report["drift_detected"] is True
    assert sorted(report["dataset"]["drifted_features"]) == ["f0", "f1", "f2"]
    assert util.read_summary(out)["rows_scored"] == N_CUR  # everything was written
    assert util.read_predictions(out).num_rows == N_CUR
    # Without the flag the same job succeeds.
    assert cli.main(argv) == 0


def test_bad_profile_fails_before_reading_data(env, tmp_path):
    path = util.write_parquet(tmp_path / "in.parquet", _table(10, seed=7))
    base = ["--model", env["model"], "--input", path, "--output", str(tmp_path / "o")]
    base += ["--id-column", "id", "--feature-columns", ",".join(FEATURES)]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "keras-batch-score/profile", "version": 99}')
    with pytest.raises(ConfigError, match="version 99 is not supported"):
        score.plan(score.parse_args([*base, "--reference-profile", str(bad)])[0])
    with pytest.raises(ConfigError, match="cannot be read"):
        score.plan(score.parse_args([*base, "--reference-profile", str(tmp_path / "nope")])[0])
    with pytest.raises(ConfigError, match="unknown metric 'bogus'"):
        score.parse_args(
            [*base, "--reference-profile", env["profile"], "--drift-threshold", "bogus=1"]
        )
    # A profile describing a column the input lacks.
    data = json.loads(Path(env["profile"]).read_text())
    data["features"]["missing_col"] = data["features"]["f0"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'missing_col', which is not in the input"):
        score.plan(score.parse_args([*base, "--reference-profile", str(other)])[0])
    assert not os.path.exists(tmp_path / "o")


def test_thresholds_per_feature_change_the_flags(env):
    current = _table(N_CUR, seed=2, shift={"f2": 1.0})
    _, report, _ = _score(
        env,
        current,
        "thresholds",
        "--drift-threshold",
        "f2:psi=off",
        "--drift-threshold",
        "f2:js=off",
        "--drift-threshold",
        "f2:wasserstein=5",
        "--drift-threshold",
        "f0:psi=0",
        "--drift-threshold",
        "f0:alpha=off",
    )
    flagged = {c["name"] for c in report["features"] if c["drift_detected"]}
    assert "f2" not in flagged
    assert "f0" in flagged  # any PSI > 0 exceeds a zero threshold (significance guard off)
    assert _by_name(report)["f2"]["thresholds"]["psi"] is None


# --------------------------------------------------------------------------- CombineFn


def _plan_for(profile_path: str, schema: pa.Schema) -> drift_plan.DriftPlan:
    return drift_plan.plan_drift(profile_path, schema, [])


def _features_only_profile(env, tmp_path) -> str:
    data = json.loads(Path(env["profile"]).read_text())
    data["predictions"] = {}
    path = tmp_path / "features.json"
    path.write_text(json.dumps(data))
    return str(path)


def _numpy_counts(tables: list[pa.Table], target: drift_plan.Target) -> np.ndarray:
    """Independent reference: np.histogram on the concatenated column plus out-of-range counts."""
    col = pa.concat_tables(tables).column(target.name)
    if target.kind == "numeric":
        values = col.to_numpy().astype(np.float64)
        edges = np.asarray(target.edges)
        inner, _ = np.histogram(values, edges)
        return np.array([(values < edges[0]).sum(), *inner, (values > edges[-1]).sum()])
    values = np.array(col.to_pylist(), dtype=object)
    counts = [(values == v).sum() for v in target.values]
    return np.array([*counts, len(values) - sum(counts)])


def test_combinefn_is_associative(env, tmp_path):
    current = _table(3000, seed=8, shift={"f1": 0.5}, new_cat=True)
    plan = _plan_for(_features_only_profile(env, tmp_path), current.schema)
    fn = drift.HistogramFn(plan.targets, histograms.reference_shifts(plan.profile))
    pieces = [current.slice(i, 250) for i in range(0, 3000, 250)]

    one_pass = fn.create_accumulator()
    for piece in pieces:
        one_pass = fn.add_input(one_pass, piece)

    def partial(batch_list):
        acc = fn.create_accumulator()
        for b in batch_list:
            acc = fn.add_input(acc, b)
        return acc

    groupings = [
        [pieces[:5], pieces[5:]],
        [pieces[:1], pieces[1:2], pieces[2:9], pieces[9:]],
        [[p] for p in reversed(pieces)],
    ]
    for grouping in groupings:
        merged = fn.merge_accumulators([partial(g) for g in grouping])
        nested = fn.merge_accumulators(
            [fn.merge_accumulators([partial(g)]) for g in grouping] + [fn.create_accumulator()]
        )
        for acc in (merged, nested):
            assert acc.rows == one_pass.rows == 3000
            for t in plan.targets:
                np.testing.assert_array_equal(acc.counts[t.name], one_pass.counts[t.name])
                np.testing.assert_allclose(acc.moments[t.name], one_pass.moments[t.name], rtol=1e-9)
    for t in plan.targets:
        np.testing.assert_array_equal(one_pass.counts[t.name], _numpy_counts(pieces, t))
    report = drift_report.build_report(fn.extract_output(one_pass), plan)
    f1 = _by_name(report)["f1"]
    values = current.column("f1").to_numpy().astype(np.float64)
    assert f1["current"]["mean"] == pytest.approx(values.mean(), rel=1e-5)  # 6 digits
    assert f1["current"]["std"] == pytest.approx(values.std(), rel=1e-5)


def test_compute_drift_on_two_worker_processes(env, tmp_path):
    current = _table(3000, seed=9, shift={"f3": 1.0})
    plan = _plan_for(_features_only_profile(env, tmp_path), current.schema)
    pieces = [current.slice(i, 300) for i in range(0, 3000, 300)]
    out = tmp_path / "mp"
    options = PipelineOptions(
        [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    with beam.Pipeline(options=options) as p:
        _ = p | beam.Create(pieces, reshuffle=True) | "Drift" >> drift.ComputeDrift(plan, str(out))
    report = json.loads((out / "drift.json").read_text())
    assert report["rows"]["current"] == 3000
    cols = _by_name(report)
    for t in plan.targets:
        assert cols[t.name]["histogram"]["current"] == _numpy_counts(pieces, t).tolist(), t.name
    assert [c["name"] for c in report["features"] if c["drift_detected"]] == ["f3"]


# --------------------------------------------------------------------------- HTML


class _StrictParser(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_parses_and_escapes_column_names(env, tmp_path):
    rng = np.random.default_rng(10)
    ref = pa.table(
        {
            XSS: pa.array(rng.normal(size=500)),
            "kind": pa.array(rng.choice(["a", "<b>&\"'"], size=500).tolist()),
        }
    )
    ref_path = util.write_parquet(tmp_path / "ref.parquet", ref)
    prof_path = str(tmp_path / "p.json")
    profile.run(["--input", ref_path, "--output", prof_path, "--quiet"])
    plan = drift_plan.plan_drift(prof_path, ref.schema, [])
    cur = pa.table({XSS: pa.array(rng.normal(2, 1, size=500)), "kind": ref.column("kind")})
    fn = drift.HistogramFn(plan.targets, histograms.reference_shifts(plan.profile))
    report = drift_report.build_report(fn.add_input(fn.create_accumulator(), cur), plan)
    paths = report_files.write_reports(report, str(tmp_path / "out"))
    page = Path(paths[1]).read_text()

    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    assert parser.tags.count("script") == 1  # the sort script; the column name never becomes a tag
    assert XSS not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;&amp;&quot;&#x27;" in page
    assert XSS in "".join(parser.text)  # ... but reads as the column name
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert report["features"][0]["name"] == XSS and report["features"][0]["drift_detected"]
    _screenshot(paths[1], "drift-report-escaping.png")


def _screenshot(html_path: str, name: str) -> Path:
    shot = browser.screenshot(html_path, name)
    image = browser.pixels(shot)
    # Something was drawn: the page is not one flat colour, and the drift highlight (red) shows.
    assert image.std() > 5
    red = (image[..., 0] > 150) & (image[..., 1] < 90) & (image[..., 2] < 90)
    assert red.sum() > 50
    return shot


def test_drift_html_renders_in_headless_chromium(env):
    current = _table(N_CUR, seed=2, shift={"f2": 1.0})
    _score(env, current, "render")
    shot = _screenshot(str(Path(env["root"]) / "render" / "out" / "drift.html"), "drift-report.png")
    assert shot.stat().st_size > 10_000


def test_numeric_slots_match_numpy_on_ties_and_out_of_range():
    rng = np.random.default_rng(11)
    values = np.round(rng.normal(size=2000) * 3, 1)  # many values sit exactly on edges
    for edges in (np.arange(-4.0, 4.5, 0.5), np.linspace(-5, 5, 60), np.array([1.0, 1.0])):
        got = histograms.numeric_slots(values, edges)
        if edges[0] == edges[-1]:
            expected = [(values < 1).sum(), (values == 1).sum(), (values > 1).sum()]
        else:
            inner, _ = np.histogram(values, edges)  # last bin closed, like ours
            expected = [(values < edges[0]).sum(), *inner, (values > edges[-1]).sum()]
        assert got.tolist() == list(expected)


def test_yaml_drift_settings(env, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        "reference_profile: " + env["profile"] + "\n"
        "fail_on_drift: true\n"
        "drift_share: 0.3\n"
        "drift_thresholds: {psi: 0.25, 'f1:js': 0.2, ks: off}\n"
    )
    base = ["--model", env["model"], "--input", "x", "--output", "y", "--config", str(cfg)]
    config = score.parse_args(base)[0]
    assert config.reference_profile == env["profile"] and config.fail_on_drift is True
    assert config.drift_share == 0.3
    assert config.drift_thresholds == ["psi=0.25", "f1:js=0.2", "ks=off"]
    cfg.write_text("drift_share: high\n")
    with pytest.raises(ConfigError, match=r"'drift_share' in .*expected a number"):
        score.parse_args(base)
    with pytest.raises(ConfigError, match="'fail_on_drift' needs 'reference_profile'"):
        score.parse_args([*base[:6], "--fail-on-drift"])


def test_vector_predictions_are_profiled_and_compared_per_class(tmp_path):
    table = util.feature_table(1200, 3, seed=12)
    path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=400)
    model = util.mlp(3, outputs=3, seed=13)  # softmax over 3 classes
    model_path = str(tmp_path / "m.keras")
    model.save(model_path)
    prof_path = str(tmp_path / "p.json")
    doc = profile.run(
        [
            "--input",
            path,
            "--output",
            prof_path,
            "--id-column",
            "id",
            "--model",
            model_path,
            "--quiet",
        ]
    )
    probs = util.keras_reference(model, util.stacked(table, ["f0", "f1", "f2"])).astype(np.float64)
    assert sorted(doc["predictions"]) == ["prediction[0]", "prediction[1]", "prediction[2]"]
    for j in range(3):
        assert doc["predictions"][f"prediction[{j}]"]["mean"] == pytest.approx(
            probs[:, j].mean(), rel=1e-5
        )
    out = tmp_path / "out"
    score.run(
        [
            "--model",
            model_path,
            "--input",
            path,
            "--output",
            str(out),
            "--id-column",
            "id",
            "--reference-profile",
            prof_path,
            "--quiet",
        ]
    )
    report = json.loads((out / "drift.json").read_text())
    preds = _by_name(report)
    for j in range(3):
        col = preds[f"prediction[{j}]"]
        assert col["drift_detected"] is False
        _same_histograms(col)
