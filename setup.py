"""Thin shim so that Dataflow's ``--setup_file=./setup.py`` can package the project.

All metadata lives in pyproject.toml.
"""

import setuptools

setuptools.setup()
