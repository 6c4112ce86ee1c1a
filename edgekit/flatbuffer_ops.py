"""The operators edgekit runs: the allow-list of what its converter emits, and the checks of each operator.

A kernel trusts its operator's arity and options, and reads what its inputs
hold: a LOGISTIC relabelled SPLIT (one input where two are read) crashed
LiteRT. So every operator must be one the converter emits, at a version it
emits, with the inputs, outputs and options table it emits them with.

Extending the allow-list: convert a model with the new layer (every
quantization and ``--compat`` target), list its operators
(``python -m edgekit.flatbuffer_check FILE``; one edgekit does not know yet
prints as its number in ``schema.fbs``'s ``BuiltinOperator``), add them
here with their arity and options and to ``flatbuffer_schema``'s enums,
and keep the converter's tests loading what it writes.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .flatbuffer_graph import Graph, Limits, count, indices, require
from .flatbuffer_schema import BuiltinOperator, BuiltinOptions, Model, PackOptions, SplitOptions, UnpackOptions


class OpForm(NamedTuple):
    """How edgekit's converter emits one operator: its highest version, arity and options table."""

    version: int
    inputs: int | None  # None: as many as its options say (PACK's values_count)
    outputs: int | None  # None: as many as its options say (SPLIT's num_splits, UNPACK's num)
    options: str | None  # the BuiltinOptions table it carries, or None


# What the converter emits for LSTM and GRU models, every quantization, for LiteRT and tflite-runtime 2.14.
ALLOWED_OPS = {
    "ADD": OpForm(2, 2, 1, "AddOptions"), "DEQUANTIZE": OpForm(3, 1, 1, None), "EXP": OpForm(1, 1, 1, "ExpOptions"),
    "FILL": OpForm(3, 2, 1, None), "FULLY_CONNECTED": OpForm(12, 3, 1, "FullyConnectedOptions"),
    "GATHER": OpForm(2, 2, 1, "GatherOptions"), "LESS": OpForm(1, 2, 1, None), "LOGISTIC": OpForm(2, 1, 1, None),
    "MUL": OpForm(2, 2, 1, "MulOptions"), "PACK": OpForm(1, None, 1, "PackOptions"),
    "QUANTIZE": OpForm(1, 1, 1, None),  # int8-mixed files: float gates -> int8 matrix products
    "SELECT_V2": OpForm(1, 3, 1, "SelectV2Options"), "SHAPE": OpForm(1, 1, 1, "ShapeOptions"),
    "SPLIT": OpForm(2, 2, None, "SplitOptions"), "STRIDED_SLICE": OpForm(2, 4, 1, "StridedSliceOptions"),
    "SUB": OpForm(2, 2, 1, "SubOptions"), "SUM": OpForm(1, 2, 1, "ReducerOptions"), "TANH": OpForm(2, 1, 1, None),
    "TOPK_V2": OpForm(2, 2, 2, "TopKV2Options"), "TRANSPOSE": OpForm(2, 2, 1, None),
    "UNPACK": OpForm(2, 1, None, "UnpackOptions"),
}
OPTIONAL_INPUTS = {("FULLY_CONNECTED", 2)}  # (op, input position) that may be -1: a folded zero bias
OP_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
OPTION_NAMES = {code: name for name, code in vars(BuiltinOptions).items() if not name.startswith("_")}


def opcodes(model: Model) -> list[str]:
    """The name of each operator code, refused unless allowed at its version (and not custom)."""
    names = []
    for i in range(count(model.OperatorCodesLength(), len(ALLOWED_OPS), "operator codes")):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # the schema keeps two fields for old files
        name = OP_NAMES.get(code, f"#{code}")
        require(oc.CustomCode() is None and name in ALLOWED_OPS, f"operator {name} is not one edgekit's "
                 "converter emits")
        require(1 <= oc.Version() <= ALLOWED_OPS[name].version, f"operator {name} version {oc.Version()} "
                 f"(edgekit runs versions up to {ALLOWED_OPS[name].version})")
        names.append(name)
    return names


def check_operators(model: Model, sub: Any, graph: Graph, codes: list[str], limits: Limits) -> None:
    """Operator indices in range; each tensor written once, by an op, and read only once written."""
    n = len(graph.tensors)
    ready = {i for i, t in enumerate(graph.tensors) if t.constant} | set(graph.inputs)
    for k in range(count(sub.OperatorsLength(), limits.operators, "operators")):
        op = sub.Operators(k)
        require(0 <= op.OpcodeIndex() < len(codes), f"operator {k} names a missing operator code")
        require(op.CustomOptionsLength() == 0 and op.IntermediatesLength() == 0
                 and op.BuiltinOptions2Type() == 0, f"operator {k} has options edgekit never emits")
        ins = indices(op.InputsAsNumpy, op.InputsLength(), n, "operator input", True, limits.operator_arity)
        outs = indices(op.OutputsAsNumpy, op.OutputsLength(), n, "operator output", False, limits.operator_arity)
        _check_form(op, k, codes[op.OpcodeIndex()], ins, outs)
        require(all(i == -1 or i in ready for i in ins), f"operator {k} reads a tensor nothing wrote before it")
        require(bool(outs) and not ready.intersection(outs) and len(set(outs)) == len(outs),
                 f"operator {k} writes a constant, an input, or a tensor written before")
        ready.update(outs)
        if codes[op.OpcodeIndex()] == "FILL":
            _check_fill(model, sub, graph, ins, outs)
    require(all(o in ready for o in graph.outputs), "a graph output is never written")


def _check_form(op: Any, k: int, name: str, ins: list[int], outs: list[int]) -> None:
    """Arity and options as the converter emits them: a kernel reads the inputs its op is meant to have."""
    form = ALLOWED_OPS[name]
    options = OPTION_NAMES.get(op.BuiltinOptionsType(), f"#{op.BuiltinOptionsType()}")
    require(options == (form.options or "NONE"), f"operator {k} ({name}) carries {options} options")
    table = op.BuiltinOptions()
    counted = {"PACK": (PackOptions, "ValuesCount"), "SPLIT": (SplitOptions, "NumSplits"),
               "UNPACK": (UnpackOptions, "Num")}.get(name)
    expected_in, expected_out = form.inputs, form.outputs
    if counted is not None:
        require(table is not None, f"operator {k} ({name}) has no options")
        opts = counted[0]()
        opts.Init(table.Bytes, table.Pos)
        count = getattr(opts, counted[1])()
        expected_in = count if expected_in is None else expected_in
        expected_out = count if expected_out is None else expected_out
    require(len(ins) == expected_in and len(outs) == expected_out, f"operator {k} ({name}) has {len(ins)} "
             f"inputs and {len(outs)} outputs, expected {expected_in} and {expected_out}")
    require(all(i != -1 or (name, pos) in OPTIONAL_INPUTS for pos, i in enumerate(ins)),
             f"operator {k} ({name}) leaves out an input it needs")


def _check_fill(model: Model, sub: Any, graph: Graph, ins: list[int], outs: list[int]) -> None:
    """FILL's size comes from data: its dims must spell its declared shape (``-1`` there is the batch)."""
    require(len(ins) == 2 and len(outs) == 1, "FILL takes dims and a value")
    values = _int_values(model, sub, graph, ins[0])
    dims: list[int | None] = list(values) if values is not None else []
    if values is None:  # a PACK of scalars: constants, or the batch size taken from the input's shape
        producer = _producer(sub, ins[0])
        require(producer is not None and OP_NAMES.get(op_code(model, producer)) == "PACK",
                 "FILL's dims are neither constant nor packed")
        dims = [_scalar(model, sub, graph, i) for i in indices(producer.InputsAsNumpy, producer.InputsLength(),
                                                                len(graph.tensors), "operator input")]
    declared = graph.tensors[outs[0]].shape
    fits = len(dims) == len(declared) and all(d == s or (d is None and s == 1)
                                              for d, s in zip(dims, declared, strict=True))
    require(fits, f"FILL makes {dims} where its output is declared {list(declared)}")


def _scalar(model: Model, sub: Any, graph: Graph, index: int) -> int | None:
    """A constant scalar's value, or ``None`` for a computed one (the batch size)."""
    values = _int_values(model, sub, graph, index)
    require(values is None or len(values) == 1, "FILL's packed dims are not scalars")
    return None if values is None else values[0]


def _int_values(model: Model, sub: Any, graph: Graph, index: int) -> list[int] | None:
    """An int32 constant's values, or ``None`` when the tensor is computed."""
    t = graph.tensors[index]
    if not t.constant:
        return None
    require(t.dtype == "int32", "FILL's dims are not int32")
    return [int(v) for v in model.Buffers(sub.Tensors(index).Buffer()).DataAsNumpy().view("<i4")]


def _producer(sub: Any, tensor: int) -> Any:
    for k in range(sub.OperatorsLength()):
        op = sub.Operators(k)
        if op.OutputsLength() and tensor in op.OutputsAsNumpy():
            return op
    return None


def op_code(model: Model, op: Any) -> int:
    oc = model.OperatorCodes(op.OpcodeIndex())
    return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
