"""TFRecord input: ``tf.train.Example`` records -> the same Arrow tables the Parquet reader yields.

The serialized records are read by Beam's TFRecord source (GZIP detected from
the file extension), grouped into fixed-size batches, and each batch is parsed
with ONE ``tf.io.parse_example`` call. Every feature is parsed as a
``RaggedFeature`` so that a record with a missing feature or a vector of the
wrong length becomes a null in its column (and a row-level error downstream)
instead of failing the whole batch.

The feature spec (name, dtype, shape, default) comes from the config
(``tfrecord_features``) or is inferred from the first records of the first
file. Column types:

* ``float`` -> ``float32``, ``int`` -> ``int64``, ``bytes`` -> ``binary``,
  ``string`` -> ``string`` (UTF-8);
* shape ``()`` -> a scalar column; any other shape -> ``fixed_size_list`` of
  ``prod(shape)`` values (row-major).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordSource

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

_LOG = logging.getLogger("keras_batch_score")

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfr", ".tfr.gz", ".tfrecords", ".tfrecords.gz")
DTYPES = ("float", "int", "bytes", "string")
_ARROW_TYPES = {
    "float": pa.float32(),
    "int": pa.int64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
DEFAULT_PARSE_ROWS = 2048


class CorruptTFRecordError(IOError):
    """A TFRecord file is truncated or fails its checksums."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One ``tf.train.Example`` feature.

    Attributes:
        name: Feature key, also the column name.
        dtype: ``float``, ``int``, ``bytes`` or ``string``.
        shape: Per-record shape; ``()`` for a scalar.
        default: Value used when a record lacks the feature; ``None`` makes it null.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    default: Any = None

    @property
    def width(self) -> int:
        return int(math.prod(self.shape)) if self.shape else 1

    @property
    def arrow_type(self) -> pa.DataType:
        value = _ARROW_TYPES[self.dtype]
        return value if not self.shape else pa.list_(value, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "default": self.default,
        }


def is_tfrecord_path(path: str) -> bool:
    return path.lower().endswith(TFRECORD_SUFFIXES)


def resolve_input_format(input_format: str, files: Sequence[str]) -> str:
    """``parquet`` or ``tfrecord``; ``auto`` decides by the file extensions.

    Raises:
        ConfigError: if ``auto`` finds TFRecord and non-TFRecord files mixed.
    """
    if input_format != "auto":
        return input_format
    tf_files = [f for f in files if is_tfrecord_path(f)]
    if not tf_files:
        return "parquet"
    if len(tf_files) != len(files):
        other = next(f for f in files if not is_tfrecord_path(f))
        raise ConfigError(
            f"--input matches TFRecord files ({tf_files[0]}) and other files ({other}); "
            "narrow the pattern or set --input-format"
        )
    return "tfrecord"


def parse_feature_specs(raw: Any, source: str = "tfrecord_features") -> tuple[FeatureSpec, ...]:
    """Validates a ``tfrecord_features`` setting.

    Accepts a list of ``{name, dtype, shape, default}`` mappings or a mapping
    ``name -> {dtype, shape, default}``.

    Raises:
        ConfigError: naming the feature and the bad key or value.
    """
    if isinstance(raw, Mapping):
        items = [
            {"name": k, **(v if isinstance(v, Mapping) else {"dtype": v})} for k, v in raw.items()
        ]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise ConfigError(f"{source}: expected a list of features, got {raw!r}")
    specs: list[FeatureSpec] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(
                f"{source}[{i}]: expected a mapping with 'name' and 'dtype', got {item!r}"
            )
        name = str(item["name"])
        unknown = sorted(set(item) - {"name", "dtype", "shape", "default"})
        if unknown:
            raise ConfigError(
                f"{source}: feature {name!r} has unknown key(s) {unknown}; known: name, dtype, shape, default"
            )
        dtype = item.get("dtype")
        if dtype not in DTYPES:
            raise ConfigError(
                f"{source}: feature {name!r} has dtype {dtype!r}; expected one of {list(DTYPES)}"
            )
        shape_raw = item.get("shape", [])
        if isinstance(shape_raw, int) and not isinstance(shape_raw, bool):
            shape_raw = [shape_raw]
        if not isinstance(shape_raw, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape_raw
        ):
            raise ConfigError(
                f"{source}: feature {name!r} has shape {shape_raw!r}; expected a list of positive integers"
            )
        shape = tuple(shape_raw)
        if shape == (1,):
            shape = ()
        specs.append(
            FeatureSpec(
                name, dtype, shape, _check_default(name, dtype, shape, item.get("default"), source)
            )
        )
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: features {dupes} are listed more than once")
    if not specs:
        raise ConfigError(f"{source}: the feature list is empty")
    return tuple(specs)


def _check_default(name: str, dtype: str, shape: tuple[int, ...], default: Any, source: str) -> Any:
    if default is None:
        return None
    width = int(math.prod(shape)) if shape else 1
    values = default if isinstance(default, list) else [default]
    if len(values) not in (1, width):
        raise ConfigError(
            f"{source}: feature {name!r} default has {len(values)} values, expected 1 or {width}"
        )
    ok = {
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bytes": lambda v: isinstance(v, (str, bytes)),
        "string": lambda v: isinstance(v, str),
    }[dtype]
    if not all(ok(v) for v in values):
        raise ConfigError(
            f"{source}: feature {name!r} default {default!r} does not match dtype {dtype!r}"
        )
    return default


def arrow_schema(specs: Sequence[FeatureSpec]) -> pa.Schema:
    """The Arrow schema of the tables :func:`parse_examples` produces."""
    return pa.schema([pa.field(s.name, s.arrow_type) for s in specs])


# --------------------------------------------------------------------------- reading records


def _compression(path: str) -> str:
    return CompressionTypes.GZIP if path.lower().endswith(".gz") else CompressionTypes.UNCOMPRESSED


def read_first_records(path: str, limit: int) -> list[bytes]:
    """Up to ``limit`` serialized records from the start of ``path`` (any Beam filesystem)."""
    records: list[bytes] = []
    try:
        with FileSystems.open(path, compression_type=_compression(path)) as f:
            while len(records) < limit:
                header = f.read(12)
                if not header:
                    break
                if len(header) != 12:
                    raise CorruptTFRecordError("truncated record header")
                (length,) = struct.unpack("<Q", header[:8])
                body = f.read(length + 4)
                if len(body) != length + 4:
                    raise CorruptTFRecordError(f"truncated record: expected {length} bytes")
                records.append(body[:length])
    except Exception as e:
        raise ConfigError(f"TFRecord file {path} cannot be read: {e}") from None
    return records


def infer_feature_specs(path: str, limit: int = 200) -> tuple[FeatureSpec, ...]:
    """Guesses the feature spec from the first ``limit`` records of ``path``.

    A feature with one value in every record is a scalar; with ``k`` values in
    every record a ``(k,)`` vector. Features missing from some records get no
    default (they become nulls).

    Raises:
        ConfigError: if the file has no records, a record is not a
            ``tf.train.Example``, or a feature's length varies.
    """
    tf = import_tensorflow()
    records = read_first_records(path, limit)
    if not records:
        raise ConfigError(
            f"TFRecord file {path} has no records to infer the features from; set tfrecord_features"
        )
    kinds: dict[str, str] = {}
    lengths: dict[str, set[int]] = {}
    for i, raw in enumerate(records):
        try:
            example = tf.train.Example.FromString(raw)
        except Exception as e:
            raise ConfigError(
                f"TFRecord file {path}: record {i} is not a tf.train.Example: {e}"
            ) from None
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind is None:
                continue
            dtype = {"float_list": "float", "int64_list": "int", "bytes_list": "bytes"}[kind]
            if kinds.setdefault(name, dtype) != dtype:
                raise ConfigError(
                    f"TFRecord file {path}: feature {name!r} has dtype {kinds[name]} and {dtype}"
                )
            lengths.setdefault(name, set()).add(len(getattr(feature, kind).value))
    specs = []
    for name in sorted(kinds):
        seen = lengths[name]
        if len(seen) != 1:
            raise ConfigError(
                f"TFRecord file {path}: feature {name!r} has {sorted(seen)} values in different records; "
                "set its shape in tfrecord_features"
            )
        width = seen.pop()
        specs.append(FeatureSpec(name, kinds[name], () if width == 1 else (width,)))
    _LOG.info(
        "TFRecord features inferred from the first %d record(s) of %s: %s",
        len(records),
        path,
        ", ".join(f"{s.name}:{s.dtype}{list(s.shape) if s.shape else ''}" for s in specs),
    )
    return tuple(specs)


def plan_features(raw: Any, files: Sequence[str]) -> tuple[FeatureSpec, ...]:
    """The configured feature spec, or one inferred from the first file.

    Args:
        raw: A ``tfrecord_features`` setting, the path of a YAML file holding one
            (``--tfrecord-features``), or None to infer the spec.
        files: The input files.
    """
    if isinstance(raw, str):
        path = raw
        document = read_yaml(path, "TFRecord feature spec")
        raw = document.get("tfrecord_features") if isinstance(document, Mapping) else None
        if not raw:
            raise ConfigError(f"TFRecord feature spec {path}: expected a 'tfrecord_features' key")
    if raw:
        return parse_feature_specs(raw)
    return infer_feature_specs(files[0])


# --------------------------------------------------------------------------- parsing


def parse_examples(serialized: Sequence[bytes] | Any, specs: Sequence[FeatureSpec]) -> pa.Table:
    """Parses serialized ``tf.train.Example`` records with one ``tf.io.parse_example`` call.

    A record lacking a feature gets its default, or a null without one; a record
    whose feature has the wrong number of values gets a null.
    """
    import tensorflow as tf

    tf_dtypes = {"float": tf.float32, "int": tf.int64, "bytes": tf.string, "string": tf.string}
    features = {
        s.name: tf.io.RaggedFeature(tf_dtypes[s.dtype], row_splits_dtype=tf.int64) for s in specs
    }
    parsed = tf.io.parse_example(tf.convert_to_tensor(serialized, dtype=tf.string), features)
    n = int(tf.shape(parsed[specs[0].name].row_splits)[0]) - 1 if specs else 0
    columns = [_to_arrow(parsed[s.name], s, n) for s in specs]
    return pa.Table.from_arrays(columns, schema=arrow_schema(specs))


def _to_arrow(ragged: Any, spec: FeatureSpec, n: int) -> pa.Array:
    values = ragged.values.numpy()
    splits = ragged.row_splits.numpy()
    lengths = np.diff(splits)
    width = spec.width
    ok = lengths == width
    if ok.all():
        flat = values
    else:
        # Rows with the wrong number of values read `width` filler values past the end.
        filler = (
            np.full(width, b"", dtype=object)
            if values.dtype == object
            else np.zeros(width, values.dtype)
        )
        padded = np.concatenate([values, filler])
        starts = np.where(ok, splits[:-1], len(values))
        flat = padded[(starts[:, None] + np.arange(width)).ravel()]
        if spec.default is not None:
            missing = lengths == 0
            if missing.any():
                flat = flat.reshape(n, width)
                flat[missing] = _default_values(spec)
                flat = flat.ravel()
                ok = ok | missing
    mask = None if ok.all() else ~ok
    if not spec.shape:
        return pa.array(flat, type=_ARROW_TYPES[spec.dtype], mask=mask)
    flat_arr = pa.array(flat, type=_ARROW_TYPES[spec.dtype])
    return pa.FixedSizeListArray.from_arrays(
        flat_arr, width, mask=None if mask is None else pa.array(mask)
    )


def _default_values(spec: FeatureSpec) -> np.ndarray:
    default = spec.default if isinstance(spec.default, list) else [spec.default]
    if spec.dtype in ("bytes", "string"):
        default = [d.encode() if isinstance(d, str) else d for d in default]
        return np.array(default * (spec.width // len(default)), dtype=object)
    return np.array(default * (spec.width // len(default)))


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that ``tf.io.parse_example`` refuses.

    Attributes:
        position: The record's position in the parsed batch.
        column: The feature that cannot be parsed (``None``: not a ``tf.train.Example``).
        detail: What TensorFlow said, without its op prefix.
        values: The record's other features that do parse (for the errors output).
    """

    position: int
    column: str | None
    detail: str
    values: dict[str, Any]


def parse_examples_located(
    serialized: Sequence[bytes], specs: Sequence[FeatureSpec]
) -> tuple[pa.Table, list[BadRecord]]:
    """:func:`parse_examples`, but records it refuses are split off instead of failing the batch.

    The batch is parsed with one vectorized call. Only when that call raises
    (a feature of the wrong type, e.g. an ``int64_list`` where a ``float_list``
    is expected, or bytes that are no ``tf.train.Example``) are the bad records
    located by bisection: halves that parse are kept whole, so ``k`` bad records
    in ``n`` cost about ``2 k log2(n)`` calls and never more than ``2 n``. Each
    bad record is then parsed feature by feature to name the culprit (one more
    call per feature and bad record).

    Returns:
        The good records' table (in batch order) and the bad records.
    """
    records = list(serialized)
    errors = _parse_errors()
    try:
        return parse_examples(records, specs), []
    except errors:
        pass
    parts: list[pa.Table] = []
    bad: list[BadRecord] = []

    def visit(lo: int, hi: int) -> None:
        try:
            parts.append(parse_examples(records[lo:hi], specs))
        except errors as e:
            if hi - lo == 1:
                bad.append(_diagnose(records[lo], lo, specs, e))
            else:
                visit(lo, (lo + hi) // 2)
                visit((lo + hi) // 2, hi)

    mid = len(records) // 2
    if mid:
        visit(0, mid)
    visit(mid, len(records))
    table = pa.concat_tables(parts) if parts else arrow_schema(specs).empty_table()
    return table, bad


def _parse_errors() -> tuple[type[Exception], ...]:
    """What ``tf.io.parse_example`` raises for a bad record.

    TensorFlow raises ``UnicodeDecodeError`` when its message quotes non-UTF-8 bytes.
    """
    import tensorflow as tf

    return (tf.errors.InvalidArgumentError, UnicodeDecodeError)


def _tf_detail(error: Exception) -> str:
    text = str(getattr(error, "message", error))
    text = text.split("}} ", 1)[-1].split(" [Op:", 1)[0]
    if "Index: " in text:  # "Name: <unknown>, Key: a, Index: 0.  Data types don't match. ..."
        text = text.split(".  ", 1)[-1]
    return text.strip()


def _diagnose(
    record: bytes, position: int, specs: Sequence[FeatureSpec], error: Exception
) -> BadRecord:
    values: dict[str, Any] = {}
    failed: list[tuple[str, str]] = []
    for spec in specs:
        try:
            values[spec.name] = parse_examples([record], [spec]).column(0)[0].as_py()
        except _parse_errors() as e:
            failed.append((spec.name, _tf_detail(e)))
    if len(failed) == len(specs) and all(
        "Could not parse example" in d or "codec can't decode" in d for _, d in failed
    ):
        return BadRecord(position, None, "the record is not a tf.train.Example", {})
    if not failed:  # only the combination fails (should not happen); report TF's words
        return BadRecord(position, None, _tf_detail(error), values)
    column, detail = failed[0]
    return BadRecord(position, column, detail, values)


def example_bytes(row: Mapping[str, Any]) -> bytes:
    """Serializes one row (feature name -> value or list) as a ``tf.train.Example`` (tests, tools)."""
    import tensorflow as tf

    feature = {}
    for name, value in row.items():
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if values and isinstance(values[0], (bytes, str)):
            values = [v.encode() if isinstance(v, str) else v for v in values]
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif values and isinstance(values[0], (float, np.floating)):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(v) for v in values])
            )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# --------------------------------------------------------------------------- Beam


class _NamedTFRecordSource(_TFRecordSource):
    """Beam's TFRecord source, yielding ``(file, record index, record)``; read errors name the file.

    Beam never splits a TFRecord file (it has no sync markers), so counting the
    records of one ``read_records`` call gives each record's index in its file.
    """

    def read_records(self, file_name: str, offset_range_tracker: Any) -> Iterable[Any]:
        try:
            for index, record in enumerate(super().read_records(file_name, offset_range_tracker)):
                yield file_name, index, record
        except Exception as e:
            detail = str(e).split(": b'")[0]  # drop Beam's hex dump of the bad bytes
            raise CorruptTFRecordError(
                f"TFRecord file {file_name} is truncated or corrupt: {detail}"
            ) from e

    def default_output_coder(self) -> beam.coders.Coder:
        return beam.coders.TupleCoder(
            [beam.coders.StrUtf8Coder(), beam.coders.VarIntCoder(), beam.coders.BytesCoder()]
        )


class _ParseExamplesDoFn(beam.DoFn):
    """A list of ``(file, record index, record)`` -> one parsed Arrow table (+ an errors table).

    Records that cannot be parsed go to the ``errors`` output (stage ``parse``),
    or, without ``emit_errors``, are logged and dropped.
    """

    ERRORS = "errors"

    def __init__(self, specs: Sequence[FeatureSpec], locator: bool, emit_errors: bool) -> None:
        self._specs = tuple(specs)
        self._locator = locator
        self._emit_errors = emit_errors

    def setup(self) -> None:
        self._unparsed = beam.metrics.Metrics.counter("keras_batch_score", "records_unparsed")

    def process(self, batch: list[tuple[str, int, bytes]]) -> Iterable[Any]:
        if not batch:
            return
        files, indices, records = zip(*batch, strict=True)
        table, bad = parse_examples_located(records, self._specs)
        if self._locator:
            keep = np.delete(np.arange(len(records)), [b.position for b in bad])
            file_col = pa.array(files, pa.string())
            index_col = pa.array(np.asarray(indices, dtype=np.int64))
            if bad:
                file_col, index_col = file_col.take(keep), index_col.take(keep)
            table = table.append_column("source_file", file_col).append_column(
                "row_index", index_col
            )
        yield table
        if bad:
            self._unparsed.inc(len(bad))
            errors = self._errors(bad, files, indices)
            if self._emit_errors:
                yield beam.pvalue.TaggedOutput(self.ERRORS, errors)
            else:
                _LOG.warning(
                    "%d TFRecord record(s) cannot be parsed and are skipped, e.g. %s",
                    len(bad),
                    errors.column("reason")[0].as_py(),
                )

    def _errors(
        self, bad: Sequence[BadRecord], files: Sequence[str], indices: Sequence[int]
    ) -> pa.Table:
        from keras_batch_score.transforms.core.errors import error_table

        schema = arrow_schema(self._specs)
        rows = []
        for b in bad:
            row = dict(b.values)
            if self._locator:
                row |= {"source_file": files[b.position], "row_index": indices[b.position]}
            rows.append(row)
        if self._locator:
            schema = pa.schema([*schema, ("source_file", pa.string()), ("row_index", pa.int64())])
        reasons = [
            f"TFRecord file {files[b.position]} record {indices[b.position]}: "
            + (f"feature {b.column!r}: {b.detail}" if b.column else b.detail)
            for b in bad
        ]
        return error_table(
            pa.Table.from_pylist(rows, schema=schema),
            np.arange(len(bad)),
            "parse",
            [b.column for b in bad],
            reasons,
        )


class ReadTFRecordBatches(beam.PTransform):
    """TFRecord files -> Arrow tables of up to ``batch_rows`` parsed ``tf.train.Example`` rows.

    Args:
        pattern: Files to read.
        specs: The feature spec.
        batch_rows: Records per vectorized ``tf.io.parse_example`` call.
        columns: Only these features are parsed.
        locator: Append ``source_file`` and ``row_index`` (the record's index in its file).
        with_errors: Return ``(tables, errors)``: records that cannot be parsed
            become errors-output rows. Otherwise they are logged and skipped.
    """

    def __init__(
        self,
        pattern: str,
        specs: Sequence[FeatureSpec],
        batch_rows: int = DEFAULT_PARSE_ROWS,
        columns: Sequence[str] | None = None,
        *,
        locator: bool = False,
        with_errors: bool = False,
    ) -> None:
        super().__init__()
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        wanted = set(columns) if columns is not None else None
        self._specs = tuple(s for s in specs if wanted is None or s.name in wanted)
        if not self._specs:
            raise ValueError("no features to read")
        self._pattern = pattern
        self._batch_rows = batch_rows
        self._locator = locator
        self._with_errors = with_errors

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        source = _NamedTFRecordSource(
            self._pattern, beam.coders.BytesCoder(), CompressionTypes.AUTO, validate=True
        )
        parsed = (
            pbegin
            | "ReadRecords" >> beam.io.Read(source)
            | "BatchRecords"
            >> beam.BatchElements(min_batch_size=self._batch_rows, max_batch_size=self._batch_rows)
            | "ParseExamples"
            >> beam.ParDo(_ParseExamplesDoFn(self._specs, self._locator, self._with_errors))
            .with_output_types(pa.Table, errors=pa.Table)
            .with_outputs(_ParseExamplesDoFn.ERRORS, main="tables")
        )
        if self._with_errors:
            return parsed.tables, parsed.errors
        return parsed.tables
