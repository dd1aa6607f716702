"""The TFRecord feature spec: parsed from the config, or inferred from the first records.

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
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

_LOG = logging.getLogger("keras_batch_score")


TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfr", ".tfr.gz", ".tfrecords", ".tfrecords.gz")


DTYPES = ("float", "int", "bytes", "string")


ARROW_TYPES = {
    "float": pa.float32(),
    "int": pa.int64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


class CorruptTFRecordError(IOError):
    """A TFRecord file is truncated or fails its checksums."""


@dataclasses.dataclass(frozen=True)
class TFRecordFeature:
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
        value = ARROW_TYPES[self.dtype]
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


def parse_feature_specs(raw: Any, source: str = "tfrecord_features") -> tuple[TFRecordFeature, ...]:
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
    specs: list[TFRecordFeature] = []
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
            TFRecordFeature(
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


def arrow_schema(specs: Sequence[TFRecordFeature]) -> pa.Schema:
    """The Arrow schema of the tables :func:`parse_examples` produces."""
    return pa.schema([pa.field(s.name, s.arrow_type) for s in specs])


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


def infer_feature_specs(path: str, limit: int = 200) -> tuple[TFRecordFeature, ...]:
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
        specs.append(TFRecordFeature(name, kinds[name], () if width == 1 else (width,)))
    _LOG.info(
        "TFRecord features inferred from the first %d record(s) of %s: %s",
        len(records),
        path,
        ", ".join(f"{s.name}:{s.dtype}{list(s.shape) if s.shape else ''}" for s in specs),
    )
    return tuple(specs)


def plan_features(raw: Any, files: Sequence[str]) -> tuple[TFRecordFeature, ...]:
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
