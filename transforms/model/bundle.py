"""The model bundle manifest (``bundle.json``): the feature contract that travels with a model.

A bundle is a directory written by ``batch-score package``: the model file
(or SavedModel directory), the spec files that belong to it (preprocessing,
calibration, reference profile, class names) and ``bundle.json``::

    {"format": "keras-batch-score/bundle@1",
     "version": "model.keras@3f2a9c01b7de",
     "model": {"path": "model.keras", "sha256": "3f2a…", "format": "keras"},
     "features": [{"name": "f0", "dtype": "float32", "input": "x", "width": 1}, …],
     "id_columns": ["id"],
     "preprocess": null, "calibration": "calibration.json",
     "reference_profile": null, "class_names": null, "signature": null,
     "files": {"model.keras": "3f2a…", "calibration.json": "…"},
     "created_at": "2026-11-28T23:40:00Z"}

Paths are relative to the bundle directory. ``files`` holds the sha256 of
every file; ``model.sha256`` is the model's digest as
:func:`keras_batch_score.transforms.io.model_cache.content_hash` computes it (for a file, its
sha256). ``features`` lists the columns in model order with the dtype of the
model input they feed (``null`` when a preprocessing spec reads them).

Everything here is pure: (de)serialization, checks against digests computed
elsewhere and against an input schema.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError

FORMAT = "keras-batch-score/bundle@1"
MANIFEST = "bundle.json"
SPEC_FILES = ("preprocess", "calibration", "reference_profile", "class_names")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One input column of the contract.

    Attributes:
        name: Column name in the input data.
        dtype: dtype of the model input it feeds (numpy name), or ``None`` when
            a preprocessing spec reads the column (the spec checks its type).
        input: Model input name.
        width: Values per row the column holds (1 for a scalar column).
    """

    name: str
    dtype: str | None
    input: str
    width: int = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed ``bundle.json``."""

    version: str
    model: str
    model_sha256: str
    features: tuple[Feature, ...]
    files: Mapping[str, str]
    id_columns: tuple[str, ...] = ()
    model_format: str = ""
    preprocess: str | None = None
    calibration: str | None = None
    reference_profile: str | None = None
    class_names: str | None = None
    signature: str | None = None
    created_at: str = ""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def spec_files(self) -> dict[str, str]:
        """``{setting: relative path}`` of the spec files the bundle holds."""
        return {k: v for k in SPEC_FILES if (v := getattr(self, k))}

    def model_files(self) -> list[str]:
        """The ``files`` entries that make up the model (the file, or the directory's files)."""
        prefix = self.model.rstrip("/") + "/"
        return [f for f in self.files if f == self.model or f.startswith(prefix)]

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "version": self.version,
            "model": {"path": self.model, "sha256": self.model_sha256, "format": self.model_format},
            "features": [dataclasses.asdict(f) for f in self.features],
            "id_columns": list(self.id_columns),
            **{k: getattr(self, k) for k in SPEC_FILES},
            "signature": self.signature,
            "files": dict(sorted(self.files.items())),
            "created_at": self.created_at,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST) -> Manifest:
        """Parses and checks a manifest.

        Raises:
            ConfigError: naming the key that is missing or wrong.
        """
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{where}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ConfigError(
                f"{where}: 'format' is {str(data.get('format'))[:80]!r}, expected {FORMAT!r} "
                "(written by `batch-score package`)"
            )
        model = data.get("model")
        if not isinstance(model, dict):
            raise ConfigError(f"{where}: 'model' must be an object with 'path' and 'sha256'")
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            raise ConfigError(f"{where}: 'files' must map every file to its sha256")
        for rel, sha in files.items():
            _check_rel(rel, where)
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise ConfigError(f"{where}: files[{rel!r}] is not a sha256 hex digest")
        model_path = _check_rel(model.get("path"), where)
        model_sha = model.get("sha256")
        if not isinstance(model_sha, str) or not _HEX64.match(model_sha):
            raise ConfigError(f"{where}: model.sha256 is not a sha256 hex digest")
        features = data.get("features")
        if not isinstance(features, list) or not features:
            raise ConfigError(f"{where}: 'features' must be a non-empty list")
        parsed = []
        for i, f in enumerate(features):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ConfigError(f"{where}: features[{i}] must be an object with a 'name'")
            width = f.get("width", 1)
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ConfigError(f"{where}: features[{i}].width must be a positive integer")
            dtype = f.get("dtype")
            if dtype is not None and not isinstance(dtype, str):
                raise ConfigError(f"{where}: features[{i}].dtype must be a string or null")
            parsed.append(Feature(f["name"], dtype, str(f.get("input") or ""), width))
        names = [f.name for f in parsed]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: 'features' names a column twice")
        ids = data.get("id_columns") or []
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise ConfigError(f"{where}: 'id_columns' must be a list of column names")
        specs = {}
        for key in SPEC_FILES:
            value = data.get(key)
            if value is not None:
                specs[key] = _check_rel(value, where)
                if value not in files:
                    raise ConfigError(f"{where}: {key} {value!r} is not listed in 'files'")
        version = data.get("version")
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{where}: 'version' must be a non-empty string")
        manifest = cls(
            version=version,
            model=model_path,
            model_sha256=model_sha,
            features=tuple(parsed),
            files=dict(files),
            id_columns=tuple(ids),
            model_format=str(model.get("format") or ""),
            signature=data.get("signature") if isinstance(data.get("signature"), str) else None,
            created_at=str(data.get("created_at") or ""),
            **specs,
        )
        if not manifest.model_files():
            raise ConfigError(f"{where}: the model {model_path!r} has no entry in 'files'")
        return manifest


def _check_rel(value: Any, where: str) -> str:
    """A path inside the bundle: relative, forward slashes, no ``..``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a relative file name, got {str(value)[:80]!r}")
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or ":" in value or ".." in parts:
        raise ConfigError(f"{where}: {value[:80]!r} is not a path inside the bundle")
    return value


def default_version(model_name: str, sha256: str) -> str:
    """``<model file name>@<sha256 prefix>``, the same form as an unbundled model's id."""
    return f"{posixpath.basename(model_name.rstrip('/'))}@{sha256[:12]}"


def verify_files(manifest: Manifest, actual: Mapping[str, str], bundle: str) -> None:
    """Compares the manifest's digests with ``actual`` (relative path -> sha256 of the bytes).

    Raises:
        ConfigError: naming the first file whose bytes differ, or that is missing.
    """
    for rel, expected in manifest.files.items():
        if rel not in actual:
            continue
        if actual[rel] != expected:
            raise ConfigError(
                f"bundle {bundle}: file {rel!r} has sha256 {actual[rel][:12]}…, the manifest says "
                f"{expected[:12]}…: the bundle was modified after `batch-score package`; package it again"
            )


def dtype_kind(dtype: str) -> str | None:
    """``float``, ``integer`` or ``bool`` for a numpy dtype name; None if unknown."""
    name = dtype.lower()
    if name.startswith(("float", "bfloat", "half", "double")):
        return "float"
    if name.startswith(("int", "uint")):
        return "integer"
    if name.startswith("bool"):
        return "bool"
    return None


def arrow_kind(t: pa.DataType) -> str | None:
    """The kind of a column's values: lists count as their value type."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_boolean(t):
        return "bool"
    return None


def check_schema(manifest: Manifest, schema: pa.Schema, bundle: str) -> None:
    """Checks the input schema against the bundle's features, by name and dtype kind.

    A column of the same kind as the model input's dtype is accepted (float64
    data for a float32 input, int32 for int64); another kind is not.

    Raises:
        ConfigError: naming the missing or incompatible column.
    """
    names = set(schema.names)
    missing = [f.name for f in manifest.features if f.name not in names]
    if missing:
        raise ConfigError(
            f"the input has no column {missing[0]!r}, a feature of bundle {bundle} "
            f"({manifest.version})"
            + (f" (and {len(missing) - 1} more missing)" if missing[1:] else "")
        )
    for col in manifest.id_columns:
        if col not in names:
            raise ConfigError(
                f"the input has no column {col!r}, an id column of bundle {bundle}; "
                "pass --id-column to choose others"
            )
    for f in manifest.features:
        if f.dtype is None or dtype_kind(f.dtype) is None:
            continue
        t = schema.field(f.name).type
        if arrow_kind(t) != dtype_kind(f.dtype):
            raise ConfigError(
                f"input column {f.name!r} has type {t}, but bundle {bundle} feeds it to model input "
                f"{f.input!r} as {f.dtype}: expected {dtype_kind(f.dtype)} values"
            )


def cut(items: Sequence[str], limit: int = 20) -> str:
    """``a, b, c`` with at most ``limit`` items, then ``… and N more``."""
    head = ", ".join(items[:limit])
    return head + (f" … and {len(items) - limit} more" if len(items) > limit else "")
