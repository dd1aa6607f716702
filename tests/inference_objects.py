"""Registered Keras layers for the inference-error tests (``--custom-object tests.inference_objects:X``)."""

from __future__ import annotations

from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402

SENTINEL = 999.0


@keras.saving.register_keras_serializable(package="kbs_inference_test")
class RaiseOnSentinel(keras.layers.Layer):
    """Identity that raises (InvalidArgumentError) when any row's first value equals 999."""

    def call(self, x):
        check = tf.debugging.assert_none_equal(
            x[:, 0], tf.constant(SENTINEL, x.dtype), message="sentinel 999 in f0"
        )
        with tf.control_dependencies([check]):
            return tf.identity(x)
