"""What a conversion can produce: quantization modes and target runtimes.

Kept apart from ``converters.convert`` (which imports TensorFlow) so that
``edgekit convert --help`` builds its choices from these very tuples
without loading TensorFlow.
"""
from __future__ import annotations

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
COMPAT_TARGETS = ("litert", "tflite-runtime-2.14")
DEFAULT_QUANTIZE = "dynamic"
DEFAULT_COMPAT = "litert"
