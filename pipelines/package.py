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
import dataclasses
import hashlib
import os
import posixpath
import time
from collections.abc import Sequence
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.pipelines import cli_help, console
from keras_batch_score.pipelines.command import (
    Command,
    Job,
    Parsed,
    add_console_flags,
    pop_console_flags,
)
from keras_batch_score.pipelines.config import ScoreConfig
from keras_batch_score.pipelines.planning.bundle import plan_bundle_features
from keras_batch_score.pipelines.planning.models import plan_models
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io import model_cache
from keras_batch_score.transforms.model import bundle as bm
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel

# Where each spec file goes in the bundle.
SPEC_NAMES = {
    "preprocess": "preprocess.yaml",
    "calibration": "calibration.json",
    "reference_profile": "reference_profile.json",
    "class_names": "class_names.txt",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from keras_batch_score.pipelines.options import add_flag

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
    add_flag(
        parser,
        "output",
        required=True,
        help="Bundle directory to create (local or gs://; new or empty).",
    )
    add_flag(
        parser,
        "feature_columns",
        help="Comma-separated feature columns in model (training) order. Required for a "
        "single-input model without --preprocess; a named-input model defaults to its input names.",
    )
    add_flag(parser, "id_columns", help="Passthrough column (repeatable).")
    add_flag(parser, "preprocess", help="Fitted preprocessing spec YAML (defines the features).")
    add_flag(parser, "calibration", help="Calibration JSON from `batch-score calibrate`.")
    add_flag(
        parser,
        "reference_profile",
        help="Profile JSON from `batch-score profile` (drift check when scoring).",
    )
    add_flag(parser, "class_names", help="Class names, one per line.")
    add(
        "--version",
        default=None,
        metavar="LABEL",
        help="Version label written to the `model` column (default: <model file>@<sha256 prefix>).",
    )
    add_flag(parser, "signature", help="SavedModel signature to call.")
    add_flag(
        parser,
        "custom_objects",
        help="module:attr of a custom Keras object needed to load the model (repeatable).",
    )
    add_flag(parser, "unsafe_deserialization", help="Allow lambda layers in .keras files.")
    add_console_flags(parser)
    cli_help.polish(parser)
    return parser.parse_args(argv)


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


@dataclasses.dataclass(frozen=True)
class BundlePlan:
    """Everything checked before the bundle is written: the model, its features and spec files."""

    args: argparse.Namespace
    model: LoadedModel = dataclasses.field(compare=False, repr=False)
    local: str  # the local copy of the model
    features: tuple[bm.Feature, ...]
    specs: dict[str, tuple[str, bytes]]  # setting -> (name in the bundle, bytes)
    name: str  # the model's name in the bundle


def plan(args: argparse.Namespace) -> BundlePlan:
    """Checks the output, loads the model and reads every spec file; writes nothing.

    Raises:
        ConfigError: for a model or spec file that does not fit, or an output
            that already holds files.
    """
    _check_output(args.output)
    models = plan_models(
        ScoreConfig(
            model=[args.model],
            input="",
            output=args.output,
            custom_objects=list(args.custom_objects),
            unsafe_deserialization=args.unsafe_deserialization,
            signature=args.signature,
        ),
        bundles=False,  # a bare model is packaged
    )
    model = load(models.spec)
    local = model_cache.localize(args.model)
    preprocess_spec = None
    if args.preprocess:
        from keras_batch_score.transforms.preprocess.spec import load_spec

        preprocess_spec = load_spec(args.preprocess)
    features = plan_bundle_features(model, args.feature_columns, args.id_columns, preprocess_spec)
    specs = {
        setting: (SPEC_NAMES[setting], _spec_bytes(setting, path, model))
        for setting in bm.SPEC_FILES
        if (path := getattr(args, setting))
    }
    name = posixpath.basename(args.model.rstrip("/"))
    if name in {rel for rel, _ in specs.values()} or name == bm.MANIFEST:
        name = f"model-{name}"
    return BundlePlan(args, model, local, features, specs, name)


def write_bundle(plan: BundlePlan) -> dict[str, Any]:
    """Writes the model files, the spec files and, last, ``bundle.json``.

    Returns:
        ``{"bundle", "version", "features", "files"}``.
    """
    args, name = plan.args, plan.name
    model_sha = model_cache.content_hash(plan.local)
    files: dict[str, str] = {}
    out = args.output.rstrip("/")
    for rel, src in model_files(plan.local, name):
        files[rel] = _copy_hashed(src, FileSystems.join(out, *rel.split("/")))
    for rel, data in plan.specs.values():
        files[rel] = _sha256(data)
        _write(FileSystems.join(out, rel), data)
    manifest = bm.Manifest(
        version=args.version or bm.default_version(name, model_sha),
        model=name,
        model_sha256=model_sha,
        features=plan.features,
        files=files,
        id_columns=tuple(args.id_columns),
        model_format=plan.model.format,
        signature=args.signature,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{setting: rel for setting, (rel, _) in plan.specs.items()},
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


class PackageCommand(Command[argparse.Namespace, BundlePlan]):
    """``batch-score package``: no Beam pipeline; writing the bundle is the run step."""

    name = "package"
    beam = False

    def parse(self, argv: Sequence[str]) -> Parsed[argparse.Namespace]:
        args = parse_args(argv)
        verbosity, _ = pop_console_flags(args)
        return Parsed(args, (), verbosity)

    def plan(self, config: argparse.Namespace) -> BundlePlan:
        return plan(config)

    def execute(self, plan: BundlePlan, job: Job) -> dict[str, Any] | None:
        return write_bundle(plan)

    def report(self, plan: BundlePlan, job: Job, outcome: dict[str, Any] | None) -> dict[str, Any]:
        result = outcome or {}
        console.echo(
            f"bundle {result['bundle']}: version {result['version']}; "
            f"{len(result['features'])} feature column(s) in model order: {bm.cut(result['features'])}; "
            f"{len(result['files'])} file(s) with sha256"
        )
        return result


COMMAND = PackageCommand()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``batch-score package``."""
    return COMMAND.run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.package``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
