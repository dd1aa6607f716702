"""The reference profile: a versioned JSON description of each feature's distribution.

A profile is written by ``batch-score profile`` over training or reference
data and read by ``batch-score score --reference-profile``. It holds, per
feature and per prediction column:

* numeric: bin edges (quantiles from a mergeable sketch, first and last edge
  the exact minimum and maximum), the count in each bin (the sketch's mass,
  summing exactly to the count), nulls, min, max, mean and std;
* categorical: the top-N values with their counts, an ``other`` count for the
  rest, and nulls.

Bins are ``[e_0, e_1), [e_1, e_2), ..., [e_{k-1}, e_k]`` (the last one is
closed). When scoring, values below ``e_0`` and above ``e_k`` go to two extra
out-of-range slots, so every histogram has ``k + 2`` slots:
``[below, bin 1, ..., bin k, above]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.arrow import readable_text
from keras_batch_score.transforms.core.errors import ConfigError

PROFILE_FORMAT = "keras-batch-score/profile"
PROFILE_VERSION = 1
NUMERIC = "numeric"
CATEGORICAL = "categorical"
DEFAULT_NUM_BINS = 10
DEFAULT_TOP_K = 20
DEFAULT_CATEGORICAL_MAX_DISTINCT = 20


class ProfileError(ConfigError):
    """A reference profile that cannot be read or does not fit the job."""


@dataclasses.dataclass(frozen=True)
class NumericStats:
    """Distribution of one numeric column.

    Attributes:
        edges: ``k + 1`` increasing bin edges (two equal edges for a constant column).
        counts: ``k`` counts, one per bin (from the quantile sketch: within its
            error of the exact counts, summing exactly to ``count``).
        count: Non-null values.
        null_count: Null or NaN values.
        min, max, mean, std: Of the non-null values (population std).
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    null_count: int
    min: float
    max: float
    mean: float
    std: float
    kind: str = NUMERIC

    def slot_counts(self) -> np.ndarray:
        """Reference counts on the ``[below, bins..., above]`` slots (out-of-range are 0)."""
        return np.asarray([0, *self.counts, 0], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class CategoricalStats:
    """Distribution of one categorical column (values kept as strings).

    Attributes:
        values: The top-N values, most frequent first.
        counts: Their counts.
        other_count: Non-null values outside ``values``.
        count: Non-null values.
        null_count: Null values.
    """

    values: tuple[str, ...]
    counts: tuple[int, ...]
    other_count: int
    count: int
    null_count: int
    kind: str = CATEGORICAL

    def slot_counts(self) -> np.ndarray:
        """Reference counts on the ``[values..., other]`` slots."""
        return np.asarray([*self.counts, self.other_count], dtype=np.int64)


ColumnStats = NumericStats | CategoricalStats


@dataclasses.dataclass(frozen=True)
class Profile:
    """A reference profile.

    Attributes:
        features: Stats per input column name.
        predictions: Stats per prediction column (``prediction``, ``prediction_<out>``,
            ``name[i]`` for one position of a vector output).
        rows: Rows profiled.
        metadata: Free-form provenance (input, model, created_at, settings).
    """

    features: Mapping[str, ColumnStats]
    predictions: Mapping[str, ColumnStats] = dataclasses.field(default_factory=dict)
    rows: int = 0
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "rows": self.rows,
            "metadata": dict(self.metadata),
            "features": {k: _stats_to_dict(v) for k, v in self.features.items()},
            "predictions": {k: _stats_to_dict(v) for k, v in self.predictions.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _stats_to_dict(stats: ColumnStats) -> dict[str, Any]:
    d = dataclasses.asdict(stats)
    kind = d.pop("kind")
    return {"kind": kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


def profile_from_dict(data: Any, source: str = "profile") -> Profile:
    """Validates a parsed profile document.

    Raises:
        ProfileError: naming the field that is missing or malformed.
    """
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(
            f'{source}: not a keras-batch-score profile (expected "format": "{PROFILE_FORMAT}"); '
            "create one with `batch-score profile`"
        )
    version = data.get("version")
    if version != PROFILE_VERSION:
        raise ProfileError(
            f"{source}: profile version {version!r} is not supported (this tool reads version "
            f"{PROFILE_VERSION}); re-create it with `batch-score profile`"
        )
    sections = {}
    for section in ("features", "predictions"):
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise ProfileError(f"{source}: {section!r} must be an object of column -> stats")
        sections[section] = {
            str(name): _stats_from_dict(stats, f"{source}: {section}[{name!r}]")
            for name, stats in raw.items()
        }
    rows = data.get("rows", 0)
    if not isinstance(rows, int) or rows < 0:
        raise ProfileError(f"{source}: 'rows' must be a non-negative integer, got {rows!r}")
    metadata = data.get("metadata", {})
    return Profile(
        sections["features"],
        sections["predictions"],
        rows,
        metadata if isinstance(metadata, dict) else {},
    )


def _stats_from_dict(d: Any, where: str) -> ColumnStats:
    if not isinstance(d, dict):
        raise ProfileError(f"{where}: expected an object, got {type(d).__name__}")
    kind = d.get("kind")
    try:
        if kind == NUMERIC:
            edges = tuple(float(e) for e in d["edges"])
            counts = tuple(int(c) for c in d["counts"])
            stats: ColumnStats = NumericStats(
                edges=edges,
                counts=counts,
                count=int(d["count"]),
                null_count=int(d["null_count"]),
                min=float(d["min"]),
                max=float(d["max"]),
                mean=float(d["mean"]),
                std=float(d["std"]),
            )
            if len(edges) < 2 or len(counts) != len(edges) - 1:
                raise ProfileError(
                    f"{where}: needs k+1 >= 2 edges and k counts, got {len(edges)} edges and {len(counts)} counts"
                )
            if any(not math.isfinite(e) for e in edges) or any(
                b < a for a, b in itertools.pairwise(edges)
            ):
                raise ProfileError(f"{where}: edges must be finite and non-decreasing: {edges}")
            return stats
        if kind == CATEGORICAL:
            values = tuple(str(v) for v in d["values"])
            counts = tuple(int(c) for c in d["counts"])
            if len(values) != len(counts) or len(set(values)) != len(values):
                raise ProfileError(
                    f"{where}: 'values' and 'counts' must be unique and of equal length"
                )
            return CategoricalStats(
                values=values,
                counts=counts,
                other_count=int(d["other_count"]),
                count=int(d["count"]),
                null_count=int(d["null_count"]),
            )
    except KeyError as e:
        raise ProfileError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ProfileError(f"{where}: malformed value: {e}") from None
    raise ProfileError(f"{where}: 'kind' must be {NUMERIC!r} or {CATEGORICAL!r}, got {kind!r}")


def load_profile(path: str) -> Profile:
    """Reads and validates a profile through Beam FileSystems (local or gs://).

    Raises:
        ProfileError: if the file is missing, not JSON or not a valid profile.
    """
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except Exception as e:
        raise ProfileError(f"reference profile {path} cannot be read: {_first_line(e)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"reference profile {path} is not valid JSON: {e}") from None
    return profile_from_dict(data, f"reference profile {path}")


def write_profile(profile: Profile, path: str) -> None:
    """Writes ``profile`` as JSON through Beam FileSystems."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(profile.to_json().encode("utf-8"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------- kinds


@dataclasses.dataclass(frozen=True)
class KindRule:
    """How a column's kind is decided.

    Strings, binaries, booleans and dictionary columns are categorical; floats
    are numeric; an integer column is categorical when it has at most
    ``max_distinct`` distinct values (0 turns this off). ``categorical`` and
    ``numeric`` force a kind by column name.
    """

    max_distinct: int = DEFAULT_CATEGORICAL_MAX_DISTINCT
    categorical: frozenset[str] = frozenset()
    numeric: frozenset[str] = frozenset()


def type_kind(field: pa.Field, rule: KindRule) -> str | None:
    """The kind decided from the type alone: ``numeric``, ``categorical``, ``integer``
    (decided later from the distinct count) or ``None`` (not profiled).

    Raises:
        ProfileError: if a column forced numeric is not numeric.
    """
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    is_int = pa.types.is_integer(t)
    is_num = is_int or pa.types.is_floating(t) or pa.types.is_decimal(t)
    is_cat = (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)  # TFRecord bytes features
        or pa.types.is_large_binary(t)
        or pa.types.is_boolean(t)
    )
    if field.name in rule.numeric:
        if not is_num:
            raise ProfileError(f"column {field.name!r} has type {field.type}; it cannot be numeric")
        return NUMERIC
    if field.name in rule.categorical:
        return CATEGORICAL if (is_num or is_cat) else None
    if is_cat or pa.types.is_dictionary(field.type):
        return CATEGORICAL
    if is_int:
        return "integer" if rule.max_distinct > 0 else NUMERIC
    if is_num:
        return NUMERIC
    return None


def quantile_edges(quantiles: Sequence[float], num_bins: int) -> tuple[float, ...]:
    """Bin edges from a sketch's ``num_bins + 1`` quantiles (min first, max last).

    Duplicate edges (heavy ties) are merged; a constant column keeps two equal edges.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.size == 0:
        return ()
    edges = np.unique(q)
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return tuple(float(e) for e in edges)


def category_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A categorical column as strings (booleans -> ``true``/``false``, numbers as text)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "true", "false")
    if pa.types.is_string(values.type):
        return readable_text(values)  # bytes that are not UTF-8 escaped, as in the errors output
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        try:
            return values.cast(pa.string())  # validates UTF-8
        except pa.ArrowInvalid:  # not text: hex, row by row (rare, and not on the scoring path)
            return pa.array(
                [None if v is None else v.hex() for v in values.to_pylist()], pa.string()
            )
    return values.cast(pa.string())
