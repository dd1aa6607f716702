"""Loading Keras models (.keras, .h5, SavedModel) behind one compiled predict call.

:func:`load` picks the format's loader
(:mod:`~keras_batch_score.transforms.model.keras_format` or
:mod:`~keras_batch_score.transforms.model.saved_model`) and shares loaded models
within a process through Beam's ``shared.Shared``, its only Beam use. The Beam
``ModelHandler`` in :mod:`keras_batch_score.transforms.model.handler` calls :func:`load` in the
worker's ``setup()``; the launcher calls it once too, to fail fast on a bad
model before any data is read.
"""

from __future__ import annotations

import hashlib
import os

from apache_beam.utils import shared

from keras_batch_score.transforms.core.tf_quiet import import_tensorflow
from keras_batch_score.transforms.io.model_cache import content_hash, localize, verify_sha256
from keras_batch_score.transforms.io.model_cache import model_id as model_id_for
from keras_batch_score.transforms.model.files import detect_format, model_files
from keras_batch_score.transforms.model.keras_format import load_keras
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.precision import check_gpu_for_float16
from keras_batch_score.transforms.model.saved_model import load_saved_model
from keras_batch_score.transforms.model.spec import ModelSpec


def load(spec: ModelSpec) -> LoadedModel:
    """Loads the model named by ``spec`` and compiles its call.

    Raises:
        ModelError: with a message that says what to fix (missing file, unknown
            format, custom class not provided, unsafe lambda layers, ...).
    """
    import_tensorflow()
    if spec.precision == "float16":
        check_gpu_for_float16(spec.path)
    local = localize(spec.path)
    if spec.sha256:
        verify_sha256(local, spec.sha256, spec.path)
    fmt = detect_format(local)
    files = model_files(spec, local, fmt)
    stats = [os.stat(f) for f in files]
    tag = repr(
        (
            spec,
            os.path.abspath(local),
            [(f, st.st_size, st.st_mtime_ns) for f, st in zip(files, stats, strict=True)],
        )
    )

    def construct() -> LoadedModel:
        if spec.model_id:  # a bundle's version label, or a pinned id
            model_id = spec.model_id
        elif fmt == "json+weights" and not os.path.isdir(local):
            digest = "".join(content_hash(f) for f in files)
            model_id = (
                f"{os.path.basename(spec.path)}@{hashlib.sha256(digest.encode()).hexdigest()[:12]}"
            )
        else:
            model_id = model_id_for(spec.path, local)
        if fmt == "saved_model":
            loaded = load_saved_model(local, spec, model_id)
            source_hash = content_hash(local)
        else:
            loaded = load_keras(files, fmt, spec, model_id)
            source_hash = "".join(content_hash(f) for f in files)
        if spec.backend in ("onnxruntime", "litert"):
            from keras_batch_score.transforms.model.backends.convert import converted_model

            key = [source_hash, fmt, spec.signature or "", *spec.custom_objects]
            return converted_model(loaded, spec.backend, key, spec.path)
        return loaded

    return _MODELS.acquire(construct, tag=tag)


# Loaded models are shared within a process, as Beam's RunInference shares them
# between DoFn instances: the launcher's health-checked model is reused by an
# in-process worker instead of being loaded and traced a second time. Beam's
# Shared holds weak references, so nothing outlives its last user.
_MODELS = shared.Shared()
