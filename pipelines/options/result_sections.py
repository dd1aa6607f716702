"""The option sections of what a job computes and writes beyond the predictions.

Sections ``postprocess``, ``drift``, ``explain`` and ``output`` of
:class:`~.schema.ScoreOptions`.
"""

from typing import Annotated

from pydantic import BeforeValidator, Field

from keras_batch_score.pipelines.options import values as v
from keras_batch_score.pipelines.options.flag import (
    SCORE_ONLY,
    Flag,
    Section,
    YamlFloat,
    YamlPairs,
    number,
)
from keras_batch_score.transforms.drift import metrics as dm
from keras_batch_score.transforms.io.output_formats import FORMATS
from keras_batch_score.transforms.postprocess.ensemble import METHODS as ENSEMBLE_METHODS
from keras_batch_score.transforms.postprocess.explain import BASELINES, DEFAULT_STEPS, METHODS
from keras_batch_score.transforms.postprocess.privacy import MECHANISMS


class PostprocessOptions(Section):
    """Ensembles, calibration, post-transforms, uncertainty, A/B routing and fallback."""

    title = "ensembles and post-processing"
    ensemble: Annotated[
        str,
        Flag(
            "--ensemble",
            "How to combine several --model members (default: mean).",
            choices=ENSEMBLE_METHODS,
        ),
    ] = "mean"
    ensemble_weights: Annotated[
        dict[str, float] | None,
        YamlPairs,
        Flag(
            "--ensemble-weights",
            "Member weights, e.g. a=2,b=1 (default: equal).",
            "NAME=W,...",
            parse=v.flag_parser("--ensemble-weights"),
        ),
    ] = None
    keep_member_predictions: Annotated[
        bool,
        Flag(
            "--keep-member-predictions",
            "Also write each member's output as prediction__<name>.",
            commands=SCORE_ONLY,
        ),
    ] = False
    calibration: Annotated[
        str | None,
        Flag(
            "--calibration",
            "Calibration JSON written by `batch-score calibrate`, applied after the ensemble.",
            "FILE",
            commands=SCORE_ONLY,
        ),
    ] = None
    clip_min: number("--clip-min", "Clip predictions below.", commands=SCORE_ONLY) = None
    clip_max: number("--clip-max", "Clip predictions above.", commands=SCORE_ONLY) = None
    target_mean: number(
        "--target-mean",
        "Undo target standardization: prediction * target_std + target_mean.",
        commands=SCORE_ONLY,
    ) = None
    target_std: number("--target-std", "See --target-mean.", commands=SCORE_ONLY) = None
    class_names: Annotated[
        str | None,
        Flag(
            "--class-names",
            "Text file with one class name per line, in model output order.",
            "FILE",
            commands=SCORE_ONLY,
        ),
    ] = None
    top_k: Annotated[
        int | None,
        Flag(
            "--top-k",
            "Write top_k_labels / top_k_scores with the K most likely classes.",
            "K",
            commands=SCORE_ONLY,
        ),
    ] = None
    mc_dropout_samples: Annotated[
        int,
        Flag(
            "--mc-dropout-samples",
            "MC dropout: T stochastic passes per batch; prediction = mean, plus prediction_std.",
            "T",
        ),
    ] = 0
    seed: Annotated[
        int | None,
        Flag("--seed", "Seed for MC dropout and --output-noise (reproducible results).", "INT"),
    ] = None
    ab_split: Annotated[
        dict[str, float] | None,
        YamlPairs,
        Flag(
            "--ab-split",
            "Route rows between named models by a hash of the id columns, e.g. a=0.9,b=0.1.",
            "NAME=SHARE,...",
            parse=v.flag_parser("--ab-split"),
            commands=SCORE_ONLY,
        ),
    ] = None
    fallback_model: Annotated[
        str | None,
        Flag(
            "--fallback-model",
            "Model that scores the rows on which the primary model raises or gives NaN/Inf.",
            "PATH",
            commands=SCORE_ONLY,
        ),
    ] = None


class DriftOptions(Section):
    """Drift against a reference profile (docs/drift.md)."""

    title = "drift against a reference profile"
    reference_profile: Annotated[
        str | None,
        Flag(
            "--reference-profile",
            "Profile JSON from `batch-score profile`: write drift.json and drift.html "
            "comparing the scored data (and predictions) with it.",
            "FILE",
            commands=SCORE_ONLY,
        ),
    ] = None
    fail_on_drift: Annotated[
        bool,
        Flag(
            "--fail-on-drift",
            "Exit with status 3 (after writing every output) when dataset drift is detected.",
            commands=SCORE_ONLY,
        ),
    ] = False
    drift_thresholds: Annotated[
        list[str],
        BeforeValidator(v.yaml_thresholds),
        Flag(
            "--drift-threshold",
            "metric=value or feature:metric=value ('off' to not gate on a metric); metrics: "
            + ", ".join(
                f"{k} (default {'off' if d is None else d})"
                for k, d in dm.DEFAULT_THRESHOLDS.items()
            )
            + ". Repeatable.",
            "[FEATURE:]METRIC=VALUE",
            repeat=True,
            commands=SCORE_ONLY,
        ),
    ] = Field(default_factory=list)
    drift_share: number(
        "--drift-share",
        "Dataset drift when more than this share of features drift "
        f"(default {dm.DEFAULT_DRIFT_SHARE}).",
        "SHARE",
        commands=SCORE_ONLY,
    ) = dm.DEFAULT_DRIFT_SHARE


class ExplainOptions(Section):
    """Explanations, out-of-distribution scores and the adversarial check."""

    title = "explanations and out-of-distribution flags"
    explain: Annotated[
        str | None,
        Flag(
            "--explain",
            "Write input attributions of the model output: attr_<feature> columns (a list "
            "column for a list feature), in the model's input space (after preprocessing).",
            choices=METHODS,
            commands=SCORE_ONLY,
        ),
    ] = None
    explain_steps: Annotated[
        int,
        Flag(
            "--explain-steps",
            f"Integrated gradients' trapezoid intervals (default {DEFAULT_STEPS}).",
            "N",
            commands=SCORE_ONLY,
        ),
    ] = DEFAULT_STEPS
    explain_baseline: Annotated[
        str,
        Flag(
            "--explain-baseline",
            "Attribution baseline: zeros (default) or the feature means of --reference-profile.",
            choices=BASELINES,
            commands=SCORE_ONLY,
        ),
    ] = "zeros"
    explain_output: Annotated[
        str | None,
        Flag(
            "--explain-output",
            "Model output explained (and checked by --adversarial-check): NAME or NAME:INDEX "
            "(default the first output; a vector output is explained at each row's predicted "
            "class).",
            "NAME[:INDEX]",
            commands=SCORE_ONLY,
        ),
    ] = None
    ood_score: Annotated[
        bool,
        Flag(
            "--ood-score",
            "Add ood_score (share of the row's profiled features outside the reference's 0.1 "
            "and 99.9 percentiles or unseen categories) and ood_max_abs_z; needs "
            "--reference-profile.",
            commands=SCORE_ONLY,
        ),
    ] = False
    ood_threshold: number(
        "--ood-threshold",
        "Add a boolean ood column (ood_score > T) and count rows_ood in run_summary.json "
        "(implies --ood-score).",
        "SHARE",
        commands=SCORE_ONLY,
    ) = None
    adversarial_check: Annotated[
        bool,
        Flag(
            "--adversarial-check",
            "Flag rows whose prediction moves by more than --adversarial-threshold under one "
            "FGSM step (boolean fragile column, rows_fragile in run_summary.json).",
            commands=SCORE_ONLY,
        ),
    ] = False
    adversarial_epsilon: Annotated[
        float,
        YamlFloat,
        Flag(
            "--adversarial-epsilon",
            "FGSM step in reference standard deviations (model-input units where the profile "
            "has none); default 0.01.",
            "EPS",
            commands=SCORE_ONLY,
        ),
    ] = 0.01
    adversarial_threshold: Annotated[
        float,
        YamlFloat,
        Flag(
            "--adversarial-threshold",
            "Prediction change that flags a row as fragile (default 0.1).",
            "DELTA",
            commands=SCORE_ONLY,
        ),
    ] = 0.1


class OutputOptions(Section):
    """Output format, privacy noise, per-class columns and the shadow model."""

    title = "output format, privacy noise and shadow model"
    output_format: Annotated[
        str,
        Flag(
            "--output-format",
            "Predictions file format: parquet (default), jsonl (Vertex AI batch prediction "
            "layout: instance + prediction per line) or tfrecord (tf.train.Example per row).",
            choices=FORMATS,
            commands=SCORE_ONLY,
        ),
    ] = "parquet"
    output_noise: Annotated[
        str | None,
        Flag(
            "--output-noise",
            "Add differential-privacy noise to the released predictions: laplace (scale "
            "sensitivity/epsilon) or gaussian (analytic Gaussian mechanism for epsilon, "
            "delta). --seed makes the noise reproducible (keep it secret).",
            choices=MECHANISMS,
            commands=SCORE_ONLY,
        ),
    ] = None
    epsilon: number(
        "--epsilon",
        "Privacy parameter epsilon (> 0) of --output-noise.",
        "EPS",
        commands=SCORE_ONLY,
    ) = None
    delta: number(
        "--delta",
        "Privacy parameter delta (0 < delta < 1), gaussian only.",
        "DELTA",
        commands=SCORE_ONLY,
    ) = None
    sensitivity: number(
        "--sensitivity",
        "How much one individual can change a prediction (L1 for laplace, L2 for gaussian).",
        "S",
        commands=SCORE_ONLY,
    ) = None
    probability_columns: Annotated[
        bool,
        Flag(
            "--probability-columns",
            "With --class-names: also write one prob_<class> column per class.",
            commands=SCORE_ONLY,
        ),
    ] = False
    multi_label_threshold: number(
        "--multi-label-threshold",
        "Multi-label models (one sigmoid per class): write a labels list of the classes "
        "scoring >= T (needs --class-names; replaces --top-k).",
        "T",
        commands=SCORE_ONLY,
    ) = None
    multi_label_thresholds: Annotated[
        str | None,
        Flag(
            "--multi-label-thresholds",
            'JSON file mapping class name -> threshold, e.g. {"cat": 0.3, "dog": 0.6}; '
            "classes it omits use --multi-label-threshold.",
            "FILE",
            commands=SCORE_ONLY,
        ),
    ] = None
    shadow_model: Annotated[
        str | None,
        Flag(
            "--shadow-model",
            "Challenger model scored beside the released one: writes prediction_shadow and "
            "agreement statistics in run_summary.json; the released prediction is unchanged.",
            "PATH",
            commands=SCORE_ONLY,
        ),
    ] = None
