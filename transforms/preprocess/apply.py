"""Running a :class:`PreprocessPlan` on one Arrow table (pure numpy / pyarrow / TensorFlow).

:class:`BatchPreprocessor` runs the spec with whole-column calls and splits
off the rows that fail a check (null, out of range, wrong length,
undecodable image) with a reason naming the feature.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

from keras_batch_score.transforms.core.aligned import aligned_empty, as_aligned
from keras_batch_score.transforms.core.arrow import invalid_utf8, readable_text
from keras_batch_score.transforms.core.errors import error_table
from keras_batch_score.transforms.preprocess import ops
from keras_batch_score.transforms.preprocess.plan import PreprocessPlan
from keras_batch_score.transforms.preprocess.spec import PreprocessFeature

STAGE = "preprocess"


class _Problems:
    """Rejected rows of one batch: ``column -> [(row indices, reasons)]``."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self.items: dict[str, list[tuple[np.ndarray, list[str]]]] = {}

    def flag(self, column: str, mask: np.ndarray, reason: Any) -> None:
        """Flags the rows in ``mask``; ``reason`` is a string or ``f(row) -> str``."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        self.bad[idx] = True
        texts = [reason] * idx.size if isinstance(reason, str) else [reason(int(i)) for i in idx]
        self.items.setdefault(column, []).append((idx, texts))

    def errors_table(self, table: pa.Table) -> pa.Table:
        per_row: dict[int, list[tuple[str, str]]] = {}
        for column, chunks in self.items.items():
            for idx, texts in chunks:
                for i, text in zip(idx.tolist(), texts, strict=True):
                    per_row.setdefault(i, []).append((column, text))
        rows = np.array(sorted(per_row), dtype=np.int64)
        return error_table(
            table,
            rows,
            STAGE,
            [per_row[i][0][0] for i in rows.tolist()],
            ["; ".join(t for _, t in per_row[i]) for i in rows.tolist()],
        )


def _fmt(v: float) -> str:
    return repr(float(v))


@dataclasses.dataclass
class Preprocessed:
    """Result of :class:`BatchPreprocessor` on one table."""

    features: dict[str, np.ndarray]  # model inputs, good rows only
    good: np.ndarray | None  # row mask; None when every row is good
    errors: pa.Table | None  # stage 'preprocess' errors for the rejected rows

    @property
    def num_bad(self) -> int:
        return 0 if self.good is None else int((~self.good).sum())


def _text_checked(name: str, column: pa.Array, problems: _Problems) -> pa.Array:
    """Flags the rows of a string column whose bytes are not UTF-8 (shown escaped from here on)."""
    not_utf8 = invalid_utf8(column)
    if not_utf8 is None:
        return column
    problems.flag(name, not_utf8, f"feature {name!r} is not UTF-8 text")
    return readable_text(column)


class BatchPreprocessor:
    """Runs a :class:`PreprocessPlan` on Arrow tables. Create once per worker (builds TF graphs)."""

    def __init__(self, plan: PreprocessPlan) -> None:
        self._plan = plan
        self._decoders = {
            f.name: ops.ImageDecoder(f.get("size"), f.get("resize"), f.get("channels"))
            for f in plan.spec.features
            if f.type == "image"
        }

    def __call__(self, table: pa.Table) -> Preprocessed:
        n = table.num_rows
        problems = _Problems(n)
        outputs: dict[str, np.ndarray] = {}
        for f in self._plan.spec.features:
            column = table.column(f.column).combine_chunks()
            if f.type in ("categorical", "text"):
                column = _text_checked(f.name, column, problems)
            run = {
                "numeric": self._numeric,
                "categorical": self._categorical,
                "text": self._text,
                "image": self._image,
            }[f.type]
            outputs[f.name] = run(f, column, problems)
        features = {}
        for mi in self._plan.inputs:
            parts = [outputs[name] for name in mi.features]
            if len(parts) == 1:
                x = parts[0].reshape((n, *mi.shape))
            else:
                flat = [p.reshape(n, -1) for p in parts]
                x = aligned_empty((n, sum(p.shape[1] for p in flat)), np.result_type(*flat))
                np.concatenate(flat, axis=1, out=x)
                x = x.reshape((n, *mi.shape))
            # Aligned, so the model takes it without a copy (here, off the main thread).
            features[mi.name] = as_aligned(x, mi.dtype)
        if not problems.bad.any():
            return Preprocessed(features, None, None)
        good = ~problems.bad
        return Preprocessed(
            {k: v[good] for k, v in features.items()}, good, problems.errors_table(table)
        )

    # Each op returns the feature's output for every row (placeholder values on bad rows).

    def _numeric(self, f: PreprocessFeature, column: pa.Array, problems: _Problems) -> np.ndarray:
        width = f.width
        x, lengths = ops.numeric_values(column, width)
        name = f.name
        null = lengths < 0
        wrong = (lengths >= 0) & (lengths != width)
        problems.flag(
            name,
            wrong,
            lambda i: f"feature {name!r} has {int(lengths[i])} values, expected {width}",
        )
        fill = f.get("fill_missing")
        if fill is not None:
            x = ops.fill_missing(x, fill)
        else:
            problems.flag(name, null, f"feature {name!r} is null")
            nan_rows = np.isnan(x).any(axis=1) & ~null & ~wrong
            problems.flag(name, nan_rows, f"feature {name!r} is NaN")
        x = np.where(np.isnan(x), 0.0, x) if fill is None else x
        for key, below in (("min", True), ("max", False)):
            bound = f.get(key)
            if bound is None:
                continue
            out = (x < bound) if below else (x > bound)
            rows = out.any(axis=1) & ~wrong & ~null
            word = "below min" if below else "above max"

            def reason(i: int, out: np.ndarray = out, word: str = word, bound: Any = bound) -> str:
                pos = int(np.flatnonzero(out[i])[0])
                at = f" (position {pos})" if width > 1 else ""
                return f"feature {name!r} = {_fmt(x[i, pos])} {word} {bound}{at}"

            problems.flag(name, rows, reason)
        raw = x
        if f.get("log1p"):
            x = ops.log1p(x)
        if f.get("clip") is not None:
            x = ops.clip(x, *f.get("clip"))
        if f.get("standardize") is not None:
            x = ops.standardize(x, f.get("standardize")["mean"], f.get("standardize")["std"])
        elif f.get("min_max") is not None:
            x = ops.min_max(x, f.get("min_max")["min"], f.get("min_max")["max"])
        nonfinite = ~np.isfinite(x).all(axis=1) & ~problems.bad
        problems.flag(
            name,
            nonfinite,
            lambda i: (
                f"feature {name!r} = {_fmt(raw[i][~np.isfinite(x[i])][0])} is not finite after preprocessing"
            ),
        )
        x = x.astype(np.float32)
        return x.reshape(len(x), *f.out_shape) if f.out_shape else x[:, 0]

    def _categorical(
        self, f: PreprocessFeature, column: pa.Array, problems: _Problems
    ) -> np.ndarray:
        name = f.name
        vocab, num_oov = f.get("vocab"), f.get("num_oov")
        idx = ops.lookup_indices(column, vocab, num_oov)
        null = np.asarray(column.is_null()) if column.null_count else np.zeros(len(idx), bool)
        if f.get("required"):
            problems.flag(name, null, f"feature {name!r} is null")
        if num_oov == 0:
            values = column.to_pylist() if (idx < 0).any() else []
            problems.flag(
                name,
                (idx < 0) & ~null,
                lambda i: (
                    f"feature {name!r} = {values[i]!r} is not in the vocabulary (num_oov is 0)"
                ),
            )
        idx = np.where(idx < 0, 0, idx)
        if f.get("output") == "one_hot":
            return ops.one_hot(idx, len(vocab) + num_oov)
        return idx

    def _text(self, f: PreprocessFeature, column: pa.Array, problems: _Problems) -> np.ndarray:
        if column.null_count and f.get("required"):
            problems.flag(f.name, np.asarray(column.is_null()), f"feature {f.name!r} is null")
        return ops.text_to_ids(column, f.get("vocab"), f.get("max_len"))

    def _image(self, f: PreprocessFeature, column: pa.Array, problems: _Problems) -> np.ndarray:
        name = f.name
        n = len(column)
        null = np.asarray(column.is_null()) if column.null_count else np.zeros(n, bool)
        problems.flag(name, null, f"image {name!r} is null")
        present = np.flatnonzero(~null)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.cast(pa.binary())
        data = (column.filter(pa.array(~null)) if null.any() else column).to_numpy(
            zero_copy_only=False
        )
        decoded, failures = self._decoders[name](data)
        if failures:
            mask = np.zeros(n, dtype=bool)
            mask[present[list(failures)]] = True
            by_row = {int(present[k]): msg for k, msg in failures.items()}
            problems.flag(name, mask, lambda i: f"image {name!r} could not be decoded: {by_row[i]}")
        if null.any():
            full = np.zeros((n, *decoded.shape[1:]), dtype=np.float32)
            full[present] = decoded
            decoded = full
        if f.get("channels") == "BGR":
            decoded = ops.flip_channels(decoded)
        return ops.scale_images(decoded, f.get("scale"), f.get("imagenet_mode"))
