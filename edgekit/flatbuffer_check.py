"""A structural check of a TensorFlow Lite flatbuffer before LiteRT sees it.

LiteRT is native code that trusts the flatbuffer it is given: an edited
tensor shape, buffer index or operator code can crash the process or make it
allocate gigabytes, and a SHA-256 stored beside the flatbuffer proves nothing
against someone who can rewrite both. So every flatbuffer is parsed here
first, in Python (``flatbuffer_schema``'s readers over the ``flatbuffers``
runtime: every read is bounds-checked), and refused unless it looks like
something edgekit's converter makes:

- one subgraph, schema version 3, no custom ops, no sparse or variable
  tensors, no buffers stored outside the flatbuffer;
- every operator code, at its version, with its arity and options, in
  ``flatbuffer_ops.ALLOWED_OPS``;
- every tensor of an allowed type, rank <= ``MAX_RANK``, at most one dynamic
  (batch) dimension, at most ``Limits.tensor_elements`` elements, its
  constant data exactly as long as its shape says, its quantization
  parameters sized for its shape;
- every index (graph inputs and outputs, operator inputs and outputs,
  buffers, operator codes, signature tensors) in range; operator outputs
  never constant, each tensor written once, read only after it is written;
- the arena (all non-constant tensors at the largest batch the runtime runs,
  ``BATCH``) under ``Limits.arena_bytes``;
- ``FILL``, the one allowed op whose output size comes from data, fills
  exactly its declared shape (its dims are constants, or a ``PACK`` of
  constants and the batch size).

Extending the allow-list: see ``edgekit.flatbuffer_ops``.
"""
from __future__ import annotations

import struct
import sys
from typing import Any

import numpy as np

from .errors import ModelFileError
from .flatbuffer_graph import (
    BATCH,
    ITEM_BYTES,
    LIMITS,
    TYPE_NAMES,
    Graph,
    Limits,
    Refused,
    Tensor,
    count,
    indices,
    require,
)
from .flatbuffer_ops import ALLOWED_OPS, OP_NAMES, check_operators, op_code, opcodes
from .flatbuffer_schema import Model

__all__ = ["ALLOWED_OPS", "BATCH", "LIMITS", "Graph", "Limits", "Tensor", "check_flatbuffer", "describe"]
SCHEMA_VERSION = 3
MAX_RANK = 4


def check_flatbuffer(buf: bytes, limits: Limits = LIMITS) -> Graph:
    """Parse and check ``buf``; returns its graph or raises ``ModelFileError`` saying what is wrong."""
    try:
        return _check(buf, limits)
    except Refused as e:
        raise ModelFileError(f"the TensorFlow Lite part is not one edgekit runs: {e}") from None
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError) as e:
        raise ModelFileError(f"the TensorFlow Lite part is corrupt (its structure cannot be read: "
                             f"{type(e).__name__})") from None


def _check(buf: bytes, limits: Limits) -> Graph:
    if len(buf) < 8 or struct.unpack_from("<I", buf)[0] >= len(buf):
        raise Refused("too short, or its root table lies outside it")
    model = Model.GetRootAs(buf, 0)
    require(model.Version() == SCHEMA_VERSION, f"schema version {model.Version()}, expected {SCHEMA_VERSION}")
    require(model.SubgraphsLength() == 1, f"{model.SubgraphsLength()} subgraphs, expected 1")
    buffers = _buffer_sizes(model, limits, len(buf))
    codes = opcodes(model)
    sub = model.Subgraphs(0)
    n_tensors = count(sub.TensorsLength(), limits.tensors, "tensors")
    tensors = [_tensor(sub.Tensors(i), i, buffers, limits) for i in range(n_tensors)]
    graph = Graph(tensors, indices(sub.InputsAsNumpy, sub.InputsLength(), len(tensors), "graph input"),
                  indices(sub.OutputsAsNumpy, sub.OutputsLength(), len(tensors), "graph output"))
    require(not any(tensors[i].constant for i in graph.inputs), "a graph input is a constant")
    check_operators(model, sub, graph, codes, limits)
    _check_arena(graph, limits)
    _check_signatures(model, len(tensors))
    for i in range(count(model.MetadataLength(), 64, "metadata entries")):
        entry = model.Metadata(i)
        require(0 <= entry.Buffer() < len(buffers) and _is_utf8(entry.Name()), "a metadata entry is damaged")
    return graph


def _buffer_sizes(model: Model, limits: Limits, size: int) -> list[int]:
    """Each buffer's byte length; buffers stored outside the flatbuffer (offset/size) are refused."""
    sizes = []
    for i in range(count(model.BuffersLength(), limits.buffers, "buffers")):
        b = model.Buffers(i)
        require(b.Offset() == 0 and b.Size() == 0, f"buffer {i} lies outside the flatbuffer")
        n = b.DataLength()
        require(n <= size, f"buffer {i} is longer than the file")
        sizes.append(n)
    return sizes


def _tensor(t: Any, index: int, buffers: list[int], limits: Limits) -> Tensor:
    """One tensor's shape, type and constness, after its own checks."""
    require(t.Type() in ITEM_BYTES, f"tensor {index} has type {TYPE_NAMES.get(t.Type(), t.Type())}")
    require(not t.IsVariable() and t.Sparsity() is None and t.VariantTensorsLength() == 0,
             f"tensor {index} is variable or sparse")
    require(_is_utf8(t.Name()), f"tensor {index} has a name that is not UTF-8")  # the interpreter decodes it
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if count(t.ShapeLength(), MAX_RANK, "dimensions") else ()
    require(all(d >= 0 for d in shape), f"tensor {index} has a negative dimension")
    batched = bool(t.ShapeSignatureLength()) and _check_signature(t, index, shape)
    elements = int(np.prod(shape, dtype=object))
    require(elements <= limits.tensor_elements, f"tensor {index} has shape {list(shape)}: {elements} elements "
             f"(at most {limits.tensor_elements})")
    require(0 <= t.Buffer() < len(buffers), f"tensor {index} names a missing buffer")
    data = buffers[t.Buffer()]
    require(data in (0, elements * ITEM_BYTES[t.Type()]), f"tensor {index} has shape {list(shape)} "
             f"but {data} bytes of data")
    _check_quantization(t.Quantization(), index, shape, TYPE_NAMES[t.Type()])
    return Tensor(shape, TYPE_NAMES[t.Type()], data > 0, batched)


def _check_signature(t: Any, index: int, shape: tuple[int, ...]) -> bool:
    """The shape with ``-1`` for the batch: the same rank, one dynamic dimension at most, 1 there at batch 1."""
    rank = count(t.ShapeSignatureLength(), MAX_RANK, "dimensions")
    sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if rank else ()
    require(len(sig) == len(shape) and sum(d == -1 for d in sig) <= 1, f"tensor {index}: shape signature "
             f"{list(sig)} does not fit shape {list(shape)}")
    require(all(s == d or (s == -1 and d == 1) for s, d in zip(sig, shape, strict=True)), f"tensor {index}: shape "
             f"signature {list(sig)} does not fit shape {list(shape)}")
    return -1 in sig


# A quantization scale outside this range is no converter's output, and LiteRT aborts the process on some
# (a negative or vanishing scale fails a native check inside invoke); real int8 scales are about 1e-9..1.
SCALE_RANGE = (1e-15, 1e6)
ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}  # every other quantized type: zero


def _check_quantization(q: Any, index: int, shape: tuple[int, ...], dtype: str) -> None:
    """Scales and zero points: one each, or one per slice of the quantized dimension, with values LiteRT takes."""
    if q is None:
        return
    require(q.DetailsType() == 0, f"tensor {index} has custom quantization")
    n_scale, n_zero = q.ScaleLength(), q.ZeroPointLength()
    if not n_scale and not n_zero:
        return
    dim = q.QuantizedDimension()
    require(0 <= dim < max(len(shape), 1), f"tensor {index} is quantized along a missing dimension")
    per_axis = shape[dim] if shape else 1
    require(n_scale in (1, per_axis) and n_zero in (0, n_scale), f"tensor {index} has {n_scale} scales and "
             f"{n_zero} zero points for shape {list(shape)}")
    scales = q.ScaleAsNumpy() if n_scale else np.ones(1, np.float32)
    low, high = SCALE_RANGE
    require(bool(np.all(np.isfinite(scales) & (scales >= low) & (scales <= high))),
            f"tensor {index} has a quantization scale outside [{low:g}, {high:g}]")
    if n_zero:
        lo, hi = ZERO_POINT_RANGE.get(dtype, (0, 0))
        zeros = q.ZeroPointAsNumpy()
        require(bool(np.all((zeros >= lo) & (zeros <= hi))), f"tensor {index} ({dtype}) has a zero point "
                f"outside [{lo}, {hi}]")


def _check_arena(graph: Graph, limits: Limits) -> None:
    """Bytes of every non-constant tensor, batched ones at ``BATCH``: what the interpreter allocates."""
    total = sum(t.nbytes * (BATCH if t.batched else 1) for t in graph.tensors if not t.constant)
    require(total <= limits.arena_bytes, f"its tensors need {total / 2**20:.0f} MiB at batch {BATCH} "
             f"(at most {limits.arena_bytes / 2**20:.0f} MiB)")


def _check_signatures(model: Model, n_tensors: int) -> None:
    for i in range(count(model.SignatureDefsLength(), 8, "signatures")):
        sig = model.SignatureDefs(i)
        require(sig.SubgraphIndex() == 0 and _is_utf8(sig.SignatureKey()), "a signature is damaged")
        for get, length in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
            for j in range(count(length, LIMITS.operator_arity, "signature tensors")):
                entry = get(j)
                require(0 <= entry.TensorIndex() < n_tensors and _is_utf8(entry.Name()),
                         "a signature names a tensor out of range, or by a name that is not UTF-8")


def _is_utf8(name: bytes | None) -> bool:
    if name is None:
        return True
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def describe(buf: bytes) -> list[str]:
    """Operator codes and versions of a flatbuffer (or a model file: it starts with one), to extend ``ALLOWED_OPS``."""
    model = Model.GetRootAs(buf, 0)
    return sorted({f"{OP_NAMES.get(op_code(model, op), op)} v{model.OperatorCodes(op.OpcodeIndex()).Version()}"
                   for sub in [model.Subgraphs(0)] for op in map(sub.Operators, range(sub.OperatorsLength()))})


if __name__ == "__main__":  # python -m edgekit.flatbuffer_check MODEL.tflite ...
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            print(path, *describe(f.read()), sep="\n  ")
