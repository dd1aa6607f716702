"""What model to load and how: :class:`ModelSpec`, plain data that pickles to the workers."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to load and how. Plain data: it pickles to the workers.

    Attributes:
        path: A ``.keras`` or ``.h5`` file or a SavedModel directory, local or remote
            (anything Beam ``FileSystems`` can read).
        custom_objects: ``module:attr`` references imported on each worker.
        safe_mode: Refuse arbitrary code (lambda layers) in ``.keras`` files.
        signature: SavedModel signature name; ``None`` picks ``serving_default``.
        precision: ``float32`` (exactly ``model(x, training=False)``) or
            ``bfloat16`` (opt-in: Keras ``mixed_bfloat16`` compute, float32 outputs;
            faster on CPUs with AVX512-BF16 and on GPUs, ~1e-3 absolute difference) or
            ``float16`` (Keras ``mixed_float16``; GPUs only).
        backend: ``keras`` (the compiled graph), ``xla`` (the same graph with
            ``jit_compile=True``), ``onnxruntime`` or ``litert`` (the graph converted
            once per process, cached by content hash: :mod:`keras_batch_score.transforms.model.backends`).
    """

    path: str
    custom_objects: tuple[str, ...] = ()
    safe_mode: bool = True
    signature: str | None = None
    precision: str = "float32"
    sha256: str | None = None  # pinned hash of the model's bytes (--model-sha256, bundles)
    model_id: str | None = None  # the `model` column's value (a bundle's version label)
    backend: str = "keras"
