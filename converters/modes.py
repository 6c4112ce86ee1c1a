"""What a conversion can produce: quantization modes and target runtimes.

Kept apart from ``converters.convert`` (which imports TensorFlow) so that
``edgekit convert --help`` builds its choices from these very tuples
without loading TensorFlow.
"""
from __future__ import annotations

# int8-mixed: int8 weights and the recurrent cell's and head's matrix products; the cell's gate
# arithmetic and the features projection float32. Within 1 point of float top-3 on every
# held-out set where plain int8 is not, at int8's size and speed (benchmarks/train_base_notes.md).
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int8-mixed")
ALL_MODES = QUANTIZE_MODES[:4]  # what --quantize all writes: the established variants
CALIBRATED_MODES = ("int8", "int8-mixed")  # full-integer modes: activation ranges from calibration text
COMPAT_TARGETS = ("litert", "tflite-runtime-2.14")
DEFAULT_QUANTIZE = "dynamic"
DEFAULT_COMPAT = "litert"
