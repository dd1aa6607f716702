"""keras-batch-score: columnar batch scoring of Keras models on Apache Beam.

This folder is installed as the ``keras_batch_score`` package root (see
``[tool.setuptools]`` in pyproject.toml): the repository's ``pipelines/`` and
``transforms/`` folders become ``keras_batch_score.pipelines`` and
``keras_batch_score.transforms``, so the wheel installs no bare top-level
``pipelines`` or ``transforms`` package. ``python -m keras_batch_score`` runs
the ``batch-score`` command.
"""
