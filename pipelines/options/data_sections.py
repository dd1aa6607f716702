"""The option sections of what a job reads, which model scores it, and how it runs.

Sections ``input``, ``model`` and ``run`` of :class:`~.schema.ScoreOptions`.
"""

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from keras_batch_score.pipelines.options import values as v
from keras_batch_score.pipelines.options.flag import (
    BACKENDS,
    DEFAULT_BATCH_SIZE,
    INPUT_FORMATS,
    PRECISIONS,
    SCORE_ONLY,
    Flag,
    Section,
    YamlColumns,
    YamlFloat,
    YamlStrings,
)


class InputOptions(Section):
    """What is read and where the results go."""

    title = "input and output"
    input: Annotated[
        str | None,
        Flag(
            "--input",
            "Input file, directory, glob or gs:// pattern (Parquet or TFRecord).",
            "PATTERN",
            required=True,
        ),
    ] = None
    output: Annotated[
        str | None,
        Flag("--output", "Output directory (local or gs://).", "PATH", required=True),
    ] = None
    input_format: Annotated[
        str,
        Flag(
            "--input-format",
            "Input format (auto: TFRecord for *.tfrecord, *.tfrecord.gz, *.tfr; else Parquet).",
            choices=INPUT_FORMATS,
        ),
    ] = "auto"
    tfrecord_features: Annotated[
        Any,  # a spec file or mapping: keras_batch_score.transforms.io.tfrecord_spec; inferred if unset
        Flag(
            "--tfrecord-features",
            "YAML file with a tfrecord_features spec (default: inferred from the first records).",
            "FILE",
        ),
    ] = None
    id_columns: Annotated[
        list[str],
        YamlColumns,
        Flag(
            "--id-column",
            "Passthrough column copied unchanged to every output (repeatable). "
            "Without one, outputs carry source_file and row_index.",
            "COLUMN",
            repeat=True,
        ),
    ] = Field(default_factory=list)
    feature_columns: Annotated[
        list[str] | None,
        YamlColumns,
        Flag(
            "--feature-columns",
            "Comma-separated model feature columns, in model order "
            "(default: every numeric column that is not an id column, in file order).",
            "COL,COL,...",
            parse=v.csv,
        ),
    ] = None
    preprocess: Annotated[
        Any,  # a spec file or mapping: keras_batch_score.transforms.preprocess.spec
        Flag(
            "--preprocess",
            "Preprocessing spec YAML (see docs/preprocessing.md); replaces feature validation.",
            "SPEC",
        ),
    ] = None
    num_shards: Annotated[
        int,
        Flag("--num-shards", "Prediction files (0: runner decides).", "N", commands=SCORE_ONLY),
    ] = 0


class ModelOptions(Section):
    """Which model scores, and how it is loaded and run."""

    title = "model"
    model: Annotated[
        list[Any] | None,  # paths, name=path strings or {name, path, weight} mappings
        BeforeValidator(v.yaml_models),
        Flag(
            "--model",
            "Model to score with: a .keras file, an .h5 file, a SavedModel directory, an "
            "architecture .json with its .weights.h5 beside it (or a directory of both), or a "
            "bundle directory written by `batch-score package`. Repeat the flag for an "
            "ensemble or A/B arms, and name members with NAME=PATH "
            "(--model a=a.keras --model b=b.keras).",
            "[NAME=]PATH",
            repeat=True,
            required=True,
        ),
    ] = None
    model_sha256: Annotated[
        str | None,
        Flag(
            "--model-sha256",
            "sha256 the model's bytes must have (sha256sum of a .keras/.h5 file); checked "
            "before loading, on every worker. A bundle (--model BUNDLE/) pins its own hashes.",
            "HEX",
        ),
    ] = None
    custom_objects: Annotated[
        list[str],
        YamlStrings,
        Flag(
            "--custom-object",
            "module:attr of a custom Keras class or function the model needs (repeatable).",
            "MODULE:ATTR",
            repeat=True,
        ),
    ] = Field(default_factory=list)
    unsafe_deserialization: Annotated[
        bool,
        Flag(
            "--unsafe-deserialization",
            "Allow lambda layers and other arbitrary code in .keras files (safe_mode=False).",
        ),
    ] = False
    signature: Annotated[
        str | None,
        Flag("--signature", "SavedModel signature to call (default: serving_default).", "NAME"),
    ] = None
    precision: Annotated[
        str,
        Flag(
            "--precision",
            "Model compute precision. bfloat16 is opt-in: faster on CPUs with AVX512-BF16 and "
            "on GPUs, results differ from float32 by ~1e-3 (.keras/.h5 models only). float16 "
            "needs a GPU.",
            choices=PRECISIONS,
        ),
    ] = "float32"
    backend: Annotated[
        str,
        Flag(
            "--backend",
            "What runs the model: keras (its compiled TensorFlow graph), xla (the same graph "
            "with jit_compile=True), onnxruntime or litert (converted once per worker, cached "
            "by the model's hash; pip install 'keras-batch-score[onnx]' or '[litert]'). See "
            "docs/models.md, Backends.",
            "NAME",
            choices=BACKENDS,
        ),
    ] = "keras"


class RunOptions(Section):
    """Batching, progress and the output directory's ownership."""

    title = "batching and progress"
    batch_size: Annotated[int, Flag("--batch-size", "Max rows per model call.", "ROWS")] = (
        DEFAULT_BATCH_SIZE
    )
    min_batch_size: Annotated[
        int | None, Flag("--min-batch-size", "Min rows per model call.", "ROWS")
    ] = None
    reshuffle: Annotated[
        bool, Flag("--reshuffle", "Redistribute batches across workers before inference.")
    ] = False
    progress_seconds: Annotated[
        float,
        YamlFloat,
        Flag(
            "--progress-seconds",
            "Seconds between progress lines when the output is not a terminal.",
            "SECONDS",
            commands=SCORE_ONLY,
        ),
    ] = 5.0
    overwrite: Annotated[
        bool,
        Flag(
            "--overwrite",
            "Write into an output directory that holds files this tool did not write. They "
            "are kept, never deleted; the tool replaces only the files its _manifest.json lists.",
        ),
    ] = False
