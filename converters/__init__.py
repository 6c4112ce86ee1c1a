"""Workstation side of edgekit: TensorFlow training and conversion to ``.tflite``.

Needs ``pip install 'edgekit[convert]'``. The device package imports this only
inside the commands that need TensorFlow.
"""
