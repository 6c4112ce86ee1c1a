"""The head the device predicts with: the model version's float head plus the user's change.

The head is a plain Dense layer on the body's features. The version's head
comes from the file (a ``head.npz`` override, else the flatbuffer's tensors,
dequantized); personalization adds a delta. Logits are the interpreter's
plus ``features @ change``, where the change is the head minus the one
inside the flatbuffer: the int8 interpreter's own head scored 0.8 points of
top-3 better than the same weights dequantized on the host, so only the
change is computed here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import Runtime, StoredHead

Weights = tuple[np.ndarray, np.ndarray]  # (W [F, V], b [V])


@dataclass
class Columns:
    """A change to an ``[F, V]`` head weight that is zero outside some columns: their ids and values.

    Learning changes the columns of the words in the user's text, a few
    thousand of 10,000: whole ``[F, V]`` arrays made the personal delta and
    the contribution 2.6 MB each in every process, a keyboard's included.
    """

    ids: np.ndarray  # [k] int64, sorted, unique, below ``width``
    values: np.ndarray  # [F, k] float32
    width: int  # V

    @classmethod
    def zeros(cls, rows: int, width: int) -> Columns:
        return cls(np.zeros(0, np.int64), np.zeros((rows, 0), np.float32), width)

    @classmethod
    def from_dense(cls, w: np.ndarray) -> Columns:
        """The nonzero columns of a whole ``[F, V]`` array (a version 1 file's)."""
        ids = np.flatnonzero(w.any(axis=0))
        return cls(ids, np.ascontiguousarray(w[:, ids], np.float32), w.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[0], self.width

    def any(self) -> bool:
        return bool(self.values.any())

    def copy(self) -> Columns:
        return Columns(self.ids.copy(), self.values.copy(), self.width)

    def dense(self, width: int | None = None) -> np.ndarray:
        """The whole ``[F, V]`` array (``width``: only the columns below it)."""
        width = self.width if width is None else width
        keep = self.ids < width
        out = np.zeros((len(self.values), width), np.float32)
        out[:, self.ids[keep]] = self.values[:, keep]
        return out

    def take(self, columns: np.ndarray) -> np.ndarray:
        """``dense()[:, columns]`` without the whole array."""
        at = np.minimum(np.searchsorted(self.ids, columns), max(len(self.ids) - 1, 0))
        held = self.ids[at] == columns if len(self.ids) else np.zeros(len(columns), bool)
        out = np.zeros((len(self.values), len(columns)), np.float32)
        out[:, held] = self.values[:, at[held]]
        return out

    def put(self, columns: np.ndarray, values: np.ndarray, add: bool = False) -> None:
        """``dense()[:, columns] = values`` (``add``: ``+=``) in place; ``columns`` unique."""
        ids = np.union1d(self.ids, columns)
        if len(ids) != len(self.ids):  # new columns: made room for, in order
            grown = np.zeros((len(self.values), len(ids)), np.float32)
            grown[:, np.searchsorted(ids, self.ids)] = self.values
            self.ids, self.values = ids, grown
        at = np.searchsorted(self.ids, columns)
        if add:
            self.values[:, at] += values
        else:
            self.values[:, at] = values

    def without(self, column: int) -> Columns:
        """A copy with ``column`` zero."""
        keep = self.ids != column
        return Columns(self.ids[keep], self.values[:, keep], self.width)


class Head:
    """Base head + personal delta, with the views the runtime needs cached."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._base: Weights | None = None
        self._flat_head: Weights | None = None  # the flatbuffer's own head, when a head.npz overrides it
        self._base_change: Weights | None = None  # base minus that head
        self._stored: StoredHead | None = None  # the flatbuffer's head as stored, for reading columns
        self.set_delta(None, None)

    def set_delta(self, delta_w: Columns | None, delta_b: np.ndarray | None) -> None:
        """The user's change to the head (``None``: no change); derived views are recomputed on demand."""
        self._delta: tuple[Columns, np.ndarray] | None = None
        if delta_w is not None and delta_b is not None and bool(delta_w.any() or delta_b.any()):
            self._delta = (delta_w, delta_b)
        self._change: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def release(self) -> None:
        """Drop the float heads read out of the file and what is derived from them (2.6 MB each for
        10,000 words), read again when next asked: while a flatbuffer copy with this head ranks,
        suggestions read none of them."""
        self._base = self._flat_head = self._base_change = self._change = self._stored = None

    @property
    def base(self) -> Weights:
        """The model version's float head, read out of the file."""
        if self._base is None:
            file = self._runtime.file
            self._base = file.head if file.head is not None else self._runtime.flat_head()
        return self._base

    @property
    def weights(self) -> Weights:
        """Base head plus the personal delta: new arrays, not kept (each caller needs it once).

        When the base is not held, the sum is made in a fresh read of it: one
        ``[F, V]`` array, not two, where a keyboard process peaks (writing the
        personal head's flatbuffer copy).
        """
        if self._delta is None:
            return self.base
        dw, db = self._delta
        if self._base is not None or self._runtime.file.head is not None:
            w, b = self.base
            w, b = w.copy(), b + db
        else:
            w, b = self._runtime.flat_head()
            b += db
        w[:, dw.ids] += dw.values
        return w, b

    def columns(self, columns: np.ndarray, personal: bool = True) -> Weights:
        """``(W[:, columns], b[columns])`` of this head (``personal=False``: the version's), the same numbers
        as ``weights`` without a whole float head: learning reads only the columns it trains, and a keyboard
        process peaks there."""
        w, b = self._base_columns(columns)
        if personal and self._delta is not None:
            dw, db = self._delta
            w += dw.take(columns)
            b += db[columns]
        return w, b

    def bias(self) -> np.ndarray:
        """This head's bias ``[V]`` (the version's plus the personal delta)."""
        file = self._runtime.file
        b = file.head[1].copy() if file.head is not None else self._stored_head().biases()
        if self._delta is not None:
            b += self._delta[1]
        return b

    @property
    def on_host(self) -> bool:
        """Whether logits need the host: the head differs from the one inside the flatbuffer."""
        return self._runtime.file.head is not None or self._delta is not None

    def change(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where this head differs from the flatbuffer's: ``(columns, dW [F, C], db [C])``.

        Personalization trains a few thousand columns; every other word's
        logit is the interpreter's as it comes.
        """
        if self._change is None:
            cols = None
            if self._runtime.file.head is None and self._delta is not None:
                # The head is the flatbuffer's plus the delta: only the delta's columns can differ, so only
                # they are read and summed (whole [F, V] heads made learning's first pass peak 5 MB higher).
                dw, db = self._delta
                cols = np.union1d(dw.ids, np.flatnonzero(db))
                w0, b0 = self._base_columns(cols)
                w, b = w0 + dw.take(cols), b0 + db[cols]
            else:
                (w0, b0), (w, b) = self._flat(), self.weights
            dw, db = w - w0, b - b0
            keep = np.flatnonzero(dw.any(axis=0) | (db != 0))
            self._change = (keep if cols is None else cols[keep], np.ascontiguousarray(dw[:, keep]), db[keep])
        return self._change

    def logits(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """This head's logits from the interpreter's features and logits (the flatbuffer's head)."""
        change = self.logits_change(features)
        if change is None:
            return logits
        out = logits.copy()
        out[:, change[0]] += change[1]
        return out

    def logits_change(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(columns, values [N, len(columns)])``: this head's logits are the interpreter's plus ``values``
        at ``columns`` (``None``: the interpreter's as they are). Learning adds them to the logits it
        already works on in a new array, rather than copying ``[N, V]`` logits to change a few columns."""
        if not self.on_host:
            return None
        cols, dw, db = self.change()
        return cols, features @ dw + db

    def base_logits(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The model version's logits (no personal delta) from the interpreter's features and logits."""
        if self._runtime.file.head is None:
            return logits
        if self._base_change is None:  # learning calls this once per chunk: the difference is made once
            (w, b), (w0, b0) = self.base, self._flat()
            self._base_change = (w - w0, b - b0)
        dw, db = self._base_change
        return logits + features @ dw + db

    def _base_columns(self, columns: np.ndarray) -> Weights:
        """The version's head at ``columns``, new arrays: from the held or ``head.npz`` float head, else
        dequantized from the flatbuffer's head as stored."""
        if self._base is not None or self._runtime.file.head is not None:
            w, b = self.base
            return w[:, columns], b[columns]
        return self._stored_head().weights(columns)

    def _stored_head(self) -> StoredHead:
        """Read once (learning reads it before it frees the interpreter) and kept until ``release``."""
        if self._stored is None:
            self._stored = self._runtime.stored_head()
        return self._stored

    def _flat(self) -> Weights:
        """The head inside the flatbuffer: the base itself, unless a head.npz overrides it (then read once)."""
        if self._runtime.file.head is None:
            return self.base
        if self._flat_head is None:
            self._flat_head = self._runtime.flat_head()
        return self._flat_head
