"""Registered custom Keras classes for the model zoo tests (imported through --custom-object)."""

from __future__ import annotations

from keras_batch_score.transforms.core.tf_quiet import import_tensorflow

import_tensorflow()
import keras  # noqa: E402


@keras.saving.register_keras_serializable(package="kbs_zoo")
class ZooMLP(keras.Model):
    """A subclassed model with no Input layer: its inputs are known only from its build config."""

    def __init__(self, units: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.head = keras.layers.Dense(1, activation="sigmoid")

    def call(self, x):
        return self.head(self.hidden(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kbs_zoo")
class ZooTwoTower(keras.Model):
    """A subclassed model taking a dict of two inputs and returning a dict of two outputs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(6, activation="relu")
        self.score = keras.layers.Dense(1)
        self.probs = keras.layers.Dense(3, activation="softmax")

    def call(self, inputs):
        h = self.hidden(keras.ops.concatenate([inputs["a"], inputs["b"]], axis=-1))
        return {"score": self.score(h), "probs": self.probs(h)}
