"""The sketch-based profile (KLL, one pass) and the drift accumulator, against numpy.

The profile's edges and bin counts come from a KLL sketch, so they are
checked against the exact numpy figures within the sketch's documented error
(:data:`keras_batch_score.transforms.drift.sketches.KLL_K`); the drift accumulator's counts are exact
and must equal a straightforward numpy computation.
"""

from __future__ import annotations

import json
import pickle
from decimal import Decimal

import datasketches
import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import profile
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.drift import histograms
from keras_batch_score.transforms.drift import plan as drift_plan
from keras_batch_score.transforms.drift.profile_build import Candidate
from keras_batch_score.transforms.drift.profile_format import KindRule
from keras_batch_score.transforms.drift.profiling import SketchFn
from keras_batch_score.transforms.drift.sketches import (
    KLL_K,
    ColumnSketch,
    add_numeric,
    largest_remainder,
    numeric_stats,
)
from tests import util

RANK_ERROR = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
PMF_ERROR = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, True)
N = 6000


def _data(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    g = rng.gamma(2.0, 3.0, size=n)  # float64, skewed, with nulls and NaN
    g[rng.random(n) < 0.02] = np.nan
    return pa.table(
        {
            "id": pa.array(np.arange(n)),
            "g": pa.array(g, mask=rng.random(n) < 0.05),
            "u32": pa.array(rng.normal(5.0, 2.0, size=n).astype(np.float32)),
            "ties": pa.array(rng.integers(0, 50, size=n)),  # 50 distinct ints: numeric
        }
    )


def _finite(table: pa.Table, name: str) -> np.ndarray:
    raw = np.asarray(table.column(name).to_pylist(), dtype=object)
    values = np.array([np.nan if v is None else float(v) for v in raw])
    return values[np.isfinite(values)]


def _edge_rank_errors(values: np.ndarray, edges) -> np.ndarray:
    """How far (in normalized rank) each interior edge is from its target quantile
    i/k; an edge on a run of ties covers every rank of the run."""
    xs = np.sort(values)
    inner = np.asarray(edges[1:-1])
    lo = np.searchsorted(xs, inner, "left") / xs.size
    hi = np.searchsorted(xs, inner, "right") / xs.size
    target = np.arange(1, len(edges) - 1) / (len(edges) - 1)
    return np.maximum(0.0, np.maximum(lo - target, target - hi))


def _check_against_numpy(stats: dict, values: np.ndarray) -> None:
    """(b): edges within the KLL rank error, counts exact in sum and near numpy's."""
    edges = np.asarray(stats["edges"])
    assert edges[0] == values.min() and edges[-1] == values.max()
    assert np.all(np.diff(edges) > 0)
    assert _edge_rank_errors(values, edges).max() <= RANK_ERROR
    assert sum(stats["counts"]) == values.size == stats["count"]
    exact, _ = np.histogram(values, edges)  # last bin closed, like the profile
    assert np.abs(np.asarray(stats["counts"]) - exact).max() <= PMF_ERROR * values.size + 1
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(values.std(), rel=1e-9)


@pytest.fixture(scope="module")
def two_ways(tmp_path_factory):
    """The same files profiled in memory and on two worker processes."""
    root = tmp_path_factory.mktemp("sketch")
    table = _data()
    util.write_parquet(root / "in" / "a.parquet", table.slice(0, 3500), row_group_size=500)
    util.write_parquet(root / "in" / "b.parquet", table.slice(3500), row_group_size=500)
    docs = {}
    for mode, flags in {
        "in_memory": ["--direct_running_mode=in_memory"],
        "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    }.items():
        out = root / f"{mode}.json"
        docs[mode] = profile.run(
            [
                *("--input", str(root / "in"), "--output", str(out), "--id-column", "id"),
                *("--quiet", "--batch-size", "700", *flags),
            ]
        )
        assert json.loads(out.read_text()) == docs[mode]
    return table, docs


def test_profile_edges_and_counts_agree_with_numpy(two_ways):
    table, docs = two_ways
    for doc in docs.values():
        assert doc["rows"] == N
        for name in ("g", "u32", "ties"):
            stats = doc["features"][name]
            assert stats["kind"] == "numeric"
            values = _finite(table, name)
            assert stats["null_count"] == N - values.size
            _check_against_numpy(stats, values)
    # float32 values are sketched losslessly: every edge is one of the values.
    u32 = _finite(table, "u32")
    assert set(docs["in_memory"]["features"]["u32"]["edges"]) <= set(u32.tolist())


def test_profile_is_the_same_in_memory_and_on_two_workers(two_ways):
    table, docs = two_ways
    a, b = docs["in_memory"], docs["multi_processing"]
    assert a["rows"] == b["rows"]
    for name in ("g", "u32", "ties"):
        sa, sb = a["features"][name], b["features"][name]
        for key in ("count", "null_count", "min", "max"):
            assert sa[key] == sb[key], (name, key)
        for key in ("mean", "std"):
            assert sa[key] == pytest.approx(sb[key], rel=1e-9), (name, key)
        # The sketches merge in another order: the edges agree within the rank error
        # (the rank ranges they cover, a run of ties for "ties", are that close).
        values = np.sort(_finite(table, name))
        lo_a, hi_a = (np.searchsorted(values, sa["edges"][1:-1], s) for s in ("left", "right"))
        lo_b, hi_b = (np.searchsorted(values, sb["edges"][1:-1], s) for s in ("left", "right"))
        gap = np.maximum(0, np.maximum(lo_a - hi_b, lo_b - hi_a)) / values.size
        assert gap.max() <= 2 * RANK_ERROR, name
        assert sum(sa["counts"]) == sum(sb["counts"]) == sa["count"]


def test_small_columns_are_exact():
    """Below the sketch's first compaction (about k values) nothing is approximate."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=160)
    sketch = ColumnSketch(values=None)
    for part in np.array_split(values, 3):
        add_numeric(sketch, part, KLL_K, None)
    stats = numeric_stats(sketch, 10)
    exact, _ = np.histogram(values, np.asarray(stats.edges))
    assert list(stats.counts) == exact.tolist() == [16] * 10
    # Edge i is the value with exactly i tenths of the values below it.
    below = [int(np.sum(values < e)) for e in stats.edges[1:-1]]
    assert below == [16 * i for i in range(1, 10)]


def test_constant_and_heavily_tied_columns():
    sketch = ColumnSketch(values=None)
    add_numeric(sketch, np.full(5000, 2.5), KLL_K, None)
    stats = numeric_stats(sketch, 10)
    assert stats.edges == (2.5, 2.5) and stats.counts == (5000,)
    # Three values only: the quantile edges collapse to them, the counts stay within the
    # mass error of the exact ones (the last bin is closed: it holds the 1s and the 2s).
    values = np.random.default_rng(5).permutation(np.repeat([0.0, 1.0, 2.0], [3000, 5000, 2000]))
    sketch = ColumnSketch(values=None)
    for part in np.array_split(values, 7):
        add_numeric(sketch, part, KLL_K, None)
    stats = numeric_stats(sketch, 10)
    assert stats.edges == (0.0, 1.0, 2.0)
    assert sum(stats.counts) == 10_000
    assert abs(stats.counts[0] - 3000) <= PMF_ERROR * 10_000 + 1


def test_largest_remainder_sums_exactly():
    assert largest_remainder([0.5, 0.5], 3).tolist() == [2, 1]  # tie: lower index first
    assert largest_remainder([0.2, 0.3, 0.5], 7).tolist() == [1, 2, 4]  # 1.4, 2.1, 3.5
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = rng.dirichlet(np.ones(rng.integers(1, 30)))
        n = int(rng.integers(0, 10**7))
        counts = largest_remainder(p, n)
        assert counts.sum() == n and np.all(counts >= 0)
        assert np.abs(counts - p * n).max() < 1.0 + 1e-6


def test_accumulator_pickles_compactly_and_merges():
    table = _data(20_000, seed=3)
    cands = [
        Candidate("g", "feature", "g", None, "numeric"),
        Candidate("u32", "feature", "u32", None, "numeric"),
        Candidate("ties", "feature", "ties", None, "integer"),
    ]
    fn = SketchFn(cands, KindRule(), 3, ())
    accs = []
    for start in range(0, table.num_rows, 5000):
        acc = fn.create_accumulator()
        for i in range(start, start + 5000, 1000):
            acc = fn.add_input(acc, table.slice(i, 1000))
        accs.append(pickle.loads(pickle.dumps(acc)))
    merged = fn.merge_accumulators([fn.merge_accumulators(accs[:2]), *accs[2:]])
    # Three columns of 20,000 values (480 KB as float64): the sketches' bytes, not the values.
    assert len(pickle.dumps(merged)) < 3 * 20 * KLL_K * 8
    assert merged.rows == 20_000
    assert merged.columns["ties"].values is None  # 50 distinct > 20: numeric
    for name in ("g", "u32"):
        values = _finite(table, name)
        sketch = merged.columns[name]
        assert sketch.kll.n == sketch.n == values.size
        assert sketch.mean == pytest.approx(values.mean(), rel=1e-12)
        stats = numeric_stats(sketch, 10)
        assert _edge_rank_errors(values, stats.edges).max() <= RANK_ERROR
    # Merging leaves its inputs untouched.
    assert accs[0].columns["g"].kll.n < 6000


def test_demo_shift_flags_exactly_the_shifted_features(tmp_path):
    """(c): the demo's "next month" slice (the ten worst_* features + 1 training std)
    against the sketched profile of the training split flags those ten and no others."""
    from examples import demo
    from keras_batch_score.pipelines import score

    paths = demo.prepare(tmp_path)
    _, _, names = demo.load_dataset()
    columns = ["--id-column", "id", "--feature-columns", ",".join(names), "--quiet"]
    profile_path = str(tmp_path / "profile.json")
    doc = profile.run(
        [
            *("--input", str(paths["train"]), "--output", profile_path),
            *("--model", str(paths["model"]), *columns),
        ]
    )
    assert set(doc["features"]) == set(names) and "prediction" in doc["predictions"]
    out = tmp_path / "scores_shifted"
    score.run(
        [
            *("--model", str(paths["model"]), "--input", str(paths["shifted"])),
            *("--output", str(out), "--reference-profile", profile_path),
            *("--batch-size", "64", *columns),
        ]
    )
    report = json.loads((out / "drift.json").read_text())
    assert sorted(report["dataset"]["drifted_features"]) == sorted(
        n for n in names if n.startswith("worst_")
    )


# --------------------------------------------------------------------------- drift accumulate


def _reference_slots(values: np.ndarray, edges) -> list[int]:
    """Straightforward numpy: NaN dropped, then below / numpy's bins / above."""
    v = values[~np.isnan(values)]
    e = np.asarray(edges, dtype=np.float64)
    inner = [int(np.sum((v >= e[i]) & (v < e[i + 1]))) for i in range(len(e) - 2)]
    inner.append(int(np.sum((v >= e[-2]) & (v <= e[-1]))))
    return [int(np.sum(v < e[0])), *inner, int(np.sum(v > e[-1]))]


def _reference_moments(values: np.ndarray, shift: float) -> list[float]:
    finite = values[np.isfinite(values)]
    d = finite - shift
    return [
        float(np.isnan(values).sum()),
        float(finite.size),
        float(d.sum()),
        float((d * d).sum()),
        float(finite.min()) if finite.size else np.inf,
        float(finite.max()) if finite.size else -np.inf,
    ]


def _as_float64(column: pa.ChunkedArray) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in column.to_pylist()])


@pytest.mark.parametrize("one_call", [True, False], ids=["edges-in-one-call", "edge-by-edge"])
def test_accumulate_equals_a_straightforward_numpy_reference(monkeypatch, one_call):
    if not one_call:  # the path of batches too big to compare with every edge at once
        monkeypatch.setattr(histograms, "_ONE_CALL_CELLS", 0)
    rng = np.random.default_rng(4)
    n = 5000
    # Edges that float32 cannot represent, and float32 values right at and around them.
    edges = tuple(float(e) for e in np.linspace(-2.0, 2.0, 11) + 0.1)
    near = np.array(edges, dtype=np.float32)
    around = np.concatenate(
        [near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf))]
    )
    f32 = rng.normal(scale=1.5, size=n).astype(np.float32)  # some beyond the edges
    f32[: around.size] = around
    f32[rng.random(n) < 0.02] = np.nan
    f32[[10, 20]] = [np.inf, -np.inf]
    f64 = rng.normal(size=n) * 3
    f64[: len(edges)] = edges  # exactly on the edges, last edge included
    ints = rng.integers(-5, 5, size=n)
    words = rng.choice(["a", "b", "c", "zz"], size=n).astype(object)  # "zz" unseen
    words[rng.random(n) < 0.05] = None
    many = tuple(float(e) for e in np.linspace(-3, 3, 60))  # > 32 edges: the other path
    table = pa.table(
        {
            "f32": pa.array(f32, mask=rng.random(n) < 0.05),
            "f64": pa.array(f64, mask=rng.random(n) < 0.03),
            "ints": pa.array(ints, mask=rng.random(n) < 0.04),
            "dec": pa.array(
                [None if i % 97 == 0 else Decimal(f"{x:.2f}") for i, x in enumerate(f64.tolist())],
                pa.decimal128(10, 2),
            ),
            "word": pa.array(words.tolist(), pa.string()),
        }
    )
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=1700))  # several chunks
    probs = rng.random((n, 3)).astype(np.float32)
    probs[5, 1] = np.nan
    batch = ScoringBatch(chunked, {}, {"out": probs})
    T = drift_plan.Target
    targets = [
        T("f32", "feature", "f32", None, "numeric", edges=edges),
        T("f32_many", "feature", "f32", None, "numeric", edges=many),
        T("f64", "feature", "f64", None, "numeric", edges=edges),
        T("f64_many", "feature", "f64", None, "numeric", edges=many),
        T("ints", "feature", "ints", None, "numeric", edges=(-2.0, 0.0, 0.0, 3.0)),
        T("const", "feature", "ints", None, "numeric", edges=(1.0, 1.0)),
        T("dec", "feature", "dec", None, "numeric", edges=edges),
        T("word", "feature", "word", None, "categorical", values=("b", "a", "c", "d")),
        T("p1", "prediction", "out", 1, "numeric", edges=(0.0, 0.25, 0.5, 0.75, 1.0)),
        T("absent", "prediction", "other", None, "numeric", edges=(0.0, 1.0)),
    ]
    shifts = {"f32": 0.3, "f64": -1.0, "p1": 0.5}
    acc = histograms.accumulate(batch, targets, shifts)
    assert acc.rows == n and "absent" not in acc.counts
    columns = {
        "f32": _as_float64(table.column("f32")),
        "f64": _as_float64(table.column("f64")),
        "ints": _as_float64(table.column("ints")),
        "dec": _as_float64(table.column("dec")),
        "out": probs[:, 1].astype(np.float64),
    }
    for t in targets:
        if t.kind != "numeric" or t.name == "absent":
            continue
        values = columns[t.column]
        assert acc.counts[t.name].tolist() == _reference_slots(values, t.edges), t.name
        np.testing.assert_allclose(
            acc.moments[t.name], _reference_moments(values, shifts.get(t.name, 0.0)), rtol=1e-9
        )
    # Categorical: top values in profile order, then other (unseen included); nulls apart.
    seen = [w for w in words.tolist() if w is not None]
    expected = [seen.count(v) for v in ("b", "a", "c", "d")]
    assert acc.counts["word"].tolist() == [*expected, len(seen) - sum(expected)]
    assert acc.moments["word"][:2].tolist() == [n - len(seen), len(seen)]
    # The public helper agrees too (it drops NaN like the accumulator).
    assert histograms.numeric_slots(columns["f32"], edges).tolist() == _reference_slots(
        columns["f32"], edges
    )
