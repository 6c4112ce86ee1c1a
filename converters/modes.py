"""What a conversion can produce: quantization modes and target runtimes.

Kept apart from ``converters.convert`` (which imports TensorFlow) so that
``edgekit convert --help`` builds its choices from these very tuples
without loading TensorFlow.
"""
from __future__ import annotations

# int8-float-gates: int8 weights and matrix products, the recurrent cell's elementwise
# arithmetic float32; within 1 point of float top-3 where plain int8 is not (benchmarks/train_base_notes.md).
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int8-float-gates")
ALL_MODES = QUANTIZE_MODES[:4]  # what --quantize all writes: the established variants
CALIBRATED_MODES = ("int8", "int8-float-gates")  # full-integer modes: activation ranges from calibration text
COMPAT_TARGETS = ("litert", "tflite-runtime-2.14")
DEFAULT_QUANTIZE = "dynamic"
DEFAULT_COMPAT = "litert"
