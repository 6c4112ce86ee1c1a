"""Write a new float head into a model's flatbuffer, in place, without TensorFlow.

A global version must run at the bundled file's speed: its head has to be
the one inside the flatbuffer (the interpreter ranks the words), not a
``head.npz`` the device applies on the host. The same holds for a device's
personal head, written into a copy of the flatbuffer kept in memory
(``Runtime.with_head``; ``rank_slots`` then widens its word ranking to the
personal words). Learning's batches run a copy without the word ranking
(``without_ranking``). Only the head's values change
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
# Ops between the word ranking's slice and its top-k and sum: their outputs are as wide as their input.
ELEMENTWISE = {BuiltinOperator.QUANTIZE, BuiltinOperator.DEQUANTIZE, BuiltinOperator.EXP}
RANKING = {BuiltinOperator.TOPK_V2, BuiltinOperator.SUM}  # where the word ranking ends
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


def rank_slots(flatbuffer: bytes, logits: int, slots: tuple[int, int], end: int, unk: int) -> bytes:
    """``flatbuffer`` whose word ranking also takes in the personal slots below ``end``, and whose body reads
    every slot id (``slots``: ``[first, vocabulary size)``) as ``unk``: a device's personal copy.

    The ranking is a strided slice of output tensor ``logits`` (or of the
    int8 logits it dequantizes) that ends at the first slot, feeding the
    top-k and the sum of exps (through elementwise ops): the slice's end
    constant and the static shapes along the way are rewritten in place, so
    the interpreter ranks a user's own words with the others and sums their
    exps, and the host has nothing to add per context. The embedding rows of
    the slots become ``unk``'s, so slot ids go to the body as they are.
    Raises ``FlatHeadError`` when the graph is not the converter's.
    """
    out, model = bytearray(flatbuffer), _model(flatbuffer)
    graph, ops = model.Subgraphs(0), _ops(model)
    sources = {logits, _dequantize_input(model, graph, logits)}  # the logits, or the int8 ones they come from
    cuts = [op for kind, op in ops if kind == BuiltinOperator.STRIDED_SLICE and op.Inputs(0) in sources]
    if len(cuts) != 1 or cuts[0].InputsLength() < 3:
        raise FlatHeadError(f"{len(cuts)} strided slices of the logits, the word ranking reads one")
    begin, stop = (_slot(model, cuts[0].Inputs(i)) for i in (1, 2))
    if begin.shape != stop.shape or len(begin.shape) != 1 or not begin.shape[0] or begin.dtype != np.dtype("<i4"):
        raise FlatHeadError("the word ranking's slice bounds are not int32 vectors")
    first = int(np.frombuffer(flatbuffer, "<i4", begin.shape[0], begin.data)[-1])
    last = int(np.frombuffer(flatbuffer, "<i4", stop.shape[0], stop.data)[-1])
    if last != slots[0] or not slots[0] <= end <= slots[1]:
        raise FlatHeadError(f"the word ranking does not end at the first personal slot ({slots[0]})")
    _own(ops, cuts[0].Inputs(2), "the word ranking's end")
    _put(out, stop.data + 4 * (stop.shape[0] - 1), np.array([end], "<i4"))
    widened = _downstream(ops, [cuts[0].Outputs(0)], ELEMENTWISE, RANKING,
                          "the word ranking: only the top-k and the sum of exps may")
    for t in widened:
        _set_width(out, graph.Tensors(t), slots[0] - first, end - first, f"tensor {t} of the word ranking")
    tables = [_slot(model, op.Inputs(0)) for kind, op in ops
              if kind == BuiltinOperator.GATHER and graph.Tensors(op.Inputs(0)).ShapeLength()
              and graph.Tensors(op.Inputs(0)).ShapeAsNumpy()[0] == slots[1]]
    if len(tables) != 1 or len(tables[0].scales) > 1 or len(tables[0].shape) != 2:
        raise FlatHeadError("no embedding table with one row per id and one scale")
    row = tables[0].shape[1] * tables[0].dtype.itemsize
    unk_row = flatbuffer[tables[0].data + unk * row : tables[0].data + (unk + 1) * row]
    out[tables[0].data + slots[0] * row : tables[0].data + slots[1] * row] = unk_row * (slots[1] - slots[0])
    return bytes(out)


def narrow_ranking(flatbuffer: bytes, width: int) -> bytes:
    """``flatbuffer`` whose top-k ranks only its ``width`` best words (no more than it ranks now).

    The interpreter's top-k costs time in proportion to how many words it
    keeps: a personal copy that merges the phrase memory over a few of the
    best words need not rank a whole suggestion strip's worth. The k
    constant and the static widths of the top-k's outputs (and of the
    elementwise ops after them, up to the graph's outputs) are rewritten in
    place. Raises ``FlatHeadError`` when the graph has no single top-k with a
    constant k of its own (a small model's converter may share the constant
    32 with a layer's width).
    """
    out, model = bytearray(flatbuffer), _model(flatbuffer)
    graph, ops = model.Subgraphs(0), _ops(model)
    tops = [op for kind, op in ops if kind == BuiltinOperator.TOPK_V2]
    if len(tops) != 1:
        raise FlatHeadError(f"{len(tops)} top-k operators, the word ranking has one")
    _own(ops, tops[0].Inputs(1), "the top-k's k")
    k = _slot(model, tops[0].Inputs(1))
    if k.shape not in ((), (1,)) or k.dtype != np.dtype("<i4"):
        raise FlatHeadError("the top-k's k is not an int32 constant")
    old = int(np.frombuffer(flatbuffer, "<i4", 1, k.data)[0])
    if not 1 <= width <= old:
        raise FlatHeadError(f"cannot rank {width} words with a top-k of {old}")
    _put(out, k.data, np.array([width], "<i4"))
    ranked = _downstream(ops, [tops[0].Outputs(0), tops[0].Outputs(1)], ELEMENTWISE | {BuiltinOperator.ADD},
                         set(), "the top-k: only elementwise ops and an id offset may")
    for t in ranked:
        _set_width(out, graph.Tensors(t), old, width, f"tensor {t} of the top-k")
    return bytes(out)


def _ops(model: Any) -> list[tuple[int, Any]]:
    """The first subgraph's operators, each with its builtin code, in order."""
    graph = model.Subgraphs(0)
    return [(_builtin(model, op), op) for op in map(graph.Operators, range(graph.OperatorsLength()))]


def _own(ops: list[tuple[int, Any]], tensor: int, what: str) -> None:
    """Refuse a constant ``tensor`` that more than one operator reads: rewriting it would change them all."""
    if sum(tensor in _inputs(op) for _, op in ops) != 1:
        raise FlatHeadError(f"{what} is shared with other operators")


def _downstream(ops: list[tuple[int, Any]], tensors: list[int], passes: set[int], stops: set[int],
                what: str) -> list[int]:
    """``tensors`` and every tensor derived from them through operators in ``passes`` (as wide as their
    input), in graph order; an operator in ``stops`` may read them, any other raises ``FlatHeadError``
    (``what`` says which readers may)."""
    derived = list(tensors)
    for kind, op in ops:
        if not set(_inputs(op)) & set(derived) or kind in stops:
            continue
        if kind not in passes:
            raise FlatHeadError(f"operator {kind} reads {what}")
        derived.append(op.Outputs(0))
    return derived


def _set_width(out: bytearray, tensor: Any, old: int, new: int, what: str) -> None:
    """Rewrite the last dimension of ``tensor``'s static shape (and shape signature) from ``old`` to ``new``."""
    for length, start in ((tensor.ShapeLength(), tensor.ShapeStart),
                          (tensor.ShapeSignatureLength(), tensor.ShapeSignatureStart)):
        if length:
            at = start() + 4 * (length - 1)
            if int(np.frombuffer(out, "<i4", 1, at)[0]) != old:
                raise FlatHeadError(f"{what} is not {old} wide")
            _put(out, at, np.array([new], "<i4"))


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
        if _builtin(model, op) == BuiltinOperator.DEQUANTIZE and op.OutputsLength() and op.Outputs(0) == index:
            return int(op.Inputs(0))
    return None


def _builtin(model: Any, op: Any) -> int:
    code = model.OperatorCodes(op.OpcodeIndex())
    return max(code.BuiltinCode(), code.DeprecatedBuiltinCode())


def _inputs(op: Any) -> list[int]:
    return [op.Inputs(i) for i in range(op.InputsLength())]


def _outputs(op: Any) -> list[int]:
    return [op.Outputs(i) for i in range(op.OutputsLength())]


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


def without_ranking(flatbuffer: bytes, features: int, logits: int) -> bytes | None:
    """A copy of ``flatbuffer`` whose only outputs are tensors ``features`` and ``logits``, with the operators
    after the last one that writes them cut off: what learning reads of a batch. ``None``: nothing to cut.

    The word ranking (the slice of the logits, its exps and their sum, the
    top-k) was half of each 16-context invoke, and learning reads none of it.
    The copy is the checked graph with its operator vector and its output
    vector shortened in place: a prefix of operators that read only what the
    ones before them wrote, and two of its outputs, so it needs no check of its
    own, and the outputs kept are computed by the same operators as before.
    """
    graph = _model(flatbuffer).Subgraphs(0)
    n, wanted = graph.OperatorsLength(), {features, logits}
    keep = next((i + 1 for i in reversed(range(n)) if wanted & set(_outputs(graph.Operators(i)))), 0)
    if len(wanted) != 2 or not keep or graph.OutputsLength() < 2 or (keep == n and graph.OutputsLength() == 2):
        return None
    out = bytearray(flatbuffer)
    _put(out, graph.OperatorsStart() - 4, np.array([keep], "<u4"))
    _put(out, graph.OutputsStart() - 4, np.array([2, features, logits], "<u4"))
    return bytes(out)
