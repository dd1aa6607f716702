"""Start-up: importing TensorFlow for scoring does not import scikit-learn (transforms/core/tf_quiet.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from keras_batch_score.transforms.core.tf_quiet import import_tensorflow
import_tensorflow()
assert "sklearn" not in sys.modules, "import_tensorflow imported scikit-learn"
assert "scipy.stats" not in sys.modules, "import_tensorflow imported scipy.stats"
# Beam's state cache sizes side inputs with objsize, which calls vars() on every module
import objsize
objsize.get_deep_size([1, 2, 3])
for module in list(sys.modules.values()):
    vars(module)
assert "sklearn" not in sys.modules, "vars() on the deferred module imported scikit-learn"
# Autograph, tracing a tf.function, reads __file__ of every module in sys.modules
import tensorflow as tf
tf.function(lambda x: x + 1)(tf.constant(1))
assert "sklearn" not in sys.modules, "tracing a tf.function imported scikit-learn"
from keras_batch_score.transforms.preprocess.ops import ImageDecoder
ImageDecoder((4, 4))(__import__("numpy").array([tf.io.encode_png(tf.zeros((6, 6, 3), tf.uint8)).numpy()], dtype=object))
assert "sklearn" not in sys.modules, "the image decoder imported scikit-learn"
import keras
# keras.wrappers is still there, loaded on first use
assert keras.wrappers.SKLearnClassifier.__name__ == "SKLearnClassifier"
assert "sklearn" in sys.modules
assert type(keras.wrappers).__name__ == "module"  # the real module replaced the stand-in
from keras.wrappers import SKLearnRegressor  # noqa: F401
print("ok")
"""


def test_import_tensorflow_defers_keras_sklearn_wrappers():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
