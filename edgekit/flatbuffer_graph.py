"""The summary a checked flatbuffer gives the rest of edgekit, the bounds it is held to, and the
small readers the checks share.

Kept apart from the checks (``flatbuffer_check``) and the operator
allow-list (``flatbuffer_ops``) so that each stays one job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .flatbuffer_schema import TensorType

BATCH = 16  # the most contexts one invoke runs (``Runtime`` resizes its batch interpreter to this)
ITEM_BYTES = {TensorType.FLOAT32: 4, TensorType.FLOAT16: 2, TensorType.INT32: 4, TensorType.INT8: 1,
              TensorType.BOOL: 1}
TYPE_NAMES = {code: name.lower() for name, code in vars(TensorType).items() if not name.startswith("_")}
BYTES_BY_NAME = {TYPE_NAMES[code]: n for code, n in ITEM_BYTES.items()}


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
        return int(np.prod(self.shape, dtype=object)) * BYTES_BY_NAME[self.dtype]


class Graph(NamedTuple):
    """The checked flatbuffer's one subgraph: its tensors and the indices of its inputs and outputs."""

    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]


class Refused(ValueError):
    """The flatbuffer is not one edgekit would run; the message says why."""


def require(ok: bool, problem: str) -> None:
    if not ok:
        raise Refused(problem)


def count(n: int, limit: int, what: str) -> int:
    """A vector's length, refused past ``limit`` before anything iterates over it."""
    require(0 <= n <= limit, f"{n} {what} (at most {limit})")
    return n


def indices(as_numpy: Any, length: int, n_tensors: int, what: str, optional: bool = False,
             limit: int = LIMITS.operator_arity) -> list[int]:
    """A vector of tensor indices, each in range (``-1``, an omitted optional input, where allowed)."""
    if not count(length, limit, f"{what}s"):
        return []
    values = [int(v) for v in as_numpy()]
    low = -1 if optional else 0
    require(all(low <= v < n_tensors for v in values), f"a {what} names a tensor out of range")
    return values
