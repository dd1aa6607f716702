"""Which columns a profile describes, and the :class:`Profile` built from merged sketches (no Beam).

Input columns are :class:`Candidate` objects chosen before the run;
prediction columns are found in the scored batches
(:func:`prediction_candidates`). :func:`build_profile` turns the merged
:class:`keras_batch_score.transforms.drift.sketches.ProfileAccumulator` into
the profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.drift.plan import FEATURE, PREDICTION
from keras_batch_score.transforms.drift.profile_format import (
    CATEGORICAL,
    DEFAULT_NUM_BINS,
    DEFAULT_TOP_K,
    NUMERIC,
    ColumnStats,
    KindRule,
    Profile,
)
from keras_batch_score.transforms.drift.sketches import (
    ProfileAccumulator,
    categorical_stats,
    numeric_stats,
)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A column to profile: its name, where it comes from and its type-level kind.

    ``kind`` is ``numeric``, ``categorical`` or ``integer`` (decided from the
    distinct count once the sketch is complete).
    """

    name: str
    source: str
    column: str
    index: int | None
    kind: str


def prediction_name(output_names: Sequence[str], output: str) -> str:
    """The predictions-file column of a model output (see ``keras_batch_score.transforms.io.output_tables.output_fields``)."""
    return "prediction" if len(output_names) == 1 else f"prediction_{output}"


def prediction_candidates(
    predictions: Mapping[str, np.ndarray], output_names: Sequence[str]
) -> list[Candidate]:
    """Numeric candidates for every model output position of a scored batch."""
    out = []
    for output in output_names:
        if output not in predictions:
            continue
        values = np.asarray(predictions[output])
        base = prediction_name(output_names, output)
        if values.ndim <= 1:
            out.append(Candidate(base, PREDICTION, output, None, NUMERIC))
        elif values.ndim == 2:
            out += [
                Candidate(f"{base}[{j}]", PREDICTION, output, j, NUMERIC)
                for j in range(values.shape[1])
            ]
    return out


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    """Binning and kind settings of a profile run."""

    num_bins: int = DEFAULT_NUM_BINS
    top_k: int = DEFAULT_TOP_K
    rule: KindRule = dataclasses.field(default_factory=KindRule)

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {self.num_bins}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def build_profile(
    acc: ProfileAccumulator,
    candidates: Sequence[Candidate],
    output_names: Sequence[str],
    settings: ProfileSettings,
    metadata: Mapping[str, Any],
) -> Profile:
    """The profile from the merged sketches (columns with no values are skipped)."""
    kinds = {c.name: c.kind for c in candidates}
    features: dict[str, ColumnStats] = {}
    predictions: dict[str, ColumnStats] = {}
    for name, sketch in acc.columns.items():
        kind = kinds.get(name)
        source = FEATURE
        if kind is None:  # a prediction column discovered in the batches
            _prediction_source(name, output_names)  # raises if it matches no model output
            source, kind = PREDICTION, NUMERIC
        if sketch.n == 0:
            continue
        if kind == "integer":
            kind = CATEGORICAL if sketch.values is not None else NUMERIC
        stats: ColumnStats | None
        if kind == CATEGORICAL:
            stats = categorical_stats(sketch, settings.top_k)
        else:
            stats = numeric_stats(sketch, settings.num_bins)
        if stats is not None:
            (features if source == FEATURE else predictions)[name] = stats
    return Profile(features, predictions, acc.rows, dict(metadata))


def _prediction_source(name: str, output_names: Sequence[str]) -> tuple[str, int | None]:
    base, index = name, None
    if name.endswith("]") and "[" in name:
        base, _, rest = name.rpartition("[")
        index = int(rest[:-1])
    for output in output_names:
        if prediction_name(output_names, output) == base:
            return output, index
    raise ValueError(f"prediction column {name!r} matches no model output {list(output_names)}")
