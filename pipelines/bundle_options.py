"""Scoring a model bundle (``--model BUNDLE/``) and pinning a bare model (``--model-sha256``).

:func:`apply_bundle` is the one place where a bundle's manifest becomes
scoring settings. Every file's sha256 is verified first (the model's on the
local copy that is loaded: :func:`keras_batch_score.transforms.model.load.load` checks
``ModelSpec.sha256``). Settings given explicitly (flags or the YAML config)
override the bundle's, and the run says so on the console.

:func:`feature_source` names where the feature list came from, for the
console and ``run_summary.json``: ``flag``, ``bundle``, ``preprocess``,
``model_input_names`` or ``file_order``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io import model_cache
from keras_batch_score.transforms.model import bundle as bm

if TYPE_CHECKING:
    from keras_batch_score.pipelines.planning.models import Member

# ScoreConfig fields a bundle fills when they are not set explicitly.
BUNDLE_SETTINGS = (
    "feature_columns",  # from the features (single-input models)
    "id_columns",
    "preprocess",
    "calibration",
    "reference_profile",
    "class_names",
    "signature",
)
_FLAGS = {"id_columns": "--id-column"}


@dataclasses.dataclass(frozen=True)
class BundleUse:
    """A bundle a run scores with.

    Attributes:
        path: The bundle directory as given.
        manifest: Its verified manifest.
        overridden: ScoreConfig fields set explicitly, which win over the bundle.
    """

    path: str
    manifest: bm.Manifest
    overridden: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        """One console line per bundle setting an explicit setting replaces."""
        return [
            f"bundle {self.manifest.version}: {_FLAGS.get(k, '--' + k.replace('_', '-'))} "
            f"overrides the bundle's {k.replace('_', ' ')}"
            for k in self.overridden
        ]


def is_bundle(path: str) -> bool:
    """Whether ``path`` is a bundle directory (holds ``bundle.json``)."""
    if not isinstance(path, str) or path.lower().endswith((".keras", ".h5", ".hdf5")):
        return False
    try:
        return FileSystems.exists(FileSystems.join(path.rstrip("/"), bm.MANIFEST))
    except Exception:  # an unknown scheme or an unreachable bucket: not a bundle here
        return False


def read_manifest(path: str) -> bm.Manifest:
    """Reads and parses ``<path>/bundle.json``."""
    where = FileSystems.join(path.rstrip("/"), bm.MANIFEST)
    try:
        with FileSystems.open(where) as f:
            text = f.read().decode("utf-8")
    except Exception as e:
        raise ConfigError(f"bundle manifest {where} cannot be read: {e}") from None
    return bm.Manifest.from_json(text, where)


def verify_bundle(path: str, manifest: bm.Manifest) -> None:
    """Checks the sha256 of every file of the bundle.

    A remote bundle's model files are checked on the local copy when the model
    is loaded (``ModelSpec.sha256``), so they are not downloaded twice.

    Raises:
        ConfigError: naming a missing or modified file.
    """
    base = path.rstrip("/")
    skip = set() if model_cache.is_local(base) else set(manifest.model_files())
    actual = {}
    for rel in manifest.files:
        if rel in skip:
            continue
        full = FileSystems.join(base, *rel.split("/"))
        try:
            actual[rel] = model_cache.sha256_of(full)
        except Exception:
            raise ConfigError(f"bundle {path}: file {rel!r} is missing or unreadable") from None
        bm.verify_files(manifest, {rel: actual[rel]}, path)


def _is_default(config: Any, key: str) -> bool:
    field = next(f for f in dataclasses.fields(config) if f.name == key)
    factory = field.default_factory
    default = factory() if factory is not dataclasses.MISSING else field.default
    return getattr(config, key) == default


def apply_bundle(config: Any, members: Sequence[Member]) -> tuple[Any, BundleUse | None]:
    """Maps a bundle named by ``--model`` (one of ``members``) into the scoring settings.

    Returns:
        ``(config, None)`` unchanged when the model is not a bundle, else a new
        config with the model file, features, id columns, spec files and hash
        filled in from the manifest (explicit settings win), and the bundle.

    Raises:
        ConfigError: for a bundle in an ensemble, with --model-sha256, or with
            a file whose hash does not match.
    """
    bundles = [m for m in members if is_bundle(m.path)]
    if not bundles:
        return config, None
    if len(members) > 1:
        raise ConfigError(
            f"model {bundles[0].path} is a bundle: a bundle is scored on its own, not in an ensemble"
        )
    path = bundles[0].path
    if config.model_sha256:
        raise ConfigError(
            f"--model-sha256 pins a bare model file; bundle {path} pins its own hashes: drop the flag"
        )
    manifest = read_manifest(path)
    verify_bundle(path, manifest)
    base = path.rstrip("/")

    def inside(rel: str | None) -> str | None:
        return None if rel is None else FileSystems.join(base, *rel.split("/"))

    values: dict[str, Any] = {
        "id_columns": list(manifest.id_columns),
        "preprocess": inside(manifest.preprocess),
        "calibration": inside(manifest.calibration),
        "reference_profile": inside(manifest.reference_profile),
        "class_names": inside(manifest.class_names),
        "signature": manifest.signature,
        # Named inputs read the columns of their names; a single input reads the list.
        "feature_columns": (
            manifest.feature_names
            if manifest.preprocess is None and len({f.input for f in manifest.features}) == 1
            else None
        ),
    }
    overridden = tuple(
        k
        for k in BUNDLE_SETTINGS
        if not _is_default(config, k)
        and getattr(config, k) != values[k]
        and (values[k] or k in ("feature_columns", "preprocess"))
    )
    updates = {k: v for k, v in values.items() if _is_default(config, k)}
    if "feature_columns" in overridden:  # the flag's list replaces the spec too
        updates.pop("preprocess", None)
    if "preprocess" in overridden:
        updates.pop("feature_columns", None)
    new = dataclasses.replace(
        config,
        model=[inside(manifest.model)],
        model_sha256=manifest.model_sha256,
        **updates,
    )
    return new, BundleUse(path, manifest, overridden)


def check_input(use: BundleUse | None, schema: pa.Schema) -> None:
    """Checks the input schema against the bundle's features (names, dtype kinds) and id columns."""
    if use is None or {"feature_columns", "preprocess"} & set(use.overridden):
        return
    manifest = use.manifest
    if "id_columns" in use.overridden:
        manifest = dataclasses.replace(manifest, id_columns=())
    bm.check_schema(manifest, schema, use.path)


def pin_model(spec: Any, config: Any, use: BundleUse | None) -> Any:
    """The primary ModelSpec with the pinned hash and, for a bundle, its version label."""
    return dataclasses.replace(
        spec,
        sha256=config.model_sha256.lower() if config.model_sha256 else None,
        model_id=use.manifest.version if use is not None else None,
    )


def feature_source(
    config: Any, use: BundleUse | None, model_inputs: Sequence[Any], columns: Sequence[str]
) -> str:
    """Where the feature list came from: flag, bundle, preprocess, model_input_names or file_order."""
    if use is not None and not {"feature_columns", "preprocess"} & set(use.overridden):
        return "bundle"
    if config.preprocess:
        return "preprocess"
    if config.feature_columns is not None:
        return "flag"
    if len(model_inputs) > 1 or list(columns) == [model_inputs[0].name]:
        return "model_input_names"
    return "file_order"


def describe_features(columns: Sequence[str], source: str) -> str:
    """The console line that says which columns feed the model, in which order, and why."""
    line = f"features ({source}, in model order): {bm.cut(list(columns))}"
    if source == "file_order":
        line += (
            "\nwarning: no feature list was declared, so the numeric non-id columns are used in "
            "file order; pin them with --feature-columns or score a bundle (batch-score package)"
        )
    return line
