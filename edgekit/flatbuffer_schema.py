"""The tables of TensorFlow Lite's flatbuffer schema (``schema.fbs``) that edgekit reads, and no more.

The ``tflite`` package holds every table and enum of the schema, and
importing any part of it imports all of them: about 190 modules, 2.9 MB of a
keyboard process that reads a dozen. These readers sit on the same
``flatbuffers`` runtime, so every read is bounds-checked as before (a damaged
offset raises ``IndexError``, ``struct.error`` and the like, which the checks
turn into a refusal). A field is read by its id in the schema, with the
schema's default when absent; accessors keep the names ``flatc`` gives them
in Python, which the checks were written against. The enums list what
edgekit runs; other values read as numbers.
"""
from __future__ import annotations

from typing import Any, Callable

from flatbuffers import encode, packer
from flatbuffers import number_types as types
from flatbuffers.table import Table


class TensorType:
    FLOAT32, FLOAT16, INT32, UINT8, INT64, STRING, BOOL, INT16 = 0, 1, 2, 3, 4, 5, 6, 7
    COMPLEX64, INT8, FLOAT64, COMPLEX128, UINT64, RESOURCE, VARIANT, UINT32, UINT16 = 8, 9, 10, 11, 12, 13, 14, 15, 16
    INT4, BFLOAT16 = 17, 18


class BuiltinOperator:
    """The operators edgekit's converter emits (``flatbuffer_ops.ALLOWED_OPS``), and CUSTOM."""

    ADD, DEQUANTIZE, FULLY_CONNECTED, LOGISTIC, MUL, TANH, CUSTOM, GATHER, TRANSPOSE = 0, 6, 9, 14, 18, 28, 32, 36, 39
    SUB, STRIDED_SLICE, EXP, TOPK_V2, SPLIT, LESS, SUM, SHAPE, PACK, UNPACK = 41, 45, 47, 48, 49, 58, 74, 77, 83, 88
    FILL, QUANTIZE, SELECT_V2 = 94, 114, 123


class BuiltinOptions:
    """The option tables of those operators."""

    NONE, FullyConnectedOptions, AddOptions, MulOptions, GatherOptions, ReducerOptions = 0, 8, 11, 21, 23, 27
    SubOptions, StridedSliceOptions, ExpOptions, TopKV2Options, SplitOptions, ShapeOptions = 28, 32, 33, 34, 35, 55
    PackOptions, UnpackOptions, SelectV2Options = 59, 64, 98


class _Node:
    """A table at ``pos`` in ``buf``."""

    __slots__ = ("_tab",)

    def __init__(self, buf: Any = b"", pos: int = 0):
        self._tab = Table(buf, pos)

    def Init(self, buf: Any, pos: int) -> None:  # a union's table, read as its type
        self._tab = Table(buf, pos)

    def _at(self, field: int) -> int:
        return self._tab.Offset(4 + 2 * field)


Reader = Callable[..., Any]


def _scalar(field: int, flags: Any, default: Any = 0) -> Reader:
    def read(self: _Node) -> Any:
        o = self._at(field)
        return self._tab.Get(flags, o + self._tab.Pos) if o else default
    return read


def _string(field: int) -> Reader:
    def read(self: _Node) -> bytes | None:
        o = self._at(field)
        return self._tab.String(o + self._tab.Pos) if o else None
    return read


def _table(field: int, cls: Callable[[Any, int], _Node] = _Node) -> Reader:
    def read(self: _Node) -> Any:
        o = self._at(field)
        return cls(self._tab.Bytes, self._tab.Indirect(o + self._tab.Pos)) if o else None
    return read


def _union(field: int) -> Reader:
    """A union's table (``Init`` an options reader on its ``Bytes`` and ``Pos``), or ``None``."""
    def read(self: _Node) -> Table | None:
        o = self._at(field)
        if not o:
            return None
        table = Table(bytearray(), 0)
        self._tab.Union(table, o)
        return table
    return read


def _length(field: int) -> Reader:
    def read(self: _Node) -> int:
        o = self._at(field)
        return self._tab.VectorLen(o) if o else 0
    return read


def _item(field: int, cls: Callable[[Any, int], _Node]) -> Reader:
    """The ``j``-th table of a vector of tables (the caller bounds ``j`` by the vector's length)."""
    def read(self: _Node, j: int) -> Any:
        o = self._at(field)
        return cls(self._tab.Bytes, self._tab.Indirect(self._tab.Vector(o) + 4 * j)) if o else None
    return read


def _element(field: int, flags: Any) -> Reader:
    """The ``j``-th number of a vector of numbers (the caller bounds ``j``)."""
    def read(self: _Node, j: int) -> Any:
        o = self._at(field)
        return self._tab.Get(flags, self._tab.Vector(o) + flags.bytewidth * j) if o else 0
    return read


def _numpy(field: int, flags: Any) -> Reader:
    def read(self: _Node) -> Any:
        o = self._at(field)
        return self._tab.GetVectorAsNumpy(flags, o) if o else 0
    return read


def _start(field: int) -> Reader:
    """Where a vector's first element lies in the buffer: what a writer overwrites in place."""
    def read(self: _Node) -> int:
        return self._tab.Vector(self._at(field))
    return read


def _absent(field: int) -> Reader:
    def read(self: _Node) -> bool:
        return self._at(field) == 0
    return read


class Buffer(_Node):
    DataLength, DataAsNumpy, DataStart = _length(0), _numpy(0, types.Uint8Flags), _start(0)
    Offset, Size = _scalar(1, types.Uint64Flags), _scalar(2, types.Uint64Flags)


class QuantizationParameters(_Node):
    ScaleLength, ScaleAsNumpy, ScaleIsNone, ScaleStart = (_length(2), _numpy(2, types.Float32Flags), _absent(2),
                                                          _start(2))
    ZeroPointLength, ZeroPointAsNumpy, ZeroPointIsNone = _length(3), _numpy(3, types.Int64Flags), _absent(3)
    DetailsType, QuantizedDimension = _scalar(4, types.Uint8Flags), _scalar(6, types.Int32Flags)


class Tensor(_Node):
    ShapeLength, ShapeAsNumpy, ShapeStart = _length(0), _numpy(0, types.Int32Flags), _start(0)
    Type, Buffer, Name = _scalar(1, types.Int8Flags), _scalar(2, types.Uint32Flags), _string(3)
    Quantization = _table(4, QuantizationParameters)
    IsVariable, Sparsity = _scalar(5, types.BoolFlags, False), _table(6)
    ShapeSignatureLength, ShapeSignatureAsNumpy, ShapeSignatureStart = (_length(7), _numpy(7, types.Int32Flags),
                                                                         _start(7))
    VariantTensorsLength = _length(9)


class OperatorCode(_Node):
    """The operator is ``max(BuiltinCode, DeprecatedBuiltinCode)``, as LiteRT reads it (the ``tflite`` package's
    ``BuiltinCode`` returned the deprecated field below 127, so an edit there could name two operators)."""

    DeprecatedBuiltinCode, CustomCode = _scalar(0, types.Int8Flags), _string(1)
    Version, BuiltinCode = _scalar(2, types.Int32Flags, 1), _scalar(3, types.Int32Flags)


class Operator(_Node):
    OpcodeIndex = _scalar(0, types.Uint32Flags)
    Inputs, InputsLength, InputsAsNumpy = _element(1, types.Int32Flags), _length(1), _numpy(1, types.Int32Flags)
    Outputs, OutputsLength, OutputsAsNumpy = _element(2, types.Int32Flags), _length(2), _numpy(2, types.Int32Flags)
    BuiltinOptionsType, BuiltinOptions = _scalar(3, types.Uint8Flags), _union(4)
    CustomOptionsLength, IntermediatesLength = _length(5), _length(8)
    BuiltinOptions2Type = _scalar(11, types.Uint8Flags)


class SubGraph(_Node):
    TensorsLength, Tensors = _length(0), _item(0, Tensor)
    InputsLength, InputsAsNumpy = _length(1), _numpy(1, types.Int32Flags)
    OutputsLength, OutputsAsNumpy, OutputsStart = _length(2), _numpy(2, types.Int32Flags), _start(2)
    OperatorsLength, Operators, OperatorsStart = _length(3), _item(3, Operator), _start(3)


class Metadata(_Node):
    Name, Buffer = _string(0), _scalar(1, types.Uint32Flags)


class TensorMap(_Node):
    Name, TensorIndex = _string(0), _scalar(1, types.Uint32Flags)


class SignatureDef(_Node):
    InputsLength, Inputs = _length(0), _item(0, TensorMap)
    OutputsLength, Outputs = _length(1), _item(1, TensorMap)
    SignatureKey, SubgraphIndex = _string(2), _scalar(4, types.Uint32Flags)


class PackOptions(_Node):
    ValuesCount = _scalar(0, types.Int32Flags)


class SplitOptions(_Node):
    NumSplits = _scalar(0, types.Int32Flags)


class UnpackOptions(_Node):
    Num = _scalar(0, types.Int32Flags)


class Model(_Node):
    Version = _scalar(0, types.Uint32Flags)
    OperatorCodesLength, OperatorCodes = _length(1), _item(1, OperatorCode)
    SubgraphsLength, Subgraphs = _length(2), _item(2, SubGraph)
    BuffersLength, Buffers = _length(4), _item(4, Buffer)
    MetadataLength, Metadata = _length(6), _item(6, Metadata)
    SignatureDefsLength, SignatureDefs = _length(7), _item(7, SignatureDef)

    @classmethod
    def GetRootAs(cls, buf: Any, offset: int = 0) -> Model:
        """The root table: its offset is the buffer's first word."""
        return cls(buf, encode.Get(packer.uoffset, buf, offset) + offset)
