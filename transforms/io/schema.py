"""One schema for many input files: Parquet footers unified by column name, as Arrow and Spark do.

Every file's footer is read (no data pages). Columns are matched by NAME, so
their order in a file does not matter. A column's types across the files are
widened to a common type with Arrow's permissive promotion (``int32`` and
``int64`` -> ``int64``, ``float32`` and ``float64`` -> ``float64``, an integer
and a float -> ``float64``); each row group read is then cast to the planned
schema (:func:`cast_table`), so everything downstream sees one schema.

The planning schema holds the columns EVERY file has with compatible types,
in the first file's order: extra columns that only some files carry are
ignored unless the configuration asks for them, in which case
:meth:`InputSchema.require` names the file that lacks the column, or the two
files whose types cannot be unified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError, format_names

LOCATOR_COLUMNS = ("source_file", "row_index")
LOCATOR_FIELDS = (pa.field("source_file", pa.string()), pa.field("row_index", pa.int64()))

_FOOTER_THREADS = 16


@dataclasses.dataclass(frozen=True)
class Conflict:
    """A column whose types in two files have no common type."""

    column: str
    first: tuple[str, pa.DataType]  # (file, type) where the column was first seen
    other: tuple[str, pa.DataType]

    def message(self) -> str:
        (f1, t1), (f2, t2) = self.first, self.other
        return (
            f"column {self.column!r} has type {t1} in input file {f1} but {t2} in {f2}; "
            "the files' types must be the same or numeric types that widen to one "
            "(int32/int64, float32/float64, int/float)"
        )


@dataclasses.dataclass(frozen=True)
class InputSchema:
    """The input files' schemas unified by column name.

    Attributes:
        schema: The columns every file has, with compatible types, widened, in
            the first file's order (what pipelines plan with and read into).
        files: The input files.
        file_schemas: Each file's footer schema.
        conflicts: Columns whose types cannot be unified (left out of ``schema``).
    """

    schema: pa.Schema
    files: tuple[str, ...]
    file_schemas: tuple[pa.Schema, ...]
    conflicts: tuple[Conflict, ...] = ()

    def missing(self, column: str) -> list[str]:
        """The files that lack ``column``."""
        return [
            f for f, s in zip(self.files, self.file_schemas, strict=True) if column not in s.names
        ]

    def require(self, columns: Sequence[str]) -> None:
        """Checks that every file has each of ``columns`` that any file has, with unifiable types.

        Names no file has are left to the planners' own messages.

        Raises:
            ConfigError: naming a file that lacks the column, or the column, both
                files and both types when they cannot be unified.
        """
        conflicts = {c.column: c for c in self.conflicts}
        for column in dict.fromkeys(columns):
            if column in conflicts:
                raise ConfigError(conflicts[column].message())
            lacking = self.missing(column)
            if lacking and len(lacking) < len(self.files):
                raise ConfigError(_missing_message(column, lacking, self))

    def require_for_model(
        self,
        id_columns: Sequence[str],
        feature_columns: Sequence[str] | None,
        model_inputs: Sequence[Any],
        preprocess: Any = None,
    ) -> None:
        """Checks the columns a scoring run names before the feature layout is planned.

        The id columns, ``--feature-columns`` and the model's input names (named
        inputs read the column of the same name) must be in every file that has
        them anywhere. Without ``--feature-columns`` (and without a preprocessing
        spec) a single-input model reads every numeric non-id column the files
        share; when those give fewer values than the model takes and some files
        carry more numeric columns, the message names the files lacking them.

        Raises:
            ConfigError: naming the file and the column (see :meth:`require`).
        """
        self.require([*id_columns, *(feature_columns or ()), *(i.name for i in model_inputs)])
        if feature_columns is not None or preprocess or len(model_inputs) != 1:
            return
        info = model_inputs[0]
        if info.width is None or info.name in self.schema.names:
            return
        have = sum(_width(f.type) for f in self.schema if f.name not in id_columns and _numeric(f))
        partial = [
            name
            for name in dict.fromkeys(n for s in self.file_schemas for n in s.names)
            if name not in self.schema.names and name not in id_columns
            and any(_numeric(s.field(name)) for s in self.file_schemas if name in s.names)
        ]  # fmt: skip
        if have == info.width or not partial:
            return
        details = "; ".join(
            _missing_message(c, self.missing(c), self) for c in partial[:3] if self.missing(c)
        )
        raise ConfigError(
            f"model input {info.name!r} expects {info.width} values per row, but the numeric columns "
            f"every input file has give {have}: {details}; add the column to every file, or pass "
            "--feature-columns"
        )


def _missing_message(column: str, lacking: Sequence[str], inputs: InputSchema) -> str:
    schema = inputs.file_schemas[inputs.files.index(lacking[0])]
    more = f" (and {len(lacking) - 1} more file(s))" if len(lacking) > 1 else ""
    return (
        f"input file {lacking[0]}{more} has no column {column!r}, which other input files have; "
        f"its columns are {format_names(schema.names)}"
    )


def _numeric(field: pa.Field) -> bool:
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _width(t: pa.DataType) -> int:
    return t.list_size if pa.types.is_fixed_size_list(t) else 1


def unify(files: Sequence[str], schemas: Sequence[pa.Schema]) -> InputSchema:
    """Unifies ``schemas`` (one per file) by column name; see the module docstring."""
    if not schemas:
        raise ValueError("no schemas to unify")
    types: dict[str, tuple[str, pa.Field]] = {}  # name -> (first file, unified field)
    conflicts: dict[str, Conflict] = {}
    for path, schema in zip(files, schemas, strict=True):
        for field in schema:
            if field.name in conflicts:
                continue
            seen = types.get(field.name)
            if seen is None:
                types[field.name] = (path, field)
                continue
            merged = _promote(seen[1], field)
            if merged is None:
                conflicts[field.name] = Conflict(
                    field.name, (seen[0], seen[1].type), (path, field.type)
                )
            else:
                types[field.name] = (seen[0], merged)
    common = [
        types[f.name][1]
        for f in schemas[0]
        if f.name not in conflicts and all(f.name in s.names for s in schemas[1:])
    ]
    return InputSchema(pa.schema(common), tuple(files), tuple(schemas), tuple(conflicts.values()))


def _promote(a: pa.Field, b: pa.Field) -> pa.Field | None:
    if a.type.equals(b.type):
        return a if a.nullable or not b.nullable else b
    try:
        merged = pa.unify_schemas(
            [pa.schema([a]), pa.schema([b])], promote_options="permissive"
        ).field(a.name)
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return merged


def read_footer_schemas(files: Sequence[str]) -> list[pa.Schema]:
    """Each file's footer schema, read concurrently (no data pages)."""
    from keras_batch_score.transforms.io.parquet_read import read_parquet_schema

    if len(files) == 1:
        return [read_parquet_schema(files[0])]
    with ThreadPoolExecutor(max_workers=min(_FOOTER_THREADS, len(files))) as pool:
        return list(pool.map(read_parquet_schema, files))


def unify_input_schemas(files: Sequence[str]) -> InputSchema:
    """Reads every input file's footer and unifies the schemas by column name."""
    return unify(files, read_footer_schemas(files))


def cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types (a no-op when they already match).

    Widening casts only; integer -> float casts are unchecked (``2**53 + 1`` may
    round, as it would in the model's own float cast).
    """
    if table.schema.equals(schema):
        return table
    table = table.select(schema.names)
    columns = []
    for field, column in zip(schema, table.columns, strict=True):
        if column.type.equals(field.type):
            columns.append(column)
        else:
            safe = not _is_float_like(field.type)
            columns.append(column.cast(field.type, safe=safe))
    return pa.Table.from_arrays(columns, schema=schema)


def _is_float_like(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def check_locator_names(schema: pa.Schema) -> None:
    """Refuses input columns named like the row locator columns added when no id column is given.

    Raises:
        ConfigError: naming the clashing column.
    """
    clash = [c for c in LOCATOR_COLUMNS if c in schema.names]
    if clash:
        raise ConfigError(
            f"the input has a column {clash[0]!r}; without --id-column the outputs get the row locator "
            f"columns {list(LOCATOR_COLUMNS)}, so pass --id-column (e.g. --id-column {clash[0]})"
        )


def with_locator(schema: pa.Schema) -> pa.Schema:
    """``schema`` plus the row locator fields."""
    return pa.schema([*schema, *LOCATOR_FIELDS])
