"""Which files make up a model: format detection and the JSON + weights file pairs.

Pure file-system code, no TensorFlow and no Beam.
"""

from __future__ import annotations

import os

from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.io.model_cache import is_local, localize
from keras_batch_score.transforms.model.spec import ModelSpec


def detect_format(local_path: str) -> str:
    """``keras``, ``h5``, ``saved_model`` or ``json+weights`` (architecture JSON + ``.weights.h5``)."""
    if os.path.isdir(local_path):
        if os.path.exists(os.path.join(local_path, "saved_model.pb")):
            return "saved_model"
        json_and_weights_files(local_path)  # raises ModelError saying what is missing
        return "json+weights"
    if not os.path.exists(local_path):
        raise ModelError(f"model file {local_path} does not exist")
    lower = local_path.lower()
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith(WEIGHTS_SUFFIX):
        raise ModelError(
            f"model file {local_path} holds only weights: pass the architecture .json saved "
            f"beside it (model.to_json()), or a directory holding both"
        )
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    if lower.endswith(".json"):
        return "json+weights"
    raise ModelError(
        f"model file {local_path}: unknown format; expected a .keras or .h5 file, a SavedModel "
        "directory, or an architecture .json with its .weights.h5 file"
    )


WEIGHTS_SUFFIX = ".weights.h5"


def weights_path_for(json_path: str) -> str:
    """The weights file saved beside an architecture JSON: ``<stem>.weights.h5``."""
    return json_path[: -len(".json")] + WEIGHTS_SUFFIX


def json_and_weights_files(local_path: str) -> tuple[str, str]:
    """The architecture JSON and weights files of a ``json+weights`` model.

    Args:
        local_path: A ``.json`` file (its weights ``<stem>.weights.h5`` beside it) or a
            directory holding exactly one ``.json`` and one ``.weights.h5`` file.

    Raises:
        ModelError: if a file is missing or the directory is ambiguous.
    """
    if not os.path.isdir(local_path):
        weights = weights_path_for(local_path)
        if not os.path.exists(weights):
            raise ModelError(
                f"model {local_path}: weights file {weights} does not exist; save it beside the "
                "architecture with model.save_weights('<same name>.weights.h5')"
            )
        return local_path, weights
    names = sorted(os.listdir(local_path))
    jsons = [n for n in names if n.lower().endswith(".json")]
    weights = [n for n in names if n.lower().endswith(WEIGHTS_SUFFIX)]
    if len(jsons) != 1 or len(weights) != 1:
        raise ModelError(
            f"model directory {local_path} has no saved_model.pb, and not exactly one .json "
            f"architecture and one .weights.h5 file (found {len(jsons)} .json, {len(weights)} "
            ".weights.h5): pass a .keras or .h5 file, a SavedModel directory, or a directory "
            "with model.to_json() and model.save_weights() output"
        )
    return os.path.join(local_path, jsons[0]), os.path.join(local_path, weights[0])


def model_files(spec: ModelSpec, local: str, fmt: str) -> list[str]:
    """The local files a model is loaded from (their size and mtime identify a loaded model)."""
    if fmt == "saved_model":
        return [os.path.join(local, "saved_model.pb")]
    if fmt != "json+weights":
        return [local]
    if os.path.isdir(local) or is_local(spec.path):
        return list(json_and_weights_files(local))
    # A remote .json: its weights file is copied on its own.
    return [local, localize(weights_path_for(spec.path))]
