"""``batch-score package``: write a model bundle, the model plus its feature contract.

Usage::

    batch-score package --model model.keras --feature-columns a,b,c --id-column id \\
        [--preprocess spec.yaml] [--calibration cal.json] [--reference-profile profile.json] \\
        [--class-names names.txt] [--version LABEL] --output bundle/

The bundle (local or gs://) holds the model, copies of the spec files and
``bundle.json`` (see :mod:`keras_batch_score.transforms.model.bundle`): the ordered feature columns
and the dtypes the model reads them as, the id columns, the version label
written to the ``model`` column, and the sha256 of every file. ``batch-score
score --model bundle/`` uses all of it and verifies every hash first.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import posixpath
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import yaml
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io import model_cache
from keras_batch_score.transforms.model import bundle as bm
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.spec import ModelSpec

# Where each spec file goes in the bundle.
SPEC_NAMES = {
    "preprocess": "preprocess.yaml",
    "calibration": "calibration.json",
    "reference_profile": "reference_profile.json",
    "class_names": "class_names.txt",
}


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from keras_batch_score.pipelines import cli_help

    parser = cli_help.new_parser(
        "package",
        "Write a model bundle: the model, its feature contract and spec files, with hashes.",
        beam=False,
    )
    add = parser.add_argument
    add(
        "--model",
        required=True,
        metavar="PATH",
        help="A .keras or .h5 file or a SavedModel directory.",
    )
    add(
        "--output", required=True, help="Bundle directory to create (local or gs://; new or empty)."
    )
    add(
        "--feature-columns",
        dest="feature_columns",
        type=_csv,
        default=None,
        help="Comma-separated feature columns in model (training) order. Required for a "
        "single-input model without --preprocess; a named-input model defaults to its input names.",
    )
    add(
        "--id-column",
        dest="id_columns",
        action="append",
        default=[],
        help="Passthrough column (repeatable).",
    )
    add("--preprocess", default=None, help="Fitted preprocessing spec YAML (defines the features).")
    add("--calibration", default=None, help="Calibration JSON from `batch-score calibrate`.")
    add(
        "--reference-profile",
        dest="reference_profile",
        default=None,
        help="Profile JSON from `batch-score profile` (drift check when scoring).",
    )
    add("--class-names", dest="class_names", default=None, help="Class names, one per line.")
    add(
        "--version",
        default=None,
        metavar="LABEL",
        help="Version label written to the `model` column (default: <model file>@<sha256 prefix>).",
    )
    add("--signature", default=None, help="SavedModel signature to call.")
    add(
        "--custom-object",
        dest="custom_objects",
        action="append",
        default=[],
        help="module:attr of a custom Keras object needed to load the model (repeatable).",
    )
    add(
        "--unsafe-deserialization",
        dest="unsafe_deserialization",
        action="store_true",
        help="Allow lambda layers in .keras files.",
    )
    group = parser.add_argument_group("console").add_mutually_exclusive_group()
    group.add_argument("--verbose", action="store_true", help="Show every log line.")
    group.add_argument("--quiet", action="store_true", help="Show only errors.")
    cli_help.polish(parser)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- features


def plan_features(
    model: LoadedModel,
    feature_columns: Sequence[str] | None,
    id_columns: Sequence[str],
    preprocess_spec: Any = None,
) -> tuple[bm.Feature, ...]:
    """The bundle's features in model order, checked against the model's inputs.

    Raises:
        ConfigError: for columns that do not fill the model's input width, a
            single-input model without a declared feature list, or overlaps.
    """
    if feature_columns is not None:
        dupes = sorted({c for c in feature_columns if list(feature_columns).count(c) > 1})
        if dupes:
            raise ConfigError(f"--feature-columns lists {bm.cut(dupes)} more than once")
        overlap = sorted(set(feature_columns) & set(id_columns))
        if overlap:
            raise ConfigError(f"columns {bm.cut(overlap)} are both id and feature columns")
    if preprocess_spec is not None:
        if feature_columns is not None:
            raise ConfigError(
                "--preprocess defines the features (its columns, in its order); drop --feature-columns"
            )
        return _preprocess_features(model, preprocess_spec)
    if len(model.inputs) == 1:
        info = model.inputs[0]
        if feature_columns is None:
            raise ConfigError(
                f"the model has one input ({info.name!r}, {info.width or info.shape} values per row), "
                "which cannot tell which column is which: pass --feature-columns in training order"
            )
        if info.width is None:
            raise ConfigError(
                f"model input {info.name!r} has per-row shape {info.shape}: feed it through --preprocess"
            )
        n = len(feature_columns)
        if n == info.width:
            return tuple(bm.Feature(c, info.dtype, info.name, 1) for c in feature_columns)
        if n == 1:  # one list column holds the whole input
            return (bm.Feature(feature_columns[0], info.dtype, info.name, info.width),)
        raise ConfigError(
            f"model input {info.name!r} takes {info.width} values per row, but --feature-columns "
            f"lists {n}: {bm.cut(list(feature_columns))}; list the model's features in training order"
        )
    names = [info.name for info in model.inputs]
    if feature_columns is not None and sorted(feature_columns) != sorted(names):
        raise ConfigError(
            f"the model has named inputs {bm.cut(names)}, each read from the column of the same name; "
            f"--feature-columns {bm.cut(list(feature_columns))} must list exactly those (or leave it out)"
        )
    features = []
    for info in model.inputs:
        if info.width is None:
            raise ConfigError(
                f"model input {info.name!r} has per-row shape {info.shape}: feed it through --preprocess"
            )
        features.append(bm.Feature(info.name, info.dtype, info.name, info.width))
    return tuple(features)


def _preprocess_features(model: LoadedModel, spec: Any) -> tuple[bm.Feature, ...]:
    """Columns a preprocessing spec reads, checked against the model on a schema the spec implies."""
    from keras_batch_score.transforms.preprocess.plan import plan_preprocess

    fields = []
    for f in spec.features:
        if f.type == "numeric":
            t = pa.float64() if f.width == 1 else pa.list_(pa.float64(), f.width)
        else:
            t = pa.binary() if f.type == "image" else pa.string()
        fields.append(pa.field(f.column, t))
    schema = pa.schema(list({fl.name: fl for fl in fields}.values()))
    plan = plan_preprocess(spec, schema, model.inputs)
    out: dict[str, bm.Feature] = {}
    for mi in plan.inputs:
        for name in mi.features:
            f = spec.feature(name)
            out.setdefault(f.column, bm.Feature(f.column, None, mi.name, f.width))
    return tuple(out.values())


def _inline_vocab_files(spec_path: str) -> dict[str, Any]:
    """The spec's YAML with every ``vocab_file`` replaced by its vocabulary, so the bundle is self-contained."""
    from keras_batch_score.transforms.preprocess.spec import load_spec, read_vocab_file

    raw = copy.deepcopy(dict(load_spec(spec_path).raw))
    base = posixpath.dirname(spec_path)
    for settings in (raw.get("features") or {}).values():
        if isinstance(settings, dict) and "vocab_file" in settings:
            path = str(settings.pop("vocab_file"))
            if base and not posixpath.isabs(path) and "://" not in path:
                path = posixpath.join(base, path)
            settings["vocab"] = read_vocab_file(path)
    return raw


# --------------------------------------------------------------------------- files


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with FileSystems.open(path) as f:
            return f.read()
    except Exception as e:
        raise ConfigError(f"{what} {path} cannot be read: {e}") from None


def _spec_bytes(setting: str, path: str, model: LoadedModel) -> bytes:
    """The file's bytes for the bundle, after checking that it parses."""
    if setting == "preprocess":
        return yaml.safe_dump(_inline_vocab_files(path), sort_keys=False).encode()
    data = _read_bytes(path, setting.replace("_", " ") + " file")
    text = data.decode("utf-8", errors="replace")
    if setting == "calibration":
        from keras_batch_score.transforms.postprocess.calibration import Calibration

        try:
            Calibration.from_json(text)
        except ValueError as e:
            raise ConfigError(f"calibration file {path}: {e}") from None
    elif setting == "reference_profile":
        import json

        from keras_batch_score.transforms.drift.profile_format import profile_from_dict

        try:
            profile_from_dict(json.loads(text), path)
        except ValueError as e:
            raise ConfigError(f"reference profile {path}: {e}") from None
    elif setting == "class_names" and not any(line.strip() for line in text.splitlines()):
        raise ConfigError(f"class names file {path} is empty")
    return data


def _check_output(output: str) -> None:
    if model_cache.is_local(output):
        if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
            raise ConfigError(
                f"--output {output} already exists and is not an empty directory; choose a new one"
            )
        return
    if FileSystems.match([FileSystems.join(output.rstrip("/"), "**")])[0].metadata_list:
        raise ConfigError(f"--output {output} already holds files; choose a new location")


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def model_files(local: str, name: str) -> list[tuple[str, str]]:
    """``[(relative path in the bundle, local file)]`` of a model file or SavedModel directory."""
    if not os.path.isdir(local):
        return [(name, local)]
    out = []
    for root, dirs, files in os.walk(local):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            out.append((posixpath.join(name, *os.path.relpath(full, local).split(os.sep)), full))
    return out


# --------------------------------------------------------------------------- command


def package(args: argparse.Namespace) -> dict[str, Any]:
    """Checks everything, then writes the bundle; ``bundle.json`` is written last.

    Returns:
        ``{"bundle", "version", "features", "files"}``.

    Raises:
        ConfigError: before anything is written, for a model or spec file that
            does not fit, or an output that already holds files.
    """
    _check_output(args.output)
    spec = ModelSpec(
        path=args.model,
        custom_objects=tuple(args.custom_objects),
        safe_mode=not args.unsafe_deserialization,
        signature=args.signature,
    )
    model = load(spec)
    local = model_cache.localize(args.model)
    preprocess_spec = None
    if args.preprocess:
        from keras_batch_score.transforms.preprocess.spec import load_spec

        preprocess_spec = load_spec(args.preprocess)
    features = plan_features(model, args.feature_columns, args.id_columns, preprocess_spec)
    specs = {
        setting: (SPEC_NAMES[setting], _spec_bytes(setting, path, model))
        for setting in bm.SPEC_FILES
        if (path := getattr(args, setting))
    }
    name = posixpath.basename(args.model.rstrip("/"))
    if name in {rel for rel, _ in specs.values()} or name == bm.MANIFEST:
        name = f"model-{name}"
    model_sha = model_cache.content_hash(local)
    files: dict[str, str] = {}
    out = args.output.rstrip("/")
    for rel, src in model_files(local, name):
        files[rel] = _copy_hashed(src, FileSystems.join(out, *rel.split("/")))
    for rel, data in specs.values():
        files[rel] = _sha256(data)
        _write(FileSystems.join(out, rel), data)
    manifest = bm.Manifest(
        version=args.version or bm.default_version(name, model_sha),
        model=name,
        model_sha256=model_sha,
        features=features,
        files=files,
        id_columns=tuple(args.id_columns),
        model_format=model.format,
        signature=args.signature,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{setting: rel for setting, (rel, _) in specs.items()},
    )
    _write(FileSystems.join(out, bm.MANIFEST), manifest.to_json().encode())
    return {
        "bundle": args.output,
        "version": manifest.version,
        "features": manifest.feature_names,
        "files": sorted(files),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copy_hashed(src: str, dest: str) -> str:
    """Copies a local file to ``dest`` (any file system); returns the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, FileSystems.create(dest) as fout:
        while chunk := fin.read(8 << 20):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``batch-score package``."""
    from keras_batch_score.pipelines import console

    args = parse_args(argv)
    console.configure("verbose" if args.verbose else "quiet" if args.quiet else "normal")
    result = package(args)
    console.echo(
        f"bundle {result['bundle']}: version {result['version']}; "
        f"{len(result['features'])} feature column(s) in model order: {bm.cut(result['features'])}; "
        f"{len(result['files'])} file(s) with sha256"
    )
    return result
