"""The background reader and writer (transforms/io/prefetch.py) and their use in transforms/io/parquet_read.py and transforms/io/write.py.

Checked: results keep their order, every row is read and written exactly once,
the queues are bounded, and an exception on a background thread reaches the
caller (and fails the pipeline).
"""

from __future__ import annotations

import glob
import logging
import re
import threading

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.io import parquet_read
from keras_batch_score.transforms.io import write as io_write
from keras_batch_score.transforms.io.prefetch import BackgroundWriter, ReadAhead, read_ahead
from tests.util import write_parquet


def test_read_ahead_keeps_input_order_and_tags():
    ahead = ReadAhead(lambda x: x * 10, depth=2)
    out = []
    for i in range(7):
        out += list(ahead.submit(i, f"t{i}"))
    assert ahead.pending == 2
    out += list(ahead.drain())
    ahead.close()
    assert out == [(i * 10, f"t{i}") for i in range(7)]


def test_read_ahead_is_bounded_and_runs_on_one_thread():
    threads: set[int] = set()
    ahead = ReadAhead(lambda x: threads.add(threading.get_ident()) or x, depth=3)
    for i in range(20):
        list(ahead.submit(i, None))
        assert ahead.pending <= 3
    assert len(list(ahead.drain())) == 3
    ahead.close()
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_read_ahead_raises_for_the_failing_input_and_stops():
    def fn(x: int) -> int:
        if x == 3:
            raise OSError("row group 3 is corrupt")
        return x

    ahead = ReadAhead(fn, depth=1)
    got = []
    with pytest.raises(OSError, match="row group 3 is corrupt"):
        for i in range(10):
            got += [v for v, _ in ahead.submit(i, None)]
    assert got == [0, 1, 2]  # everything before the failure, nothing after
    assert ahead.pending == 0


def test_read_ahead_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth"):
        ReadAhead(lambda x: x, depth=0)


def test_read_ahead_iterator_keeps_order_stays_bounded_and_runs_elsewhere():
    produced: list[int] = []
    threads: set[int] = set()

    def items():
        for i in range(50):
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    got = []
    for value in read_ahead(items(), depth=2):
        assert len(produced) - len(got) <= 2 + 2  # queued + the one in hand + the one being made
        got.append(value)
    assert got == list(range(50))
    assert threads and threading.get_ident() not in threads


def test_read_ahead_iterator_raises_in_place_of_the_failing_item():
    def items():
        yield from range(3)
        raise OSError("record 3 is corrupt")

    got = []
    with pytest.raises(OSError, match="record 3 is corrupt"):
        for value in read_ahead(items(), depth=1):
            got.append(value)
    assert got == [0, 1, 2]


def test_read_ahead_iterator_stops_its_thread_when_closed_early():
    produced: list[int] = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = read_ahead(items(), depth=2, name="early-close")
    assert next(gen) == 0
    assert any(t.name == "early-close" for t in threading.enumerate())
    gen.close()
    assert not any(t.name == "early-close" for t in threading.enumerate())
    assert len(produced) < 10


def test_background_writer_writes_every_item_once_in_order():
    written: list[int] = []
    writer = BackgroundWriter(written.append, max_pending=2)
    for i in range(100):
        writer.put(i)
    writer.close()
    assert written == list(range(100))


def test_background_writer_queue_is_bounded():
    release = threading.Event()
    started = threading.Event()
    written: list[int] = []

    def slow(x: int) -> None:
        started.set()
        release.wait()
        written.append(x)

    writer = BackgroundWriter(slow, max_pending=2)
    writer.put(0)
    started.wait()  # item 0 is being written; the queue is empty
    writer.put(1)
    writer.put(2)  # the queue is now full
    producer = threading.Thread(target=writer.put, args=(3,))
    producer.start()
    producer.join(timeout=0.3)
    assert producer.is_alive(), "put() should block while the queue is full"
    release.set()
    producer.join()
    writer.close()
    assert written == [0, 1, 2, 3]


def test_background_writer_failure_reaches_put_and_close():
    def write(x: int) -> None:
        if x == 2:
            raise OSError("disk full")

    writer = BackgroundWriter(write, max_pending=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(1000):  # a failed writer keeps draining, so put() cannot hang
            writer.put(i)
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_background_writer_close_raises_a_late_failure():
    def write(x: int) -> None:
        raise ValueError(f"cannot encode {x}")

    writer = BackgroundWriter(write)
    writer.put(7)
    with pytest.raises(ValueError, match="cannot encode 7"):
        writer.close()


def _row_groups(path: str) -> list[tuple[str, int, int]]:
    meta = pq.ParquetFile(path).metadata
    offsets = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    return [(path, i, int(offsets[i])) for i in range(meta.num_row_groups)]


@pytest.mark.parametrize("read_ahead", [0, 1, 2, 5])
def test_reader_dofn_reads_every_row_group_once_in_order(tmp_path, read_ahead):
    n = 2500
    table = pa.table({"id": np.arange(n), "x": np.random.default_rng(0).random(n)})
    path = write_parquet(tmp_path / "in.parquet", table, row_group_size=300)
    elements = _row_groups(path)
    fn = parquet_read._ReadRowGroup(["id", "x"], locator=True, read_ahead=read_ahead)
    fn.setup()
    fn.start_bundle()
    out = []
    for element in elements:
        out += list(fn.process(element, 0, beam.transforms.window.GlobalWindow()))
    tail = list(fn.finish_bundle() or [])
    fn.teardown()
    assert all(isinstance(v, WindowedValue) for v in tail)
    assert len(tail) == min(read_ahead, len(elements))
    tables = out + [v.value for v in tail]
    got = pa.concat_tables(tables)
    assert got.column("id").to_pylist() == list(range(n))
    assert got.column("row_index").to_pylist() == list(range(n))
    np.testing.assert_array_equal(got.column("x").to_numpy(), table.column("x").to_numpy())


def test_reader_dofn_read_error_propagates(tmp_path):
    path = write_parquet(
        tmp_path / "in.parquet", pa.table({"x": np.arange(10.0)}), row_group_size=5
    )
    fn = parquet_read._ReadRowGroup(["x"], read_ahead=2)
    fn.setup()
    fn.start_bundle()
    window = beam.transforms.window.GlobalWindow()
    with pytest.raises(pa.ArrowInvalid, match="num_row_groups"):
        for element in [(path, 0, 0), (path, 7, 5)]:  # row group 7 does not exist
            list(fn.process(element, 0, window))
        list(fn.finish_bundle())
    fn.teardown()


def test_parquet_sink_writes_every_row_once_with_beam_shard_names(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("prediction", pa.float32())])
    tables = [
        pa.table(
            {"id": np.arange(i * 100, i * 100 + 100), "prediction": np.full(100, i, np.float32)},
            schema=schema,
        )
        for i in range(9)
    ]
    prefix = str(tmp_path / "out" / "predictions")
    with beam.Pipeline("FnApiRunner") as p:
        _ = (
            p
            | beam.Create(tables).with_output_types(pa.Table)
            | beam.io.Write(io_write.BackgroundParquetSink(prefix, schema, num_shards=2))
        )
    files = sorted(glob.glob(prefix + "*"))
    assert [re.sub(r".*/", "", f) for f in files] == [
        "predictions-00000-of-00002.parquet",
        "predictions-00001-of-00002.parquet",
    ]
    got = pa.concat_tables([pq.read_table(f) for f in files])
    assert got.schema == schema
    assert sorted(got.column("id").to_pylist()) == list(range(900))


def test_parquet_sink_dictionary_encodes_all_but_float_and_distinct_integer_columns(tmp_path):
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("bucket", pa.int32()),
            ("prediction", pa.float32()),
            ("label", pa.string()),
            ("probabilities", pa.list_(pa.float64())),
            ("top_k", pa.list_(pa.string())),
        ]
    )
    assert io_write.dictionary_columns(schema) == ["id", "bucket", "label", "top_k.list.element"]
    n = 5000
    table = pa.table(
        {
            "id": np.arange(n),
            "bucket": (np.arange(n) % 10).astype(np.int32),
            "prediction": np.random.default_rng(0).random(n, np.float32),
            "label": pa.array(["yes", "no"] * (n // 2)),
            "probabilities": pa.array([[0.25, 0.75]] * n),
            "top_k": pa.array([["yes", "no"]] * n),
        },
        schema=schema,
    )
    prefix = str(tmp_path / "predictions")
    with beam.Pipeline("FnApiRunner") as p:
        _ = (
            p
            | beam.Create([table]).with_output_types(pa.Table)
            | beam.io.Write(io_write.BackgroundParquetSink(prefix, schema, num_shards=1))
        )
    (path,) = glob.glob(prefix + "*")
    assert pq.read_table(path).equals(table)
    group = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {
        group.column(i).path_in_schema: "RLE_DICTIONARY" in group.column(i).encodings
        for i in range(group.num_columns)
    }
    assert encodings == {
        "id": False,  # every value distinct in the first table
        "bucket": True,
        "prediction": False,
        "label": True,
        "probabilities.list.element": False,
        "top_k.list.element": True,
    }


@pytest.mark.parametrize(
    ("values", "encoded"),
    [
        (np.arange(2000), False),  # distinct
        (np.arange(2000) % 1000, True),  # each value twice: not mostly distinct
        (np.arange(1000), True),  # too few rows to judge: Parquet's default
    ],
)
def test_integer_columns_are_dictionary_encoded_unless_the_sample_is_mostly_distinct(
    values, encoded
):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    sample = pa.table({"id": values, "name": ["a"] * len(values)}, schema=schema)
    assert ("id" in io_write.dictionary_columns(schema, sample)) is encoded
    assert "name" in io_write.dictionary_columns(schema, sample)


def test_parquet_sink_writes_a_valid_empty_shard(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("prediction", pa.float32())])
    prefix = str(tmp_path / "predictions")
    with beam.Pipeline("FnApiRunner") as p:
        _ = (
            p
            | beam.Create([schema.empty_table()]).with_output_types(pa.Table)
            | beam.io.Write(io_write.BackgroundParquetSink(prefix, schema, num_shards=2))
        )
    paths = sorted(glob.glob(prefix + "*"))
    assert len(paths) == 2
    assert all(
        pq.read_table(p).schema.equals(schema) and pq.read_table(p).num_rows == 0 for p in paths
    )


def test_parquet_sink_write_failure_fails_the_pipeline(tmp_path):
    schema = pa.schema([("id", pa.int64())])
    wrong = pa.table({"other": pa.array(["a", "b"])})
    sink = io_write.BackgroundParquetSink(str(tmp_path / "p"), schema)
    with pytest.raises(Exception, match="schema"), beam.Pipeline("FnApiRunner") as p:
        _ = p | beam.Create([wrong]).with_output_types(pa.Table) | beam.io.Write(sink)


def test_progress_reports_the_first_batch_at_once(caplog):
    reporter = io_write.ProgressReporter(interval=3600)
    with caplog.at_level(logging.INFO, logger="keras_batch_score"):
        reporter.add(scored=10)
        reporter.add(scored=5)
    lines = [r.getMessage() for r in caplog.records if "progress" in r.getMessage()]
    assert len(lines) == 1 and "10 scored" in lines[0]


def _tagged(output) -> bool:
    return isinstance(output, beam.pvalue.TaggedOutput)


def test_preprocess_dofn_pairs_each_table_with_its_own_images_in_input_order(monkeypatch):
    """Image batches decode on two threads and finish out of order; each keeps its own table."""
    import random
    import time
    import types

    from keras_batch_score.transforms.preprocess import transforms as pp
    from keras_batch_score.transforms.preprocess.apply import Preprocessed

    class SlowPreprocessor:  # stands in for BatchPreprocessor: random decode times
        def __init__(self, plan):
            self.threads: set[int] = set()

        def __call__(self, table):
            self.threads.add(threading.get_ident())
            time.sleep(random.Random(table.column("id")[0].as_py()).uniform(0, 0.02))
            ids = table.column("id").to_numpy()
            good = ids % 7 != 3  # some rows rejected, so the filter must match the table
            return Preprocessed(
                {"x": ids[good].astype(np.float32)}, good, pa.table({"id": ids[~good]})
            )

    monkeypatch.setattr(pp, "BatchPreprocessor", SlowPreprocessor)
    plan = types.SimpleNamespace(
        spec=types.SimpleNamespace(features=[types.SimpleNamespace(type="image")])
    )
    dofn = pp.PreprocessDoFn(plan, ["id"])
    dofn.setup()
    dofn.start_bundle()
    tables = [pa.table({"id": np.arange(i * 10, i * 10 + 10)}) for i in range(12)]
    window, timestamp = GlobalWindow(), MIN_TIMESTAMP
    outputs = [o for t in tables for o in dofn.process(t, window=window, timestamp=timestamp)]
    outputs += list(dofn.finish_bundle())
    main = [o.value if isinstance(o, WindowedValue) else o for o in outputs if not _tagged(o)]
    batches = [b for b in main if isinstance(b, ScoringBatch)]
    assert len(batches) == len(main) == 12
    assert sum(_tagged(o) for o in outputs) == 12  # every table rejects one row
    for i, batch in enumerate(batches):
        ids = np.arange(i * 10, i * 10 + 10)
        kept = ids[ids % 7 != 3]
        assert batch.table.column("id").to_numpy().tolist() == kept.tolist()
        np.testing.assert_array_equal(batch.features["x"], kept.astype(np.float32))
    assert len(dofn._run.threads) == 2
    dofn.teardown()
