"""Ensemble members, A/B arms and fallback models: one named model whose outputs go under member keys.

:class:`MemberModel` renames a loaded model's outputs (``<output>__<member>``),
optionally averaging MC-dropout passes; :class:`MemberModelHandler` is the
``RunInference`` handler that loads one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from keras_batch_score.transforms.model.handler import KerasModelHandler
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.mc_dropout import MCDropout
from keras_batch_score.transforms.model.output_keys import member_key, std_key
from keras_batch_score.transforms.model.row_failures import output_subjects
from keras_batch_score.transforms.model.spec import ModelSpec


class MemberModel(LoadedModel):
    """A loaded model whose outputs are renamed to member keys, optionally MC-dropout averaged.

    Outputs are matched to ``output_names`` (the first model's) by position, so
    single-output members whose output layers are named differently line up.
    """

    def __init__(
        self,
        base: LoadedModel,
        member: str | None,
        mc_samples: int = 0,
        seed: int | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        self._base = base
        self._member = member
        self._mc = MCDropout(base, mc_samples, seed) if mc_samples else None
        own = [info.name for info in base.outputs]
        names = list(output_names) if output_names and len(own) == 1 else own
        self._rename = {info.name: name for info, name in zip(base.outputs, names, strict=True)}
        self._rename.update({std_key(a): std_key(b) for a, b in self._rename.items()})
        outputs = []
        self.output_labels: list[tuple[str, str]] = []  # (member key, output name) for reasons
        for info, name in zip(base.outputs, names, strict=True):
            outputs.append(dataclasses.replace(info, name=member_key(name, member)))
            self.output_labels.append((member_key(name, member), name))
            if self._mc is not None:
                outputs.append(dataclasses.replace(info, name=member_key(std_key(name), member)))
                self.output_labels.append((member_key(std_key(name), member), name))
        super().__init__(
            inputs=base.inputs,
            outputs=outputs,
            call=base.call,
            model_id=base.model_id,
            format=base.format,
            weights=base.weights,
            keepalive=base,
        )

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self._mc.predict(features) if self._mc is not None else self._base.predict(features)
        return {member_key(self._rename[k], self._member): v for k, v in raw.items()}


class MemberModelHandler(KerasModelHandler):
    """:class:`KerasModelHandler` for one named member (outputs under member keys) with optional MC dropout.

    Args:
        spec: What model to load.
        feature_widths: Values per row per model input (health check).
        member: Member name; None stores outputs under the plain output names.
        mc_samples: MC-dropout passes per batch (0: one deterministic pass).
        seed: MC-dropout seed.
        max_batch_rows: Max rows per model call.
        min_batch_rows: Min rows per model call.
    """

    def __init__(
        self,
        spec: ModelSpec,
        feature_widths: Mapping[str, int],
        *,
        member: str | None = None,
        mc_samples: int = 0,
        seed: int | None = None,
        output_names: Sequence[str] | None = None,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
    ) -> None:
        super().__init__(
            spec, feature_widths, max_batch_rows=max_batch_rows, min_batch_rows=min_batch_rows
        )
        self._member = member
        self._mc_samples = mc_samples
        self._seed = seed
        self._output_names = tuple(output_names) if output_names else None

    def load_model(self) -> LoadedModel:
        base = super().load_model()
        own = tuple(info.name for info in base.outputs)
        same_names = len(own) > 1 or self._output_names in (None, own)
        if self._member is None and not self._mc_samples and same_names:
            return base
        return MemberModel(base, self._member, self._mc_samples, self._seed, self._output_names)

    def output_subjects(self, model: LoadedModel) -> dict[str, str]:
        """NaN/Inf reasons name a member's outputs by the model's output names, not member keys."""
        if isinstance(model, MemberModel):
            return output_subjects(model.output_labels)
        return super().output_subjects(model)
