"""Declarative preprocessing: a YAML spec -> model inputs, with per-row validation.

The spec (``--preprocess FILE`` or a ``preprocess:`` section of the config)
sits next to the model and says, per feature, how a column becomes model
input, exactly as in training::

    features:
      age:    {type: numeric, min: 0, max: 120, fill_missing: mean, log1p: true,
               clip: [0, 10], standardize: {mean: 3.1, std: 0.8}}
      city:   {type: categorical, vocab: [paris, rome], num_oov: 1, output: one_hot}
      review: {type: text, vocab_file: vocab.txt, max_len: 20}
      img:    {type: image, size: [32, 32], channels: RGB, resize: bilinear, scale: 0-1}
    inputs:                 # optional: model input -> features, concatenated in order
      tabular: [age, city]

Numeric steps always run in this order: fill_missing -> range check (min /
max, on the raw value) -> log1p -> clip -> standardize | min_max. Statistics
left out (``standardize: true``, ``fill_missing: mean``, no vocabulary) are
computed by ``batch-score fit-preprocess``; scoring refuses a spec that still
needs fitting.

:class:`BatchPreprocessor` runs the spec on one Arrow table with whole-column
numpy / pyarrow / TensorFlow calls and splits off the rows that fail a check
(null, out of range, wrong length, undecodable image) with a reason naming
the feature. :class:`PreprocessFeatures` wraps it as a Beam transform with
the same outputs as :class:`keras_batch_score.transforms.features.validate.ValidateFeatures`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.utils.windowed_value import WindowedValue

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import ConfigError, error_table, format_names
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.features.layout import FeatureLayout, InputBinding
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.preprocess import ops

STAGE = "preprocess"
TYPES = ("numeric", "categorical", "text", "image")
_COMMON_KEYS = {"type", "column", "required"}
_KEYS = {
    "numeric": _COMMON_KEYS
    | {"shape", "min", "max", "fill_missing", "log1p", "clip", "standardize", "min_max"},
    "categorical": _COMMON_KEYS
    | {"vocab", "vocab_file", "num_oov", "output", "max_tokens", "min_frequency"},
    "text": _COMMON_KEYS | {"vocab", "vocab_file", "max_len", "max_tokens", "min_frequency"},
    "image": _COMMON_KEYS | {"size", "channels", "resize", "scale", "imagenet_mode"},
}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature of the spec, validated. ``params`` holds the type's settings."""

    name: str
    type: str
    column: str
    params: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Per-row shape of this feature's output."""
        p = self.params
        if self.type == "numeric":
            return tuple(p.get("shape", ()))
        if self.type == "categorical":
            return (len(p["vocab"]) + p["num_oov"],) if p["output"] == "one_hot" else ()
        if self.type == "text":
            return (p["max_len"],)
        h, w = p["size"]
        return (h, w, 1 if p["channels"] == "grayscale" else 3)

    @property
    def out_size(self) -> int:
        return int(math.prod(self.out_shape)) if self.out_shape else 1

    @property
    def width(self) -> int:
        """Values per row the input column must hold (numeric vectors)."""
        shape = self.params.get("shape", ())
        return int(math.prod(shape)) if shape else 1

    def needs_fit(self) -> list[str]:
        """The statistics this feature still lacks."""
        p = self.params
        missing = []
        if p.get("fill_missing") == "mean":
            missing.append("fill_missing mean")
        for op, keys in (("standardize", ("mean", "std")), ("min_max", ("min", "max"))):
            if op in p and any(k not in p[op] for k in keys):
                missing.append(op)
        if self.type in ("categorical", "text") and p.get("vocab") is None:
            missing.append("vocab")
        return missing


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """The whole spec: features in order and the optional model-input assembly."""

    features: tuple[FeatureSpec, ...]
    inputs: Mapping[str, tuple[str, ...]] | None
    raw: Mapping[str, Any]

    def feature(self, name: str) -> FeatureSpec:
        return next(f for f in self.features if f.name == name)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(f.column for f in self.features))

    def needs_fit(self) -> dict[str, list[str]]:
        return {f.name: m for f in self.features if (m := f.needs_fit())}


# --------------------------------------------------------------------------- loading


def load_spec(source: str | Mapping[str, Any], *, base_dir: str | None = None) -> PreprocessSpec:
    """Reads and validates a spec from a YAML file path or an already-parsed mapping.

    ``vocab_file`` paths are relative to the spec file (or ``base_dir``).

    Raises:
        ConfigError: naming the feature and the key that is wrong.
    """
    if isinstance(source, str):
        raw = read_yaml(source, "preprocessing spec")
        base_dir = base_dir or posixpath.dirname(source)
        where = source
    else:
        raw = copy.deepcopy(dict(source))
        where = "preprocess"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'features', got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"features", "inputs"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected 'features' and 'inputs'")
    feats = raw.get("features")
    if not isinstance(feats, Mapping) or not feats:
        raise ConfigError(f"{where}: 'features' must be a non-empty mapping of name -> settings")
    features = tuple(
        _parse_feature(str(name), settings, where, base_dir) for name, settings in feats.items()
    )
    inputs = raw.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ConfigError(f"{where}: 'inputs' must map model input names to lists of features")
        parsed: dict[str, tuple[str, ...]] = {}
        for name, members in inputs.items():
            members = [members] if isinstance(members, str) else members
            if not isinstance(members, list) or not members:
                raise ConfigError(
                    f"{where}: inputs.{name} must be a non-empty list of features, got {members!r}"
                )
            for m in members:
                if m not in feats:
                    raise ConfigError(
                        f"{where}: inputs.{name} names feature {m!r}, which is not in 'features' "
                        f"({', '.join(map(str, feats))})"
                    )
            parsed[str(name)] = tuple(str(m) for m in members)
        inputs = parsed
    return PreprocessSpec(features, inputs, raw)


def read_vocab_file(path: str) -> list[str]:
    """One token per line (trailing newline characters removed, empty lines kept out)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            lines = f.read().decode("utf-8").splitlines()
    except Exception as e:
        raise ConfigError(f"vocabulary file {path} cannot be read: {e}") from None
    return [line for line in lines if line != ""]


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}: expected a number, got {value!r}")
    return value


def _parse_feature(name: str, s: Any, where: str, base_dir: str | None) -> FeatureSpec:
    w = f"{where}: feature {name!r}"
    if not isinstance(s, Mapping):
        raise ConfigError(f"{w}: expected a mapping of settings, got {s!r}")
    ftype = s.get("type")
    if ftype not in TYPES:
        raise ConfigError(f"{w}: 'type' must be one of {list(TYPES)}, got {ftype!r}")
    unknown = sorted(set(s) - _KEYS[ftype])
    if unknown:
        raise ConfigError(
            f"{w}: unknown key(s) {unknown} for a {ftype} feature; known: {sorted(_KEYS[ftype])}"
        )
    p: dict[str, Any] = {"required": bool(s.get("required", True))}
    column = str(s.get("column", name))
    if ftype == "numeric":
        _parse_numeric(s, p, w)
        if not p["required"] and "fill_missing" not in p:
            raise ConfigError(f"{w}: 'required: false' needs 'fill_missing' (a number or 'mean')")
    elif ftype in ("categorical", "text"):
        _parse_vocab(s, p, w, base_dir, text=ftype == "text")
    else:
        _parse_image(s, p, w)
        if not p["required"]:
            raise ConfigError(f"{w}: an image feature is always required")
    return FeatureSpec(name, ftype, column, p)


def _parse_numeric(s: Mapping[str, Any], p: dict[str, Any], w: str) -> None:
    shape = s.get("shape", [])
    shape = [shape] if isinstance(shape, int) and not isinstance(shape, bool) else shape
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ConfigError(f"{w}: 'shape' must be a list of positive integers, got {shape!r}")
    p["shape"] = () if shape in ([], [1]) else tuple(shape)
    for key in ("min", "max"):
        if s.get(key) is not None:
            p[key] = _num(s[key], f"{w}: {key!r}")
    if "min" in p and "max" in p and p["min"] > p["max"]:
        raise ConfigError(f"{w}: min {p['min']} is above max {p['max']}")
    fill = s.get("fill_missing")
    if fill is not None:
        if fill == "mean":
            p["fill_missing"] = "mean"
        elif isinstance(fill, Mapping) and set(fill) in ({"value"}, {"mean"}):
            p["fill_missing"] = float(_num(next(iter(fill.values())), f"{w}: fill_missing"))
        else:
            p["fill_missing"] = float(_num(fill, f"{w}: 'fill_missing' (a number or 'mean')"))
    if s.get("log1p"):
        p["log1p"] = True
    if s.get("clip") is not None:
        c = s["clip"]
        if isinstance(c, Mapping):
            c = [c.get("min"), c.get("max")]
        if not isinstance(c, list) or len(c) != 2 or all(v is None for v in c):
            raise ConfigError(f"{w}: 'clip' must be [min, max] (either may be null), got {c!r}")
        p["clip"] = tuple(None if v is None else _num(v, f"{w}: clip") for v in c)
    if "standardize" in s and "min_max" in s:
        raise ConfigError(f"{w}: use either 'standardize' or 'min_max', not both")
    for op, keys in (("standardize", ("mean", "std")), ("min_max", ("min", "max"))):
        if op not in s or s[op] is False or s[op] is None:
            continue
        value = s[op]
        if value is True:
            value = {}
        if not isinstance(value, Mapping) or not set(value) <= set(keys):
            raise ConfigError(
                f"{w}: {op!r} must be true (fit it) or {{{keys[0]}: ..., {keys[1]}: ...}}, got {value!r}"
            )
        p[op] = {k: float(_num(v, f"{w}: {op}.{k}")) for k, v in value.items()}
        if op == "standardize" and p[op].get("std", 1.0) <= 0:
            raise ConfigError(f"{w}: standardize std must be > 0, got {p[op]['std']}")
        if op == "min_max" and len(p[op]) == 2 and p[op]["max"] <= p[op]["min"]:
            raise ConfigError(f"{w}: min_max max must be above min, got {p[op]}")


def _parse_vocab(
    s: Mapping[str, Any], p: dict[str, Any], w: str, base_dir: str | None, *, text: bool
) -> None:
    if "vocab" in s and "vocab_file" in s:
        raise ConfigError(f"{w}: use either 'vocab' or 'vocab_file', not both")
    vocab = s.get("vocab")
    if "vocab_file" in s:
        path = str(s["vocab_file"])
        if base_dir and not posixpath.isabs(path) and "://" not in path:
            path = posixpath.join(base_dir, path)
        vocab = read_vocab_file(path)
    if vocab is not None:
        if not isinstance(vocab, list) or not vocab:
            raise ConfigError(f"{w}: 'vocab' must be a non-empty list, got {vocab!r}")
        if text:
            vocab = ops.text_vocabulary([str(v) for v in vocab])
        if len(set(vocab)) != len(vocab):
            raise ConfigError(f"{w}: the vocabulary has duplicate entries")
    p["vocab"] = vocab
    for key in ("max_tokens", "min_frequency"):
        if key in s:
            value = s[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{w}: {key!r} must be a positive integer, got {value!r}")
            p[key] = value
    if text:
        max_len = s.get("max_len")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(f"{w}: 'max_len' must be a positive integer, got {max_len!r}")
        p["max_len"] = max_len
        return
    num_oov = s.get("num_oov", 1)
    if isinstance(num_oov, bool) or not isinstance(num_oov, int) or num_oov < 0:
        raise ConfigError(f"{w}: 'num_oov' must be an integer >= 0, got {num_oov!r}")
    p["num_oov"] = num_oov
    output = s.get("output", "index")
    if output not in ("index", "one_hot"):
        raise ConfigError(f"{w}: 'output' must be 'index' or 'one_hot', got {output!r}")
    p["output"] = output
    if not p["required"] and num_oov == 0:
        raise ConfigError(f"{w}: 'required: false' needs num_oov >= 1 (nulls get OOV index 0)")


def _parse_image(s: Mapping[str, Any], p: dict[str, Any], w: str) -> None:
    size = s.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)
    ):
        raise ConfigError(f"{w}: 'size' must be [height, width], got {size!r}")
    p["size"] = tuple(size)
    channels = str(s.get("channels", "RGB"))
    if channels.upper() in ("RGB", "BGR"):
        channels = channels.upper()
    elif channels != "grayscale":
        raise ConfigError(f"{w}: 'channels' must be RGB, BGR or grayscale, got {channels!r}")
    p["channels"] = channels
    method = s.get("resize", "bilinear")
    if method not in ops.RESIZE_METHODS:
        raise ConfigError(
            f"{w}: 'resize' must be one of {list(ops.RESIZE_METHODS)}, got {method!r}"
        )
    p["resize"] = method
    scale = str(s.get("scale", "0-1"))
    if scale not in ops.SCALES:
        raise ConfigError(f"{w}: 'scale' must be one of {list(ops.SCALES)}, got {scale!r}")
    p["scale"] = scale
    mode = s.get("imagenet_mode", "caffe")
    if mode not in ops.IMAGENET_MODES:
        raise ConfigError(
            f"{w}: 'imagenet_mode' must be one of {list(ops.IMAGENET_MODES)}, got {mode!r}"
        )
    if scale == "imagenet" and channels == "grayscale":
        raise ConfigError(f"{w}: imagenet scaling needs 3 channels, not grayscale")
    p["imagenet_mode"] = mode


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class ModelInputPlan:
    """Which features (in order) make one model input, and its per-row shape and dtype."""

    name: str
    features: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class PreprocessPlan:
    """A fitted spec bound to the input schema and the model's inputs."""

    spec: PreprocessSpec
    inputs: tuple[ModelInputPlan, ...]

    def layout(self) -> FeatureLayout:
        """The equivalent :class:`FeatureLayout` (source columns and widths per model input)."""
        bindings = []
        for mi in self.inputs:
            feats = [self.spec.feature(f) for f in mi.features]
            bindings.append(
                InputBinding(
                    mi.name,
                    tuple(f.column for f in feats),
                    tuple(f.out_size for f in feats),
                    mi.shape,
                    mi.dtype,
                )
            )
        return FeatureLayout(tuple(bindings))


_ALLOWED_COLUMN_TYPES = {
    "numeric": "numbers or lists of numbers",
    "categorical": "strings, bytes or integers",
    "text": "strings or bytes",
    "image": "bytes (encoded PNG/JPEG) or strings",
}


def _column_ok(ftype: str, t: pa.DataType) -> bool:
    stringy = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
    stringy = stringy or pa.types.is_large_binary(t)
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    if ftype == "numeric":
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            vt = t.value_type
            return pa.types.is_integer(vt) or pa.types.is_floating(vt)
        return numeric or pa.types.is_decimal(t)
    if ftype == "categorical":
        return stringy or pa.types.is_integer(t)
    return stringy


def check_columns(spec: PreprocessSpec, schema: pa.Schema) -> None:
    """Raises ConfigError if a feature's column is missing or has a type the feature cannot read."""
    for f in spec.features:
        if f.column not in schema.names:
            raise ConfigError(
                f"preprocessing feature {f.name!r} reads column {f.column!r}, which is not in the input; "
                f"columns are {format_names(schema.names)}"
            )
        t = schema.field(f.column).type
        if not _column_ok(f.type, t):
            raise ConfigError(
                f"preprocessing feature {f.name!r} ({f.type}) reads column {f.column!r} of type {t}; "
                f"expected {_ALLOWED_COLUMN_TYPES[f.type]}"
            )
        if f.type == "numeric" and pa.types.is_fixed_size_list(t) and t.list_size != f.width:
            raise ConfigError(
                f"preprocessing feature {f.name!r} expects {f.width} values per row (shape "
                f"{list(f.get('shape'))}), but column {f.column!r} holds {t.list_size}"
            )


def plan_preprocess(
    spec: PreprocessSpec, schema: pa.Schema, model_inputs: Sequence[TensorInfo]
) -> PreprocessPlan:
    """Binds ``spec`` to the input columns and the model's inputs; no data is read.

    Raises:
        ConfigError: if the spec still needs fitting, a column is missing or
            has the wrong type, or a model input's shape does not match what
            its features produce.
    """
    unfitted = spec.needs_fit()
    if unfitted:
        listing = "; ".join(f"{name}: {', '.join(m)}" for name, m in unfitted.items())
        raise ConfigError(
            f"the preprocessing spec still needs fitting ({listing}); run "
            "`batch-score fit-preprocess --input <training data> --spec <spec> --output fitted.yaml` "
            "and score with the fitted spec"
        )
    check_columns(spec, schema)
    names = [f.name for f in spec.features]
    if spec.inputs is not None:
        assembly = dict(spec.inputs)
    elif len(model_inputs) == 1:
        assembly = {model_inputs[0].name: tuple(names)}
    else:
        assembly = {info.name: (info.name,) for info in model_inputs}
        missing = [n for n in assembly if n not in names]
        if missing:
            raise ConfigError(
                f"the model has inputs {list(assembly)}; the preprocessing spec has no feature named "
                f"{missing} (name them, or map inputs to features with 'inputs:')"
            )
    model_names = [info.name for info in model_inputs]
    if sorted(assembly) != sorted(model_names):
        raise ConfigError(
            f"the preprocessing spec's inputs {sorted(assembly)} do not match the model's inputs "
            f"{sorted(model_names)}"
        )
    plans = []
    for info in model_inputs:
        if any(d is None for d in info.shape):
            raise ConfigError(
                f"model input {info.name!r} has an unknown dimension in shape {info.shape}; "
                "only fixed-size inputs can be fed"
            )
        shape = tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
        feats = [spec.feature(n) for n in assembly[info.name]]
        given = sum(f.out_size for f in feats)
        expected = int(math.prod(shape)) if shape else 1
        if given != expected:
            parts = ", ".join(f"{f.name} {list(f.out_shape)}" for f in feats)
            raise ConfigError(
                f"model input {info.name!r} expects shape {list(shape)} ({expected} values per row), "
                f"but the preprocessing spec gives {given}: {parts}"
            )
        plans.append(ModelInputPlan(info.name, tuple(f.name for f in feats), shape, info.dtype))
    return PreprocessPlan(spec, tuple(plans))


# --------------------------------------------------------------------------- running


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
                x = np.concatenate([p.reshape(n, -1) for p in parts], axis=1).reshape(
                    (n, *mi.shape)
                )
            features[mi.name] = x.astype(mi.dtype, copy=False)
        if not problems.bad.any():
            return Preprocessed(features, None, None)
        good = ~problems.bad
        return Preprocessed(
            {k: v[good] for k, v in features.items()}, good, problems.errors_table(table)
        )

    # Each op returns the feature's output for every row (placeholder values on bad rows).

    def _numeric(self, f: FeatureSpec, column: pa.Array, problems: _Problems) -> np.ndarray:
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

    def _categorical(self, f: FeatureSpec, column: pa.Array, problems: _Problems) -> np.ndarray:
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

    def _text(self, f: FeatureSpec, column: pa.Array, problems: _Problems) -> np.ndarray:
        if column.null_count and f.get("required"):
            problems.flag(f.name, np.asarray(column.is_null()), f"feature {f.name!r} is null")
        return ops.text_to_ids(column, f.get("vocab"), f.get("max_len"))

    def _image(self, f: FeatureSpec, column: pa.Array, problems: _Problems) -> np.ndarray:
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


class PreprocessDoFn(beam.DoFn):
    """Arrow table -> :class:`ScoringBatch` of the good rows, plus an errors table on ``errors``.

    With image features, a batch's preprocessing runs on a background thread
    while the fused steps downstream (inference, writing) handle the previous
    batch, as a ``tf.data`` prefetch would: at most one batch is in flight,
    and the last one is emitted in ``finish_bundle``.
    """

    ERRORS = "errors"

    def __init__(self, plan: PreprocessPlan, keep_columns: Sequence[str]) -> None:
        self._plan = plan
        self._keep = list(keep_columns)

    def setup(self) -> None:
        self._run = BatchPreprocessor(self._plan)
        self._rejected = beam.metrics.Metrics.counter("keras_batch_score", "rows_rejected")
        overlap = any(f.type == "image" for f in self._plan.spec.features)
        self._pool = ThreadPoolExecutor(1, "preprocess") if overlap else None
        self._pending: tuple[pa.Table, Future, Any, Any] | None = None

    def start_bundle(self) -> None:
        self._pending = None

    def process(
        self,
        table: pa.Table,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterable[Any]:
        if self._pool is None:
            yield from self._outputs(table, self._run(table))
            return
        future = self._pool.submit(self._run, table)
        if self._pending is not None:
            yield from self._emit_pending()
        self._pending = (table, future, window, timestamp)

    def finish_bundle(self) -> Iterable[Any]:
        if self._pending is not None:
            yield from self._emit_pending()

    def teardown(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)

    def _emit_pending(self) -> Iterable[Any]:
        table, future, window, timestamp = self._pending  # type: ignore[misc]
        self._pending = None
        for out in self._outputs(table, future.result()):
            if isinstance(out, pvalue.TaggedOutput):
                yield pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
            else:
                yield WindowedValue(out, timestamp, [window])

    def _outputs(self, table: pa.Table, result: Preprocessed) -> Iterable[Any]:
        kept = table.select(self._keep)
        if result.good is not None:
            self._rejected.inc(result.num_bad)
            yield pvalue.TaggedOutput(self.ERRORS, result.errors)
            kept = kept.filter(pa.array(result.good))
        yield ScoringBatch(table=kept, features=result.features, rows_rejected=result.num_bad)


class PreprocessFeatures(beam.PTransform):
    """Arrow tables -> (ScoringBatch of preprocessed good rows, errors tables).

    A drop-in replacement for :class:`keras_batch_score.transforms.features.validate.ValidateFeatures`.

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors``.
    """

    def __init__(self, plan: PreprocessPlan, keep_columns: Sequence[str]) -> None:
        super().__init__()
        if not plan.inputs:
            raise ValueError("the preprocessing plan has no model inputs")
        self._plan = plan
        self._keep = list(keep_columns)

    def expand(self, tables: beam.PCollection) -> pvalue.DoOutputsTuple:
        return tables | "PreprocessAndCheck" >> beam.ParDo(
            PreprocessDoFn(self._plan, self._keep)
        ).with_output_types(ScoringBatch, errors=pa.Table).with_outputs(
            PreprocessDoFn.ERRORS, main="batches"
        )


def spec_source(value: Any) -> str | Mapping[str, Any] | None:
    """The ``preprocess`` config value as :func:`load_spec` takes it (path or mapping)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, (str, Mapping)):
        return value
    raise ConfigError(f"'preprocess' must be a spec file path or a mapping, got {value!r}")


def plan_from_config(
    value: Any, schema: pa.Schema, model_inputs: Sequence[TensorInfo]
) -> PreprocessPlan | None:
    """The plan for the ``preprocess`` config value, or ``None`` when no spec is configured."""
    source = spec_source(value)
    return None if source is None else plan_preprocess(load_spec(source), schema, model_inputs)
