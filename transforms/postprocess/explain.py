"""Input attributions and an input-gradient sensitivity check, in compiled TensorFlow calls.

Everything here works on the model's own inputs (``ScoringBatch.features``:
after preprocessing when a preprocessing spec is used), so attributions are
per model-input value. Pure functions and one small class; the Beam wiring is
in :mod:`keras_batch_score.transforms.postprocess.insights`.

* **Integrated gradients** (Sundararajan et al. 2017): ``(x - b) * mean of
  grad f(b + a (x - b))`` over ``a`` in ``[0, 1]``, by the trapezoid rule on
  ``steps`` intervals (``steps + 1`` gradient evaluations per row; the sum of
  a row's attributions approaches ``f(x) - f(b)``, "completeness").
* **Gradient x input**: ``(x - b) * grad f(x)``; with the zero baseline the
  classic ``x * grad f(x)``, exact for a linear model.
* **FGSM sensitivity**: ``|f(x + eps * sign(grad f(x))) - f(x)|`` per row.

All evaluation points of a batch are tiled along the row axis and fed to one
compiled ``tf.function`` (``GradientTape`` inside), in as few calls as the
memory bound :data:`MAX_POINTS_PER_CALL` allows.

The explained scalar ``f`` is one model output (``--explain-output``): a
width-1 output as is; a vector output (classes) at each row's predicted
class (its argmax at ``x``, the same index for every interpolation point), or
at a fixed position with ``name:index``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.tensors import TensorInfo, is_string_dtype

INTEGRATED_GRADIENTS = "integrated-gradients"
GRADIENT_X_INPUT = "gradient-x-input"
METHODS = (INTEGRATED_GRADIENTS, GRADIENT_X_INPUT)
ZEROS = "zeros"
REFERENCE_MEAN = "reference-mean"
BASELINES = (ZEROS, REFERENCE_MEAN)
DEFAULT_STEPS = 32
MAX_POINTS_PER_CALL = 65536
"""Evaluation points (rows x interpolation steps) per graph call."""
MAX_VALUES_PER_CALL = 1 << 24
"""Input values (points x values per row, all inputs) per graph call (64 MB of float32)."""


class GradientError(ValueError):
    """Gradients of the explained output do not reach a model input."""


@dataclasses.dataclass(frozen=True)
class OutputTarget:
    """The scalar that is explained: a model output, and which of its values.

    Attributes:
        output: Model output name.
        index: Fixed position in the (flattened) output; None: the value of a
            width-1 output, or each row's argmax of a wider one.
        width: Values per row of the output.
    """

    output: str
    index: int | None
    width: int

    @property
    def argmax(self) -> bool:
        return self.index is None and self.width > 1

    def describe(self) -> str:
        if self.index is not None:
            return f"{self.output}[{self.index}]"
        return f"{self.output} (predicted class)" if self.argmax else self.output


def parse_output_target(text: str | None, outputs: Sequence[TensorInfo]) -> OutputTarget:
    """``--explain-output``: ``None`` (the first output), ``NAME`` or ``NAME:INDEX``.

    Raises:
        ConfigError: for an unknown output or an index outside the output.
    """
    by_name = {o.name: o for o in outputs}
    name, index = text, None
    if text is not None and text not in by_name:
        head, sep, tail = text.rpartition(":")
        if sep and tail.strip().lstrip("-").isdigit():
            name, index = head, int(tail)
    if name is None:
        name = outputs[0].name
    if name not in by_name:
        names = [o.name for o in outputs]
        raise ConfigError(
            f"--explain-output {text!r}: the model has no output {name!r}; its outputs are "
            f"{names[:20]} (use NAME or NAME:INDEX)"
        )
    info = by_name[name]
    if is_string_dtype(info.dtype) or np.dtype(info.dtype).kind != "f":
        raise ConfigError(
            f"--explain-output {name!r}: output of dtype {info.dtype} has no gradient; pick a float output"
        )
    width = info.size
    if width is None:
        raise ConfigError(
            f"--explain-output {name!r}: output shape {info.shape} has an unknown dimension"
        )
    if index is not None and not 0 <= index < width:
        raise ConfigError(
            f"--explain-output {text!r}: index {index} is outside output {name!r} ({width} values per row)"
        )
    return OutputTarget(name, index, width)


def check_differentiable_inputs(inputs: Sequence[TensorInfo]) -> None:
    """Gradients need float inputs.

    Raises:
        ConfigError: naming the first integer, boolean or string input.
    """
    for info in inputs:
        if is_string_dtype(info.dtype) or np.dtype(info.dtype).kind != "f":
            raise ConfigError(
                f"model input {info.name!r} has dtype {info.dtype}: gradients (--explain, "
                "--adversarial-check) are defined only for float inputs"
            )


def trapezoid(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation points ``a_0..a_steps`` in [0, 1] and their trapezoid weights (sum 1)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, dtype=np.float32)
    weights[0] = weights[-1] = 0.5 / steps
    return alphas, weights


def _select(out: Any, target: OutputTarget, index: Any) -> Any:
    """Per-row scalar of ``out`` (rows first): the value, a fixed position, or ``index`` per row."""
    import tensorflow as tf

    flat = tf.reshape(out, [tf.shape(out)[0], -1])
    if target.argmax:
        return tf.gather(flat, index, batch_dims=1)
    return flat[:, target.index or 0]


class Attributor:
    """Compiled attribution and sensitivity calls for one loaded model.

    Args:
        model: The loaded model (float inputs; see :func:`check_differentiable_inputs`).
        target: The explained output.
        shapes: Per model input, the per-row shape fed to it.
    """

    def __init__(
        self, model: LoadedModel, target: OutputTarget, shapes: Mapping[str, Sequence[int]]
    ) -> None:
        import tensorflow as tf

        self._names = [info.name for info in model.inputs]
        self._dtypes = {info.name: tf.as_dtype(info.dtype) for info in model.inputs}
        self._shapes = {n: tuple(int(d) for d in shapes[n]) for n in self._names}
        self._row_values = sum(int(np.prod(s, dtype=np.int64)) for s in self._shapes.values())
        self._target = target
        call = model.call_tensors
        out_name = target.output
        names = self._names
        ranks = {n: len(self._shapes[n]) for n in names}
        sig = {n: tf.TensorSpec((None, *self._shapes[n]), self._dtypes[n]) for n in names}

        def predicted(x: dict[str, Any]) -> Any:
            if not target.argmax:
                return tf.zeros([tf.shape(x[names[0]])[0]], tf.int32)
            out = call(x)[out_name]
            flat = tf.reshape(out, [tf.shape(out)[0], -1])
            return tf.argmax(flat, axis=1, output_type=tf.int32)

        def gradients(points: dict[str, Any], index: Any) -> tuple[dict[str, Any], Any]:
            with tf.GradientTape() as tape:
                tape.watch(points)
                y = _select(call(points)[out_name], target, index)
                total = tf.reduce_sum(tf.cast(y, tf.float32))
            grads = tape.gradient(total, points)
            for n in names:
                if grads[n] is None:
                    raise GradientError(
                        f"the gradient of output {out_name!r} does not reach model input {n!r}"
                    )
            return grads, y

        def attribute(x: dict[str, Any], base: dict[str, Any], alphas: Any, weights: Any):
            r = tf.shape(x[names[0]])[0]
            s = tf.shape(alphas)[0]
            index = tf.tile(predicted(x), [s])
            points = {}
            for n in names:
                dt = self._dtypes[n]
                a = tf.reshape(tf.cast(alphas, dt), [-1] + [1] * (ranks[n] + 1))
                delta = x[n] - base[n]
                p = base[n][tf.newaxis] + a * delta[tf.newaxis]
                points[n] = tf.reshape(p, tf.concat([[s * r], tf.shape(x[n])[1:]], 0))
            grads, _ = gradients(points, index)
            out = {}
            for n in names:
                dt = self._dtypes[n]
                g = tf.reshape(grads[n], tf.concat([[s, r], tf.shape(x[n])[1:]], 0))
                w = tf.reshape(tf.cast(weights, dt), [-1] + [1] * (ranks[n] + 1))
                mean_grad = tf.reduce_sum(w * g, axis=0)
                out[n] = tf.cast((x[n] - base[n]) * mean_grad, tf.float32)
            return out

        def sensitivity(x: dict[str, Any], step: dict[str, Any]) -> Any:
            index = predicted(x)
            grads, y = gradients(dict(x), index)
            moved = {n: x[n] + tf.cast(step[n], self._dtypes[n]) * tf.sign(grads[n]) for n in names}
            y2 = _select(call(moved)[out_name], target, index)
            return tf.abs(tf.cast(y2, tf.float32) - tf.cast(y, tf.float32))

        self._attribute = tf.function(
            attribute,
            input_signature=[
                sig,
                sig,
                tf.TensorSpec((None,), tf.float32),
                tf.TensorSpec((None,), tf.float32),
            ],
            autograph=False,
        )
        step_sig = {n: tf.TensorSpec((1, *self._shapes[n]), tf.float32) for n in names}
        self._sensitivity = tf.function(
            sensitivity, input_signature=[sig, step_sig], autograph=False
        )

    @property
    def input_names(self) -> list[str]:
        return list(self._names)

    def _rows_per_call(self, evaluations: int) -> int:
        by_points = MAX_POINTS_PER_CALL // evaluations
        by_values = MAX_VALUES_PER_CALL // max(1, evaluations * self._row_values)
        return max(1, min(by_points, by_values))

    def _inputs(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            n: np.asarray(features[n], dtype=self._dtypes[n].as_numpy_dtype).reshape(
                (-1, *self._shapes[n])
            )
            for n in self._names
        }

    def attributions(
        self,
        features: Mapping[str, np.ndarray],
        baseline: Mapping[str, np.ndarray],
        method: str,
        steps: int = DEFAULT_STEPS,
    ) -> dict[str, np.ndarray]:
        """Attributions of every input value, ``(n, *shape)`` float32 per model input.

        Args:
            features: The model inputs of ``n`` rows.
            baseline: Per input, one row (``(1, *shape)``) or ``n`` rows.
            method: ``integrated-gradients`` or ``gradient-x-input``.
            steps: Integrated gradients' trapezoid intervals.
        """
        if method == INTEGRATED_GRADIENTS:
            alphas, weights = trapezoid(steps)
        elif method == GRADIENT_X_INPUT:
            alphas, weights = np.ones(1, np.float32), np.ones(1, np.float32)
        else:
            raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
        x = self._inputs(features)
        n = len(x[self._names[0]])
        if n == 0:
            return {k: np.zeros((0, *self._shapes[k]), np.float32) for k in self._names}
        base = {}
        for k, v in x.items():
            b = np.asarray(baseline[k], dtype=v.dtype).reshape((-1, *self._shapes[k]))
            if len(b) not in (1, n):
                raise ValueError(f"baseline of input {k!r} has {len(b)} rows; expected 1 or {n}")
            base[k] = b
        rows = self._rows_per_call(len(alphas))
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in self._names}
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            xs = {k: v[start:stop] for k, v in x.items()}
            bs = {k: v if len(v) == 1 else v[start:stop] for k, v in base.items()}
            out = self._attribute(xs, bs, alphas, weights)
            for k in self._names:
                pieces[k].append(out[k].numpy())
        return {k: np.concatenate(v) for k, v in pieces.items()}

    def sensitivity(
        self, features: Mapping[str, np.ndarray], step: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Per row, ``|f(x + step * sign(grad f(x))) - f(x)|`` (``step``: one row per input)."""
        x = self._inputs(features)
        n = len(x[self._names[0]])
        if n == 0:
            return np.zeros(0, np.float32)
        steps = {
            k: np.asarray(step[k], dtype=np.float32).reshape((1, *self._shapes[k]))
            for k in self._names
        }
        rows = self._rows_per_call(2)
        pieces = [
            self._sensitivity({k: v[s : s + rows] for k, v in x.items()}, steps).numpy()
            for s in range(0, n, rows)
        ]
        return np.concatenate(pieces).astype(np.float32)


def check_gradients(attributor: Attributor, zero_rows: Mapping[str, np.ndarray]) -> None:
    """A smoke attribution on ``zero_rows``: gradients must reach every input.

    Raises:
        ConfigError: naming the input gradients do not reach, or saying why
            they cannot flow (an op without a gradient).
    """
    try:
        attributor.attributions(zero_rows, zero_rows, GRADIENT_X_INPUT)
    except GradientError as e:
        raise ConfigError(
            f"{e}: the model cannot be explained (--explain, --adversarial-check)"
        ) from None
    except Exception as e:  # e.g. LookupError: no gradient defined for an op of a SavedModel
        text = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ConfigError(
            f"gradients cannot flow through the model to its inputs {attributor.input_names[:20]} "
            f"(--explain, --adversarial-check): {text}"
        ) from None
