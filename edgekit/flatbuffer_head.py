"""Write a new float head into a model's flatbuffer, in place, without TensorFlow.

A global version must run at the bundled file's speed: its head has to be
the one inside the flatbuffer (the interpreter ranks the words), not a
``head.npz`` the device applies on the host. The same holds for a device's
personal head, written into a copy of the flatbuffer kept in memory
(``Runtime.with_head``). Only the head's values change
between versions, never its shape or type, so its constant buffers are
overwritten byte for byte where they lie (located with
``flatbuffer_schema``), and the rest of the flatbuffer stays identical:

- float32 / float16 weights and bias: the new values, cast;
- int8 weights, one scale (``int8`` files): requantized symmetrically with a
  new scale; the int32 bias is requantized with ``input scale x weight scale``,
  as TFLite requires (the input scale is ``old bias scale / old weight scale``);
- int8 weights, one scale per word (``dynamic`` files): a new scale per row.

The scale and zero-point vectors keep their lengths, so they are
overwritten in place too. Shared buffers, external buffers, asymmetric
zero points, and a missing bias tensor (a zero bias the converter folded
away, while the new head has one) raise ``FlatHeadError``: the caller then
ships the head as ``head.npz`` (slower, still correct).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .flatbuffer_schema import BuiltinOperator, Model, TensorType
from .modelfile import ModelFile

INT8_MAX = 127
ROWS = 1024  # rows of a head written (or measured) at a time: small temporaries
DTYPES: dict[int, np.dtype] = {TensorType.FLOAT32: np.dtype("<f4"), TensorType.FLOAT16: np.dtype("<f2"),
                               TensorType.INT8: np.dtype("i1"), TensorType.INT32: np.dtype("<i4")}


class FlatHeadError(ValueError):
    """The flatbuffer's head cannot be rewritten in place; the message says why."""


@dataclass
class _Slot:
    """One constant tensor of the flatbuffer: where its bytes and its scales lie."""

    dtype: np.dtype
    shape: tuple[int, ...]
    data: int  # byte offset of the values
    scales: np.ndarray  # current scales (empty: not quantized)
    scale_at: int  # byte offset of the scale vector (-1: none)
    zero_points: np.ndarray


def write_head(file: ModelFile, head: tuple[np.ndarray, np.ndarray], weight_scale: float | None = None) -> bytes:
    """``file.flatbuffer`` with ``head = (W [F, V], b [V])`` as its head.

    ``weight_scale`` sets a per-tensor int8 scale (default: ``max|W| / 127``);
    other types ignore it. Raises ``FlatHeadError`` when the head cannot be
    written in place.
    """
    W, b = (np.asarray(a, np.float32) for a in head)
    meta = file.metadata.get("head") or {}
    if meta.get("weight_tensor") is None:
        raise FlatHeadError("the metadata does not name the head's tensors")
    out = bytearray(file.flatbuffer)
    model = _model(file.flatbuffer)
    weight = _slot(model, int(meta["weight_tensor"]))
    if weight.shape != (W.shape[1], W.shape[0]):
        raise FlatHeadError(f"head tensor has shape {weight.shape}, the new head is {W.T.shape}")
    w_scales = _write_weight(out, weight, W.T, weight_scale)
    if meta.get("bias_tensor") is None:
        if b.any():
            raise FlatHeadError("the converter folded a zero bias away, and the new head has a non-zero bias")
        return bytes(out)
    bias = _slot(model, int(meta["bias_tensor"]))
    if bias.shape != b.shape:
        raise FlatHeadError(f"bias tensor has shape {bias.shape}, the new bias is {b.shape}")
    if bias.dtype == np.dtype("<i4"):
        if len(weight.scales) == 0:
            raise FlatHeadError("an int32 bias beside a float weight")
        input_scale = float(bias.scales[0] / weight.scales[0])
        scale = np.broadcast_to(np.float32(input_scale) * w_scales, bias.scales.shape).astype("<f4")
        q = np.round(b / np.broadcast_to(scale, b.shape)).clip(-(2**31), 2**31 - 1)
        _put(out, bias.data, q.astype("<i4"))
        _put(out, bias.scale_at, scale)
    else:
        _put(out, bias.data, b.astype(bias.dtype))
    return bytes(out)


def default_int8_scale(W: np.ndarray) -> float:
    """Symmetric per-tensor scale: the largest weight maps to 127 (what the converter chose)."""
    return max(float(W.max(initial=0.0)), -float(W.min(initial=0.0))) / INT8_MAX or 1.0  # no |W| temporary


def per_tensor_int8(file: ModelFile) -> bool:
    """Whether the file's head weight is int8 with one scale: the case where the scale is a choice."""
    return per_tensor_int8_scale(file) is not None


def per_tensor_int8_scale(file: ModelFile) -> float | None:
    """The scale of the file's head weight when it is int8 with one scale, else ``None``."""
    weight = _slot(_model(file.flatbuffer), int(file.metadata["head"]["weight_tensor"]))
    return float(weight.scales[0]) if weight.dtype == np.dtype("i1") and len(weight.scales) == 1 else None


def _write_weight(out: bytearray, slot: _Slot, Wt: np.ndarray, weight_scale: float | None) -> np.ndarray:
    """Write ``Wt [V, F]`` into ``slot``; return the scales written (empty for floats).

    Row block by row block: a device writes its personal head into a copy of
    the flatbuffer, and whole-head temporaries would add several MB to its peak.
    """
    quantized = slot.dtype == np.dtype("i1")
    if quantized and slot.zero_points.any():
        raise FlatHeadError("the head's int8 weights are asymmetric (non-zero zero points)")
    if not quantized:
        scales = slot.scales
    elif len(slot.scales) == 1:
        scales = np.array([weight_scale or default_int8_scale(Wt)], "<f4")
    elif len(slot.scales) == Wt.shape[0]:
        scales = np.maximum(Wt.max(axis=1), -Wt.min(axis=1)) / INT8_MAX
        scales = scales.astype("<f4")
        scales[scales == 0] = 1.0
    else:
        raise FlatHeadError(f"{len(slot.scales)} weight scales for {Wt.shape[0]} rows")
    row_bytes = Wt.shape[1] * slot.dtype.itemsize
    for i in range(0, len(Wt), ROWS):
        rows = Wt[i : i + ROWS]
        if quantized:
            rows = np.round(rows / scales[i : i + ROWS, None] if len(scales) > 1 else rows / scales[0])
            rows = rows.clip(-INT8_MAX, INT8_MAX)
        _put(out, slot.data + i * row_bytes, rows.astype(slot.dtype))
    if quantized:
        _put(out, slot.scale_at, scales)
    return scales


def _put(out: bytearray, at: int, values: np.ndarray) -> None:
    raw = np.ascontiguousarray(values).tobytes()
    out[at : at + len(raw)] = raw


def _model(flatbuffer: bytes) -> Any:
    try:
        model = Model.GetRootAs(flatbuffer, 0)
        if model.SubgraphsLength() < 1:
            raise FlatHeadError("the flatbuffer has no subgraph")
        return model
    except (IndexError, TypeError, ValueError) as e:  # flatbuffers raises these on a malformed buffer
        raise FlatHeadError(f"the flatbuffer cannot be parsed ({e})") from None


def _slot(model: Any, index: int) -> _Slot:
    """The constant buffer behind tensor ``index``, following a DEQUANTIZE (float16 files) to its input."""
    graph = model.Subgraphs(0)
    if not 0 <= index < graph.TensorsLength():
        raise FlatHeadError(f"head tensor {index} is not in the flatbuffer")
    tensor = graph.Tensors(index)
    buffer = model.Buffers(tensor.Buffer())
    if buffer.DataLength() == 0:
        source = _dequantize_input(model, graph, index)
        if source is None:
            raise FlatHeadError(f"head tensor {index} is not a constant")
        return _slot(model, source)
    if buffer.Offset() > 1:
        raise FlatHeadError("the head's values lie outside the flatbuffer (external buffer)")
    users = [t for t in range(graph.TensorsLength()) if graph.Tensors(t).Buffer() == tensor.Buffer()]
    if users != [index]:
        raise FlatHeadError(f"the head's buffer is shared with tensors {users}")
    dtype = DTYPES.get(tensor.Type())
    if dtype is None:
        raise FlatHeadError(f"head tensor type {tensor.Type()} is not one edgekit writes")
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
    if buffer.DataLength() != int(np.prod(shape)) * dtype.itemsize:
        raise FlatHeadError(f"head buffer holds {buffer.DataLength()} bytes, shape {shape} needs more or fewer")
    q = tensor.Quantization()
    scales = np.zeros(0, "<f4") if q is None or q.ScaleIsNone() else q.ScaleAsNumpy().astype("<f4")
    zeros = np.zeros(0, np.int64) if q is None or q.ZeroPointIsNone() else q.ZeroPointAsNumpy()
    scale_at = -1 if not len(scales) else q.ScaleStart()
    return _Slot(dtype, shape, buffer.DataStart(), scales, scale_at, zeros)


def _dequantize_input(model: Any, graph: Any, index: int) -> int | None:
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == BuiltinOperator.DEQUANTIZE and op.OutputsLength() and op.Outputs(0) == index:
            return int(op.Inputs(0))
    return None


def output_ceiling(flatbuffer: bytes, output: int) -> float:
    """The largest value output tensor ``output`` can take: ``inf`` unless it is an int8 tensor dequantized.

    A full-int8 file computes its logits in int8, over a range calibrated on
    the version's own logits. A personal head can push a word past that
    range, where it saturates: words tie at the ceiling and the interpreter's
    ranking no longer tells them apart (the device then ranks on the host).
    """
    model = _model(flatbuffer)
    graph = model.Subgraphs(0)
    source = _dequantize_input(model, graph, output)
    if source is None or graph.Tensors(source).Type() != TensorType.INT8:
        return math.inf
    q = graph.Tensors(source).Quantization()
    if q is None or q.ScaleIsNone():
        return math.inf
    zero = 0 if q.ZeroPointIsNone() else int(q.ZeroPointAsNumpy()[0])
    return float((INT8_MAX - zero) * q.ScaleAsNumpy()[0])
