"""Finding a TensorFlow Lite interpreter on the device.

LiteRT (``ai-edge-litert``) is the supported runtime; ``tflite-runtime`` 2.14
is the fallback for older boards (it needs numpy<2 and Python <= 3.11, and can
only load files converted with ``--compat tflite-runtime-2.14``).
Choose explicitly with ``EDGEKIT_RUNTIME=litert`` or ``=tflite-runtime``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from typing import Any, Iterator

RUNTIMES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}
INSTALL_HINT = ("no TensorFlow Lite runtime found: install LiteRT with `pip install ai-edge-litert` "
                "(or, on Python <= 3.11 with numpy<2, `pip install tflite-runtime`)")


class RuntimeMissingError(RuntimeError):
    """No usable interpreter package is installed."""


def interpreter_class(prefer: str | None = None) -> tuple[type, str]:
    """The Interpreter class of the first runtime that imports, and its name."""
    prefer = prefer or os.environ.get("EDGEKIT_RUNTIME") or None
    if prefer is not None and prefer not in RUNTIMES:
        raise ValueError(f"unknown runtime {prefer!r}; choose one of {', '.join(RUNTIMES)}")
    order = [prefer] if prefer else list(RUNTIMES)
    errors = []
    for name in order:
        try:
            return importlib.import_module(RUNTIMES[name]).Interpreter, name
        except ImportError as e:  # missing, or built for another numpy
            errors.append(f"{name}: {e}")
    raise RuntimeMissingError(f"{INSTALL_HINT} ({'; '.join(errors)})")


def load_interpreter(content: bytes, num_threads: int | None = None,
                     prefer: str | None = None) -> tuple[Any, str]:
    """An allocated interpreter for a validated flatbuffer, and the runtime's name.

    ``content`` must already have passed ``edgekit.modelfile`` checks: the
    interpreter is native code and must never see an unchecked file.
    """
    cls, name = interpreter_class(prefer)
    with _native_stderr() as native_log:
        try:
            interp = cls(model_content=content, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            hint = (" (files for tflite-runtime 2.14 need `edgekit convert --compat tflite-runtime-2.14`)"
                    if name == "tflite-runtime" else "")
            raise RuntimeError(f"{name} cannot load this model: {e} {native_log()}{hint}".strip()) from None
    return interp, name


@contextlib.contextmanager
def _native_stderr() -> Iterator:
    """Hold back the runtime's native log lines ("INFO: Created TensorFlow Lite
    XNNPACK delegate") that would otherwise land in every app's stderr; what
    they said is kept for error messages."""
    with tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (some embedded hosts)
            yield lambda: ""
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace").strip())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
