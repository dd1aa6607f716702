"""The run's models, parsed ONCE: ensemble members, A/B arms, fallback and shadow model.

:func:`plan_models` turns the ``--model`` values (``path``, ``name=path`` or
YAML mappings), ``--ensemble-weights``, ``--ab-split``, ``--fallback-model``
and ``--shadow-model`` into a frozen :class:`ModelsPlan`, maps a bundle
(``--model BUNDLE/``) into the settings and pins the first model's
:class:`ModelSpec`. It loads no model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from keras_batch_score.pipelines import bundle_options
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.spec import ModelSpec

if TYPE_CHECKING:
    from keras_batch_score.pipelines.config import ScoreConfig

# A YAML model entry after coercion (keras_batch_score.pipelines.options.values.yaml_models).
ModelEntry = str | Mapping[str, str | float]

_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of an ensemble or A/B split.

    Attributes:
        name: Short name (used in ``Model[name]`` step labels and ``prediction__<name>`` columns).
        path: Model path.
        weight: Ensemble weight (normalized later).
    """

    name: str
    path: str
    weight: float = 1.0


def default_name(path: str, taken: set[str]) -> str:
    """A member name from its path (``models/a.keras`` -> ``a``), unique among ``taken``."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".keras", ".h5", ".hdf5"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def parse_members(
    models: Sequence[ModelEntry], weights: Mapping[str, float] | None = None
) -> list[Member]:
    """Members from ``--model`` values (``path`` or ``name=path``) or YAML mappings.

    Raises:
        ConfigError: for duplicate names, weights naming no member, or bad weights.
    """
    members: list[Member] = []
    taken: set[str] = set()
    for entry in models:
        if isinstance(entry, Mapping):
            name, path = str(entry.get("name") or ""), str(entry["path"])
            weight = float(entry.get("weight", 1.0))
        else:
            match = _NAME.match(entry) if "://" not in entry.split("=", 1)[0] else None
            name, path, weight = (
                (match.group(1), match.group(2), 1.0) if match else ("", entry, 1.0)
            )
        if name and not _VALID_NAME.match(name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-' or '.'")
        name = name or default_name(path, taken)
        if name in taken:
            raise ConfigError(
                f"model name {name!r} is used twice; give each --model a distinct name=path"
            )
        taken.add(name)
        members.append(Member(name, path, weight))
    if weights:
        unknown = sorted(set(weights) - taken)
        if unknown:
            raise ConfigError(
                f"ensemble_weights name(s) {unknown} match no model; models are {sorted(taken)}"
            )
        members = [dataclasses.replace(m, weight=weights.get(m.name, m.weight)) for m in members]
    for m in members:
        if not (math.isfinite(m.weight) and m.weight >= 0):
            raise ConfigError(
                f"--ensemble-weights: the weight of model {m.name!r} must be a finite number >= 0, "
                f"got {m.weight}"
            )
    if members and not sum(m.weight for m in members) > 0:
        raise ConfigError(
            "--ensemble-weights: the weights are all 0; give at least one model a positive weight"
        )
    return members


def model_spec(config: ScoreConfig, path: str) -> ModelSpec:
    """The ModelSpec of ``path`` with the job's loading options."""
    return ModelSpec(
        path=path,
        custom_objects=tuple(config.custom_objects),
        safe_mode=not config.unsafe_deserialization,
        signature=config.signature,
        precision=config.precision,
        backend=config.backend,
    )


def primary_path(config: ScoreConfig) -> str:
    """Path of the first model (the only one of a plain run)."""
    return parse_members(config.model, config.ensemble_weights)[0].path


@dataclasses.dataclass(frozen=True)
class ModelsPlan:
    """The run's models, parsed once: members, A/B arms, fallback and shadow model.

    Attributes:
        config: The configuration with a bundle's settings filled in.
        members: The ``--model`` members in order (one for a plain run or a bundle).
        spec: How to load the first member (pinned to ``--model-sha256`` or the bundle).
        ab_split: ``(member name, share)`` per A/B arm; None: no split.
        fallback: Path of the ``--fallback-model``.
        shadow: Path of the ``--shadow-model``.
        bundle: The bundle named by ``--model``, if any.
    """

    config: ScoreConfig
    members: tuple[Member, ...]
    spec: ModelSpec
    ab_split: tuple[tuple[str, float], ...] | None = None
    fallback: str | None = None
    shadow: str | None = None
    bundle: bundle_options.BundleUse | None = None

    @property
    def primary(self) -> Member:
        return self.members[0]

    def spec_of(self, path: str) -> ModelSpec:
        """The ModelSpec of another model of the run (same loading options)."""
        return model_spec(self.config, path)


def plan_models(config: ScoreConfig, *, bundles: bool = True) -> ModelsPlan:
    """Parses the run's models once and maps a bundle into the settings; loads no model.

    Args:
        config: The checked configuration.
        bundles: Whether a ``--model`` may be a bundle (``package`` takes a bare model).

    Raises:
        ConfigError: for bad member names or weights, a bundle in an ensemble,
            or a bundle file whose hash does not match.
    """
    members = tuple(parse_members(config.model, config.ensemble_weights))
    bundle = None
    if bundles:
        config, bundle = bundle_options.apply_bundle(config, members)  # verifies the hashes
    if bundle is not None:  # the bundle's model file replaces the bundle directory
        path = str(config.model[0])
        members = (Member(default_name(path, set()), path),)
    spec = model_spec(config, members[0].path)
    return ModelsPlan(
        config=config,
        members=members,
        spec=bundle_options.pin_model(spec, config, bundle) if bundles else spec,
        ab_split=tuple(config.ab_split.items()) if config.ab_split else None,
        fallback=config.fallback_model,
        shadow=config.shadow_model,
        bundle=bundle,
    )
