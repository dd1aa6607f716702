"""Declarative preprocessing spec: a YAML spec -> validated :class:`PreprocessSpec`.

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

The spec is bound to the input schema and the model by
:mod:`keras_batch_score.transforms.preprocess.plan`, applied to Arrow tables by
:mod:`keras_batch_score.transforms.preprocess.apply` and wrapped for Beam by
:mod:`keras_batch_score.transforms.preprocess.transforms`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import posixpath
from collections.abc import Mapping
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.preprocess import ops

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
class PreprocessFeature:
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

    features: tuple[PreprocessFeature, ...]
    inputs: Mapping[str, tuple[str, ...]] | None
    raw: Mapping[str, Any]

    def feature(self, name: str) -> PreprocessFeature:
        return next(f for f in self.features if f.name == name)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(f.column for f in self.features))

    def needs_fit(self) -> dict[str, list[str]]:
        return {f.name: m for f in self.features if (m := f.needs_fit())}


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


def _parse_feature(name: str, s: Any, where: str, base_dir: str | None) -> PreprocessFeature:
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
    return PreprocessFeature(name, ftype, column, p)


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


def spec_source(value: Any) -> str | Mapping[str, Any] | None:
    """The ``preprocess`` config value as :func:`load_spec` takes it (path or mapping)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, (str, Mapping)):
        return value
    raise ConfigError(f"'preprocess' must be a spec file path or a mapping, got {value!r}")
