"""A structural check of a TensorFlow Lite flatbuffer before LiteRT sees it.

LiteRT is native code that trusts the flatbuffer it is given: an edited
tensor shape, buffer index or operator code can crash the process or make it
allocate gigabytes, and a SHA-256 stored beside the flatbuffer proves nothing
against someone who can rewrite both. So every flatbuffer is parsed here
first, in Python (the ``tflite`` schema classes over the ``flatbuffers``
runtime: every read is bounds-checked), and refused unless it looks like
something edgekit's converter makes:

- one subgraph, schema version 3, no custom ops, no sparse or variable
  tensors, no buffers stored outside the flatbuffer;
- every operator code, at its version, in ``ALLOWED_OPS``;
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

Extending the allow-list: convert a model with the new layer (every
quantization and ``--compat`` target), list its operator codes and versions
(``python -m edgekit.flatbuffer_check FILE``), add them to ``ALLOWED_OPS``
and keep the converter's tests loading what it writes.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.PackOptions import PackOptions
from tflite.SplitOptions import SplitOptions
from tflite.UnpackOptions import UnpackOptions
from tflite.Model import Model
from tflite.TensorType import TensorType

from .errors import ModelFileError

BATCH = 256  # the most contexts one invoke runs (``Runtime`` resizes its batch interpreter to this)
SCHEMA_VERSION = 3
MAX_RANK = 4


class OpForm(NamedTuple):
    """How edgekit's converter emits one operator: its highest version, arity and options table."""

    version: int
    inputs: int | None  # None: as many as its options say (PACK's values_count)
    outputs: int | None  # None: as many as its options say (SPLIT's num_splits, UNPACK's num)
    options: str | None  # the BuiltinOptions table it carries, or None


# What the converter emits for LSTM and GRU models, every quantization, for
# LiteRT and tflite-runtime 2.14. A kernel trusts its arity and options: a
# LOGISTIC relabelled SPLIT (one input where two are read) crashed LiteRT.
ALLOWED_OPS = {
    "ADD": OpForm(2, 2, 1, "AddOptions"), "DEQUANTIZE": OpForm(3, 1, 1, None), "EXP": OpForm(1, 1, 1, "ExpOptions"),
    "FILL": OpForm(3, 2, 1, None), "FULLY_CONNECTED": OpForm(12, 3, 1, "FullyConnectedOptions"),
    "GATHER": OpForm(2, 2, 1, "GatherOptions"), "LESS": OpForm(1, 2, 1, None), "LOGISTIC": OpForm(2, 1, 1, None),
    "MUL": OpForm(2, 2, 1, "MulOptions"), "PACK": OpForm(1, None, 1, "PackOptions"),
    "SELECT_V2": OpForm(1, 3, 1, "SelectV2Options"), "SHAPE": OpForm(1, 1, 1, "ShapeOptions"),
    "SPLIT": OpForm(2, 2, None, "SplitOptions"), "STRIDED_SLICE": OpForm(2, 4, 1, "StridedSliceOptions"),
    "SUB": OpForm(2, 2, 1, "SubOptions"), "SUM": OpForm(1, 2, 1, "ReducerOptions"), "TANH": OpForm(2, 1, 1, None),
    "TOPK_V2": OpForm(2, 2, 2, "TopKV2Options"), "TRANSPOSE": OpForm(2, 2, 1, None),
    "UNPACK": OpForm(2, 1, None, "UnpackOptions"),
}
OPTIONAL_INPUTS = {("FULLY_CONNECTED", 2)}  # (op, input position) that may be -1: a folded zero bias
ITEM_BYTES = {TensorType.FLOAT32: 4, TensorType.FLOAT16: 2, TensorType.INT32: 4, TensorType.INT8: 1,
              TensorType.BOOL: 1}
_OP_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
_OPTION_NAMES = {code: name for name, code in vars(BuiltinOptions).items() if not name.startswith("_")}
_TYPE_NAMES = {code: name.lower() for name, code in vars(TensorType).items() if not name.startswith("_")}
_BYTES_BY_NAME = {_TYPE_NAMES[code]: n for code, n in ITEM_BYTES.items()}


@dataclass(frozen=True)
class Limits:
    """Bounds on one flatbuffer; generous for a keyboard model (the bundled one uses a few percent)."""

    tensors: int = 8192
    operators: int = 8192
    buffers: int = 8192
    operator_arity: int = 1024  # inputs or outputs of one operator (UNPACK has one per context token)
    tensor_elements: int = 1 << 26  # 64 Mi: a 100,000-word head over 512 features fits
    arena_bytes: int = 1 << 30  # non-constant tensors at batch ``BATCH``


LIMITS = Limits()


class Tensor(NamedTuple):
    """What the rest of edgekit needs to know about one tensor."""

    shape: tuple[int, ...]  # at batch 1
    dtype: str  # "float32", "int8", ...
    constant: bool
    batched: bool  # one dimension is the batch (``-1`` in its shape signature)

    @property
    def nbytes(self) -> int:
        """Bytes at batch 1."""
        return int(np.prod(self.shape, dtype=object)) * _BYTES_BY_NAME[self.dtype]


class Graph(NamedTuple):
    """The checked flatbuffer's one subgraph: its tensors and the indices of its inputs and outputs."""

    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]


class Refused(ValueError):
    """The flatbuffer is not one edgekit would run; the message says why."""


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
    _require(model.Version() == SCHEMA_VERSION, f"schema version {model.Version()}, expected {SCHEMA_VERSION}")
    _require(model.SubgraphsLength() == 1, f"{model.SubgraphsLength()} subgraphs, expected 1")
    buffers = _buffer_sizes(model, limits, len(buf))
    opcodes = _opcodes(model)
    sub = model.Subgraphs(0)
    tensors = [_tensor(sub.Tensors(i), i, buffers, limits) for i in range(_count(sub.TensorsLength(), limits.tensors, "tensors"))]
    graph = Graph(tensors, _indices(sub.InputsAsNumpy, sub.InputsLength(), len(tensors), "graph input"),
                  _indices(sub.OutputsAsNumpy, sub.OutputsLength(), len(tensors), "graph output"))
    _require(not any(tensors[i].constant for i in graph.inputs), "a graph input is a constant")
    _check_operators(model, sub, graph, opcodes, limits, buf)
    _check_arena(graph, limits)
    _check_signatures(model, len(tensors))
    for i in range(_count(model.MetadataLength(), 64, "metadata entries")):
        entry = model.Metadata(i)
        _require(0 <= entry.Buffer() < len(buffers) and _is_utf8(entry.Name()), "a metadata entry is damaged")
    return graph


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise Refused(problem)


def _count(n: int, limit: int, what: str) -> int:
    """A vector's length, refused past ``limit`` before anything iterates over it."""
    _require(0 <= n <= limit, f"{n} {what} (at most {limit})")
    return n


def _indices(as_numpy: Any, length: int, n_tensors: int, what: str, optional: bool = False,
             limit: int = LIMITS.operator_arity) -> list[int]:
    """A vector of tensor indices, each in range (``-1``, an omitted optional input, where allowed)."""
    if not _count(length, limit, f"{what}s"):
        return []
    values = [int(v) for v in as_numpy()]
    low = -1 if optional else 0
    _require(all(low <= v < n_tensors for v in values), f"a {what} names a tensor out of range")
    return values


def _buffer_sizes(model: Model, limits: Limits, size: int) -> list[int]:
    """Each buffer's byte length; buffers stored outside the flatbuffer (offset/size) are refused."""
    sizes = []
    for i in range(_count(model.BuffersLength(), limits.buffers, "buffers")):
        b = model.Buffers(i)
        _require(b.Offset() == 0 and b.Size() == 0, f"buffer {i} lies outside the flatbuffer")
        n = b.DataLength()
        _require(n <= size, f"buffer {i} is longer than the file")
        sizes.append(n)
    return sizes


def _opcodes(model: Model) -> list[str]:
    names = []
    for i in range(_count(model.OperatorCodesLength(), len(ALLOWED_OPS), "operator codes")):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # the schema keeps two fields for old files
        name = _OP_NAMES.get(code, f"#{code}")
        _require(oc.CustomCode() is None and name in ALLOWED_OPS, f"operator {name} is not one edgekit's "
                 "converter emits")
        _require(1 <= oc.Version() <= ALLOWED_OPS[name].version, f"operator {name} version {oc.Version()} "
                 f"(edgekit runs versions up to {ALLOWED_OPS[name].version})")
        names.append(name)
    return names


def _tensor(t: Any, index: int, buffers: list[int], limits: Limits) -> Tensor:
    """One tensor's shape, type and constness, after its own checks."""
    _require(t.Type() in ITEM_BYTES, f"tensor {index} has type {_TYPE_NAMES.get(t.Type(), t.Type())}")
    _require(not t.IsVariable() and t.Sparsity() is None and t.VariantTensorsLength() == 0,
             f"tensor {index} is variable or sparse")
    _require(_is_utf8(t.Name()), f"tensor {index} has a name that is not UTF-8")  # the interpreter decodes it
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if _count(t.ShapeLength(), MAX_RANK, "dimensions") else ()
    _require(all(d >= 0 for d in shape), f"tensor {index} has a negative dimension")
    batched = bool(t.ShapeSignatureLength()) and _check_signature(t, index, shape)
    elements = int(np.prod(shape, dtype=object))
    _require(elements <= limits.tensor_elements, f"tensor {index} has shape {list(shape)}: {elements} elements "
             f"(at most {limits.tensor_elements})")
    _require(0 <= t.Buffer() < len(buffers), f"tensor {index} names a missing buffer")
    data = buffers[t.Buffer()]
    _require(data in (0, elements * ITEM_BYTES[t.Type()]), f"tensor {index} has shape {list(shape)} "
             f"but {data} bytes of data")
    _check_quantization(t.Quantization(), index, shape)
    return Tensor(shape, _TYPE_NAMES[t.Type()], data > 0, batched)


def _check_signature(t: Any, index: int, shape: tuple[int, ...]) -> bool:
    """The shape with ``-1`` for the batch: the same rank, one dynamic dimension at most, 1 there at batch 1."""
    sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if _count(t.ShapeSignatureLength(), MAX_RANK, "dimensions") else ()
    _require(len(sig) == len(shape) and sum(d == -1 for d in sig) <= 1, f"tensor {index}: shape signature "
             f"{list(sig)} does not fit shape {list(shape)}")
    _require(all(s == d or (s == -1 and d == 1) for s, d in zip(sig, shape)), f"tensor {index}: shape "
             f"signature {list(sig)} does not fit shape {list(shape)}")
    return -1 in sig


def _check_quantization(q: Any, index: int, shape: tuple[int, ...]) -> None:
    """Scales and zero points: one each, or one per slice of the quantized dimension."""
    if q is None:
        return
    _require(q.DetailsType() == 0, f"tensor {index} has custom quantization")
    n_scale, n_zero = q.ScaleLength(), q.ZeroPointLength()
    if not n_scale and not n_zero:
        return
    dim = q.QuantizedDimension()
    _require(0 <= dim < max(len(shape), 1), f"tensor {index} is quantized along a missing dimension")
    per_axis = shape[dim] if shape else 1
    _require(n_scale in (1, per_axis) and n_zero in (0, n_scale), f"tensor {index} has {n_scale} scales and "
             f"{n_zero} zero points for shape {list(shape)}")


def _check_operators(model: Model, sub: Any, graph: Graph, opcodes: list[str], limits: Limits,
                     buf: bytes) -> None:
    """Operator indices in range; each tensor written once, by an op, and read only once written."""
    n = len(graph.tensors)
    ready = {i for i, t in enumerate(graph.tensors) if t.constant} | set(graph.inputs)
    for k in range(_count(sub.OperatorsLength(), limits.operators, "operators")):
        op = sub.Operators(k)
        _require(0 <= op.OpcodeIndex() < len(opcodes), f"operator {k} names a missing operator code")
        _require(op.CustomOptionsLength() == 0 and op.IntermediatesLength() == 0
                 and op.BuiltinOptions2Type() == 0, f"operator {k} has options edgekit never emits")
        ins = _indices(op.InputsAsNumpy, op.InputsLength(), n, "operator input", True, limits.operator_arity)
        outs = _indices(op.OutputsAsNumpy, op.OutputsLength(), n, "operator output", False, limits.operator_arity)
        _check_form(op, k, opcodes[op.OpcodeIndex()], ins, outs)
        _require(all(i == -1 or i in ready for i in ins), f"operator {k} reads a tensor nothing wrote before it")
        _require(outs and not ready.intersection(outs) and len(set(outs)) == len(outs),
                 f"operator {k} writes a constant, an input, or a tensor written before")
        ready.update(outs)
        if opcodes[op.OpcodeIndex()] == "FILL":
            _check_fill(model, sub, graph, ins, outs, buf)
    _require(all(o in ready for o in graph.outputs), "a graph output is never written")


def _check_form(op: Any, k: int, name: str, ins: list[int], outs: list[int]) -> None:
    """Arity and options as the converter emits them: a kernel reads the inputs its op is meant to have."""
    form = ALLOWED_OPS[name]
    options = _OPTION_NAMES.get(op.BuiltinOptionsType())
    _require(options == (form.options or "NONE"), f"operator {k} ({name}) carries {options} options")
    table = op.BuiltinOptions()
    counted = {"PACK": (PackOptions, "ValuesCount"), "SPLIT": (SplitOptions, "NumSplits"),
               "UNPACK": (UnpackOptions, "Num")}.get(name)
    expected_in, expected_out = form.inputs, form.outputs
    if counted is not None:
        _require(table is not None, f"operator {k} ({name}) has no options")
        opts = counted[0]()
        opts.Init(table.Bytes, table.Pos)
        count = getattr(opts, counted[1])()
        expected_in = count if expected_in is None else expected_in
        expected_out = count if expected_out is None else expected_out
    _require(len(ins) == expected_in and len(outs) == expected_out, f"operator {k} ({name}) has {len(ins)} "
             f"inputs and {len(outs)} outputs, expected {expected_in} and {expected_out}")
    _require(all(i != -1 or (name, pos) in OPTIONAL_INPUTS for pos, i in enumerate(ins)),
             f"operator {k} ({name}) leaves out an input it needs")


def _check_fill(model: Model, sub: Any, graph: Graph, ins: list[int], outs: list[int], buf: bytes) -> None:
    """FILL's size comes from data: its dims must spell its declared shape (``-1`` there is the batch)."""
    _require(len(ins) == 2 and len(outs) == 1, "FILL takes dims and a value")
    dims = _int_values(model, sub, graph, ins[0])
    if dims is None:  # a PACK of scalars: constants, or the batch size taken from the input's shape
        producer = _producer(sub, ins[0])
        _require(producer is not None and _OP_NAMES.get(_code(model, producer)) == "PACK",
                 "FILL's dims are neither constant nor packed")
        dims = [_scalar(model, sub, graph, i) for i in _indices(producer.InputsAsNumpy, producer.InputsLength(),
                                                                len(graph.tensors), "operator input")]
    declared = graph.tensors[outs[0]].shape
    _require(len(dims) == len(declared) and all(d == s or (d is None and s == 1) for d, s in zip(dims, declared)),
             f"FILL makes {dims} where its output is declared {list(declared)}")


def _scalar(model: Model, sub: Any, graph: Graph, index: int) -> int | None:
    """A constant scalar's value, or ``None`` for a computed one (the batch size)."""
    values = _int_values(model, sub, graph, index)
    _require(values is None or len(values) == 1, "FILL's packed dims are not scalars")
    return None if values is None else values[0]


def _int_values(model: Model, sub: Any, graph: Graph, index: int) -> list[int] | None:
    """An int32 constant's values, or ``None`` when the tensor is computed."""
    t = graph.tensors[index]
    if not t.constant:
        return None
    _require(t.dtype == "int32", "FILL's dims are not int32")
    return [int(v) for v in model.Buffers(sub.Tensors(index).Buffer()).DataAsNumpy().view("<i4")]


def _producer(sub: Any, tensor: int) -> Any:
    for k in range(sub.OperatorsLength()):
        op = sub.Operators(k)
        if op.OutputsLength() and tensor in op.OutputsAsNumpy():
            return op
    return None


def _code(model: Model, op: Any) -> int:
    oc = model.OperatorCodes(op.OpcodeIndex())
    return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())


def _check_arena(graph: Graph, limits: Limits) -> None:
    """Bytes of every non-constant tensor, batched ones at ``BATCH``: what the interpreter allocates."""
    total = sum(t.nbytes * (BATCH if t.batched else 1) for t in graph.tensors if not t.constant)
    _require(total <= limits.arena_bytes, f"its tensors need {total / 2**20:.0f} MiB at batch {BATCH} "
             f"(at most {limits.arena_bytes / 2**20:.0f} MiB)")


def _check_signatures(model: Model, n_tensors: int) -> None:
    for i in range(_count(model.SignatureDefsLength(), 8, "signatures")):
        sig = model.SignatureDefs(i)
        _require(sig.SubgraphIndex() == 0 and _is_utf8(sig.SignatureKey()), "a signature is damaged")
        for get, length in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
            for j in range(_count(length, LIMITS.operator_arity, "signature tensors")):
                entry = get(j)
                _require(0 <= entry.TensorIndex() < n_tensors and _is_utf8(entry.Name()),
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
    return sorted({f"{_OP_NAMES.get(_code(model, op), op)} v{model.OperatorCodes(op.OpcodeIndex()).Version()}"
                   for sub in [model.Subgraphs(0)] for op in map(sub.Operators, range(sub.OperatorsLength()))})


if __name__ == "__main__":  # python -m edgekit.flatbuffer_check MODEL.tflite ...
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            print(path, *describe(f.read()), sep="\n  ")
