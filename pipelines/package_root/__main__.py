"""``python -m keras_batch_score``: the ``batch-score`` command."""

from keras_batch_score.pipelines.cli import entry

if __name__ == "__main__":
    entry()
