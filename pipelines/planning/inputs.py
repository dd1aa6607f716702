"""The input files and their unified schema, planned from footers (no data pages).

:func:`plan_input` is shared by every command that reads data (``score``,
``profile``, ``calibrate``, ``fit-preprocess``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError, format_names
from keras_batch_score.transforms.io.files import input_pattern, match_files
from keras_batch_score.transforms.io.read import ReadInput
from keras_batch_score.transforms.io.schema import InputSchema, unify_input_schemas
from keras_batch_score.transforms.io.tfrecord_spec import (
    TFRecordFeature,
    arrow_schema,
    plan_features,
    resolve_input_format,
)


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """The input files and their unified schema (footers only, no data pages).

    Attributes:
        source: The ``--input`` pattern as given.
        pattern: One glob matching exactly the files (for TFRecord reads).
        files: The matched files.
        format: ``parquet`` or ``tfrecord``.
        tfrecord_features: The parsed TFRecord features (empty for Parquet).
        schema: The schema every table is cast to.
        unified: The Parquet files' schemas unified by name (None for TFRecord).
    """

    source: str
    pattern: str
    files: tuple[str, ...]
    format: str
    schema: pa.Schema
    tfrecord_features: tuple[TFRecordFeature, ...] = ()
    unified: InputSchema | None = None

    def require(self, columns: Sequence[str]) -> None:
        """Checks that every Parquet file that has one of ``columns`` anywhere has it everywhere."""
        if self.unified is not None:
            self.unified.require(columns)

    def check_columns(self, columns: Sequence[str]) -> None:
        """Raises ConfigError naming the first of ``columns`` that is not in the schema."""
        for col in columns:
            if col not in self.schema.names:
                raise ConfigError(
                    f"column {col!r} is not in the input schema; columns are "
                    f"{format_names(self.schema.names)}"
                )

    def read(
        self,
        columns: Sequence[str],
        batch_rows: int,
        *,
        locator: bool = False,
        with_errors: bool = False,
    ) -> ReadInput:
        """The step reading ``columns`` of the files as Arrow tables."""
        return ReadInput(
            input_format=self.format,
            files=self.files,
            pattern=self.pattern,
            columns=columns,
            tfrecord_features=self.tfrecord_features,
            batch_rows=batch_rows,
            schema=self.schema,
            locator=locator,
            with_errors=with_errors,
        )


def plan_input(
    source: str,
    input_format: str = "auto",
    tfrecord_features: object = None,
    *,
    before_reading: Callable[[], None] | None = None,
) -> InputPlan:
    """Matches the input files and plans their schema.

    Args:
        source: File, directory, glob or ``gs://`` pattern.
        input_format: ``auto``, ``parquet`` or ``tfrecord``.
        tfrecord_features: A TFRecord feature spec (path or mapping); None infers it.
        before_reading: Called once the files are matched, before any is opened
            (the output check, so a bad output fails before footers are read).

    Raises:
        ConfigError: for no matching file, a mix of formats or a bad TFRecord spec.
    """
    files = match_files(source)
    if before_reading is not None:
        before_reading()
    fmt = resolve_input_format(input_format, files)
    features = plan_features(tfrecord_features, files) if fmt == "tfrecord" else ()
    unified = None if features else unify_input_schemas(files)  # footers, unified by name
    return InputPlan(
        source=source,
        pattern=input_pattern(files, source),
        files=tuple(files),
        format=fmt,
        schema=arrow_schema(features) if features else unified.schema,
        tfrecord_features=tuple(features),
        unified=unified,
    )
