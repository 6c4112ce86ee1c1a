"""Workstation side of edgekit: TensorFlow training and conversion to ``.tflite``.

Needs ``pip install 'edgekit[convert]'``; the bundled Keras model (``models/``)
and text (``data/``) come with a source checkout installed with
``pip install -e '.[convert]'``. The device package imports this only inside
the commands that need TensorFlow.
"""
from __future__ import annotations

from pathlib import Path


def missing_from_checkout(path: Path, instead: str) -> str:
    """Why a default model or text path is missing, and the two ways out.

    ``models/`` and ``data/`` sit beside the package in the repository and are
    not packaged, so a non-editable install resolves them inside site-packages.
    """
    return (f"{path}: not found; the bundled Keras model and data/ ship with a source checkout: "
            f"run from one installed with pip install -e '.[convert]', or pass {instead}")
