"""Hostile model files: the bundled int8 model with its flatbuffer edited, and the hash rewritten to match.

An attacker who can write a device's model file can also rewrite the SHA-256
stored in its zip part, so these files pass the checksum and reach whatever
comes after it. Each case is one edit, made deterministically from a seed and
its index (no binary blobs of unknown origin in the repository):

- even indices: one byte (a random value, or one bit flipped);
- odd indices: several bytes (a 32-bit little-endian value from a list of
  troublemakers, such as 0, -1, 2**31 - 1 or 16252929, at a 4-aligned offset;
  a small change to a 32-bit value; or 2..16 random bytes).

Three edits in four land in the flatbuffer's structure (its tables, vectors
and small constants; the big weight buffers are 94% of the file, and an edit
there only changes numbers); the rest anywhere.

    python tests/hostile/make_cases.py --out DIR [--seed 0] [--count 2450] [--only 5,17]

writes the cases as model files (1.6 MB each) for a look with other tools.
"""
from __future__ import annotations

import argparse
import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "edgekit" / "assets" / "edgekit-en-int8.tflite"
FULL_CAMPAIGN = 2450
TROUBLE_INT32 = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                 0xFFFFFFFE, 16252929, 1 << 24, 1 << 20)
BIG_BUFFER = 256  # bytes: weight buffers at least this long count as data, not structure


@dataclass(frozen=True)
class Edit:
    index: int
    kind: str
    offset: int
    data: bytes

    def describe(self) -> str:
        return f"case {self.index}: {self.kind} at byte {self.offset}: {self.data.hex()}"


def make_edit(flatbuffer: bytes, seed: int, index: int) -> Edit:
    """Edit number ``index`` of the campaign with ``seed`` (the same edit every time); negative: ``TARGETED``."""
    if index < 0:
        return TARGETED[index][1](flatbuffer, index)
    rng = random.Random(f"{seed}:{index}")
    spans = _structure_spans(flatbuffer)
    if rng.random() < 0.75:
        start, end = rng.choice(spans)
        offset = rng.randrange(start, end)
    else:
        offset = rng.randrange(8, len(flatbuffer))  # past the root offset and file identifier
    if index % 2 == 0:
        if rng.random() < 0.5:
            return Edit(index, "byte", offset, bytes([rng.randrange(256)]))
        return Edit(index, "bit", offset, bytes([flatbuffer[offset] ^ (1 << rng.randrange(8))]))
    offset = min(offset - offset % 4, len(flatbuffer) - 4)
    kind = rng.choice(("int32", "int32+", "span"))
    if kind == "int32":
        return Edit(index, kind, offset, struct.pack("<I", rng.choice(TROUBLE_INT32)))
    if kind == "int32+":
        value = (struct.unpack_from("<I", flatbuffer, offset)[0] + rng.choice((-2, -1, 1, 2, 4, 64))) % 2**32
        return Edit(index, kind, offset, struct.pack("<I", value))
    n = rng.randrange(2, 17)
    offset = min(offset, len(flatbuffer) - n)
    return Edit(index, kind, offset, bytes(rng.randrange(256) for _ in range(n)))


def _shape_edit(flatbuffer: bytes, index: int) -> Edit:
    """The first LSTM gate (a SPLIT output, ``[1, 160]``) becomes ``[16252929, 160]``: 15 s for one suggestion before."""
    sub = _model(flatbuffer).Subgraphs(0)
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        if t.ShapeLength() == 2 and list(t.ShapeAsNumpy()) == [1, 160] and b"/split" in (t.Name() or b""):
            return Edit(index, "shape", t._tab.Vector(t._tab.Offset(4)), struct.pack("<i", 16252929))
    raise LookupError("no [1, 160] tensor")


def _fill_edit(flatbuffer: bytes, index: int) -> Edit:
    """The constant 160 that FILL's dims are packed from becomes 16252929 (the same size, from data)."""
    model = _model(flatbuffer)
    sub = model.Subgraphs(0)
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        b = model.Buffers(t.Buffer())
        if t.ShapeLength() == 0 and t.Type() == 2 and b.DataLength() == 4 and b.DataAsNumpy().view("<i4")[0] == 160:
            return Edit(index, "fill-dims", b._tab.Vector(b._tab.Offset(4)), struct.pack("<i", 16252929))
    raise LookupError("no int32 scalar 160")


def _opcode_edit(flatbuffer: bytes, index: int) -> Edit:
    """A one-input LOGISTIC relabelled as SPLIT (two inputs read): SIGSEGV in LiteRT before."""
    model = _model(flatbuffer)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    sub = model.Subgraphs(0)
    for k in range(sub.OperatorsLength()):
        op = sub.Operators(k)
        if codes[op.OpcodeIndex()] == 14:  # LOGISTIC
            return Edit(index, "opcode", op._tab.Pos + op._tab.Offset(4), struct.pack("<I", codes.index(49)))
    raise LookupError("no LOGISTIC")


def _scale_edit(flatbuffer: bytes, index: int) -> Edit:
    """The quantization scale of an int8 [1, 160] activation made slightly negative: SIGABRT in invoke before
    (case 836 of the campaign on version 2's int8 file)."""
    model = _model(flatbuffer)
    sub = model.Subgraphs(0)
    for i in range(sub.TensorsLength()):
        t, q = sub.Tensors(i), sub.Tensors(i).Quantization()
        if t.Type() == 9 and list(t.ShapeAsNumpy()) == [1, 160] and q is not None and q.ScaleLength() == 1:
            return Edit(index, "scale", q._tab.Vector(q._tab.Offset(8)), struct.pack("<f", -1.2571568e-18))
    raise LookupError("no int8 [1, 160] tensor with one scale")


def _builtin_code_edit(flatbuffer: bytes, index: int) -> Edit:
    """LOGISTIC's operator code made SPLIT in its ``builtin_code`` field only (``deprecated_builtin_code``
    still says LOGISTIC): LiteRT runs the larger of the two, and the ``tflite`` package's reader, which the
    checks used before, returned the deprecated one (the file passed as LOGISTIC)."""
    model = _model(flatbuffer)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if oc.DeprecatedBuiltinCode() == 14 and oc._tab.Offset(10):  # LOGISTIC, with its builtin_code written
            return Edit(index, "builtin_code", oc._tab.Pos + oc._tab.Offset(10), struct.pack("<i", 49))
    raise LookupError("no LOGISTIC operator code")


TARGETED = {-1: ("tensor shape [1,160] -> [16252929,160]", _shape_edit),
            -2: ("FILL dims 160 -> 16252929", _fill_edit),
            -3: ("LOGISTIC relabelled SPLIT", _opcode_edit),
            -4: ("an activation's quantization scale made negative", _scale_edit),
            -5: ("LOGISTIC's operator code relabelled SPLIT in builtin_code only", _builtin_code_edit)}


def _model(flatbuffer: bytes):
    from edgekit.flatbuffer_schema import Model

    return Model.GetRootAs(flatbuffer, 0)


def apply(flatbuffer: bytes, edit: Edit) -> bytes:
    return flatbuffer[: edit.offset] + edit.data + flatbuffer[edit.offset + len(edit.data):]


def case_bytes(seed: int, index: int) -> tuple[Edit, bytes]:
    """The edit and the whole model file it gives, with ``tflite_sha256`` rewritten to match."""
    from edgekit.modelfile import ModelFile, model_file_bytes

    source = _source()
    edit = make_edit(source.flatbuffer, seed, index)
    return edit, model_file_bytes(ModelFile(apply(source.flatbuffer, edit), dict(source.metadata), source.vocab))


@lru_cache(maxsize=1)
def _source():
    from edgekit.modelfile import read_model_file

    return read_model_file(SOURCE)


@lru_cache(maxsize=1)
def _structure_spans(flatbuffer: bytes) -> list[tuple[int, int]]:
    """Byte ranges outside the big weight buffers (found with the schema reader on the unedited file)."""
    model = _model(flatbuffer)
    data = []
    for i in range(model.BuffersLength()):
        b = model.Buffers(i)
        if b.DataLength() >= BIG_BUFFER:
            start = b._tab.Vector(b._tab.Offset(4))  # the data vector's first byte
            data.append((start, start + b.DataLength()))
    spans, pos = [], 8
    for start, end in sorted(data):
        if start > pos:
            spans.append((pos, start))
        pos = max(pos, end)
    spans.append((pos, len(flatbuffer)))
    return spans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=FULL_CAMPAIGN)
    ap.add_argument("--only", help="comma-separated case indices")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    indices = [int(i) for i in args.only.split(",")] if args.only else range(args.count)
    for i in indices:
        edit, data = case_bytes(args.seed, i)
        (args.out / f"case-{args.seed}-{i}.tflite").write_bytes(data)
        print(edit.describe())


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO))
    main()
