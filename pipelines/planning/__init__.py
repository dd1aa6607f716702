"""Planning: a checked configuration -> frozen plans, before any data is read.

Every command plans through these functions:

* :func:`plan_models` (:mod:`.models`) parses the models ONCE (ensemble
  members, A/B arms, fallback and shadow model), maps a bundle into the
  settings and pins the first model's spec; it loads nothing.
* :func:`plan_input` (:mod:`.inputs`) matches the input files and reads their
  footers (or the first TFRecord records) into one unified schema.
* :func:`plan_scoring` (:mod:`.scoring`) loads and health-checks the models
  against the feature layout and returns the :class:`ScoringPlan` of ``score``,
  ``profile --model`` and ``calibrate`` (:func:`plan_calibration`).
* :func:`plan_postprocess` (:mod:`.postprocess`) loads the other models and
  reads the post-processing files; a plain run gets the trivial plan.

``package`` uses :func:`plan_models` and :func:`plan_bundle_features` (:mod:`.bundle`); ``fit-preprocess`` and ``profile`` use
:func:`plan_input`.
"""

from keras_batch_score.pipelines.planning.bundle import plan_bundle_features
from keras_batch_score.pipelines.planning.inputs import InputPlan, plan_input
from keras_batch_score.pipelines.planning.models import (
    Member,
    ModelsPlan,
    default_name,
    model_spec,
    parse_members,
    plan_models,
    primary_path,
)
from keras_batch_score.pipelines.planning.postprocess import is_plain, plan_postprocess
from keras_batch_score.pipelines.planning.scoring import (
    ScoringPlan,
    plan_calibration,
    plan_scoring,
    raw_scores,
)

__all__ = [
    "InputPlan",
    "Member",
    "ModelsPlan",
    "ScoringPlan",
    "default_name",
    "is_plain",
    "model_spec",
    "parse_members",
    "plan_bundle_features",
    "plan_calibration",
    "plan_input",
    "plan_models",
    "plan_postprocess",
    "plan_scoring",
    "primary_path",
    "raw_scores",
]
