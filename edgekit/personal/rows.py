"""Examples for personalization over the *candidate* columns (the words in the user's text).

Every other word keeps its logit, so its share of the softmax is one number
per example (``rest_lse``), and whether it can beat the target in a top-3 is
told by its three best logits (``rest_top``): both computed once, in the one
pass of the interpreter over the text.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..progress import progress_bar
from ..runtime import BATCH

CHUNK = 64  # rows per step of scoring over the candidate columns: memory O(CHUNK x C)
TEACHER_SCALE = 2.0**15  # Teacher.columns' scale: a probability of 1 stays below float16's largest value
READ = BATCH  # rows per interpreter pass when reading: every [rows, V] array (logits, softmax) is O(READ x V)


class Scored(NamedTuple):
    """What learning reads of a chunk of contexts (a ``Scorer``'s answer)."""

    features: np.ndarray  # [N, F]
    logits: np.ndarray  # [N, V] the interpreter's (the flatbuffer's head)
    base_logits: np.ndarray  # [N, V] the model version's
    change: tuple[np.ndarray, np.ndarray] | None  # the current head's logits: ``logits`` plus these at those columns


Scorer = Callable[[np.ndarray], Scored]


class Rows(NamedTuple):
    """Examples over the candidate columns, with what the other words contribute under the current head."""

    features: np.ndarray  # [N, F]
    contexts: np.ndarray  # [N, T] token ids
    targets: np.ndarray  # [N] positions in the candidate columns
    rest_lse: np.ndarray  # [N] log-sum-exp of the other words' logits
    rest_top: np.ndarray | None  # [N, 3] the other words' three best logits (-inf where fewer); None: not read

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray | slice) -> Rows:
        return Rows(self.features[index], self.contexts[index], self.targets[index], self.rest_lse[index],
                    None if self.rest_top is None else self.rest_top[index])


def candidate_rows(score: Scorer, contexts: np.ndarray, targets: np.ndarray, columns: np.ndarray,
                   words: np.ndarray, progress: bool = False, top: bool = True) -> Rows:
    """One pass of the interpreter over ``contexts``: features and the non-candidate words' share.

    ``score(ids)`` gives a chunk's ``Scored``; ``columns`` are the candidate
    ids (sorted), ``words`` the boolean mask of ids that can be suggested at
    all. ``top=False`` skips the others' best three (training needs none).

    A context the text holds more than once (a line's first words, a
    repeated message) is read once: the interpreter's rows do not depend on
    each other, and one in seven of the README's SMS contexts repeats another.
    """
    unique, index = unique_rows(contexts)
    reader = RowReader(columns, words, top)
    with progress_bar(len(unique), "running model", progress) as bar:
        for start in range(0, len(unique), READ):
            reader.add(*score(unique[start : start + READ]))
            bar.update(min(READ, len(unique) - start))
    return reader.rows(contexts, targets, index)


def unique_rows(contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(contexts, axis=0, return_inverse=True)`` for ``contexts [N, T]``: the same rows in the
    same order, and the one each row is ``[N]``, a few times faster.

    numpy compares the rows as records of ``T`` fields: 19 ms for 1,000 SMS lines' contexts. Ids below
    2^16 pack four to a 64-bit key, the first most significant, so the keys sort as the rows do (3 ms).
    The order is kept: it decides which contexts share an interpreter pass, and the head's change on
    a pass of fewer rows than ``READ`` (the last) is a matrix product of another shape, rounded otherwise.
    """
    n, t = contexts.shape
    if not n or contexts.min() < 0 or contexts.max() >= 1 << 16:
        unique, index = np.unique(contexts, axis=0, return_inverse=True)
        return unique, index.reshape(-1)
    ids = np.zeros((n, -(-t // 4) * 4), np.uint64)
    ids[:, :t] = contexts
    ids = ids.reshape(n, -1, 4)
    keys = ids[..., 0] << 48 | ids[..., 1] << 32 | ids[..., 2] << 16 | ids[..., 3]
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    first = np.ones(n, bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    index = np.empty(n, np.intp)
    index[order] = np.cumsum(first) - 1
    return contexts[order[first]], index


class RowReader:
    """Reads chunks of interpreter output into ``Rows`` (and, with ``teacher`` rows, the version's ``Teacher``).

    Every pass over a chunk's ``[rows, V]`` logits is one numpy operation,
    in place where it can be: masks are added (``-inf`` where a word does
    not count) instead of selected, and the best three are found by three
    ``argmax`` rather than a partition of the whole row.
    """

    def __init__(self, columns: np.ndarray, words: np.ndarray, top: bool = True, teacher: int = 0):
        """``teacher``: the most rows the version's distribution is read for (0: none)."""
        self.columns, self.top = columns, top
        other = words.copy()
        other[columns] = False
        self._other, self._words = minus_inf(other), minus_inf(words)
        self.parts: list[tuple] = []
        # The teacher's probabilities of the candidates, scaled float16 (``Teacher``): [rows, C] is the
        # biggest array learning holds, filled in place rather than gathered and concatenated (the
        # pages of rows never read are never touched).
        self._taught = np.empty((teacher, len(columns)), np.float16) if teacher else None
        self._teacher_parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._at = 0

    def add(self, features: np.ndarray, logits: np.ndarray, base_logits: np.ndarray,
            change: tuple[np.ndarray, np.ndarray] | None) -> None:
        """One interpreter pass's output, ``Scored`` (``READ`` rows at most: its temporaries are ``[rows, V]``).

        The current head's change is added after the mask: the same numbers as before it (a mask adds
        ``0`` or ``-inf``), in the one new array.
        """
        z = logits + self._other
        if change is not None:
            z[:, change[0]] += change[1]
        top_ids, best = best_of(z) if self.top or self._taught is not None else (None, None)
        peak = np.max(z, axis=1, keepdims=True) if best is None else best[:, :1]
        peak = np.maximum(peak, np.finfo(np.float32).min)  # every word a candidate: no others
        z -= peak
        np.exp(z, out=z)
        with np.errstate(divide="ignore"):
            lse = peak[:, 0] + np.log(z.sum(axis=1))
        if self._taught is not None and top_ids is not None:
            self._teach(base_logits, top_ids)
        self.parts.append((features.astype(np.float32), lse, best if self.top else None))

    def _teach(self, base_logits: np.ndarray, other_top: np.ndarray) -> None:
        """The version's softmax over the words: at the candidates, at ``other_top``, and its best three's mass."""
        assert self._taught is not None
        z = base_logits + self._words
        best = best_of(z)[1]
        z -= best[:, :1]
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        # Normalized where read, not over every word: the same quotients, a tenth of the divisions.
        taught = z[:, self.columns]
        taught /= total
        taught *= TEACHER_SCALE
        self._taught[self._at : self._at + len(z)] = taught
        self._at += len(z)
        mass = np.exp(best - best[:, :1]) / total
        top = np.stack([mass[:, 0], mass.sum(axis=1)], 1)
        self._teacher_parts.append((np.take_along_axis(z, other_top, axis=1) / total, top))

    def rows(self, contexts: np.ndarray, targets: np.ndarray, index: np.ndarray | slice = slice(None)) -> Rows:
        """The rows read, as ``Rows`` of ``contexts``; ``index``: the row read for each context."""
        features, lse, best = zip(*self.parts, strict=True) if self.parts else ((), (), ())
        return Rows(np.concatenate(features)[index], contexts, np.searchsorted(self.columns, targets),
                    np.concatenate(lse)[index], np.concatenate(best)[index] if self.top else None)

    def teacher_rows(self, index: np.ndarray) -> Teacher:
        """The version's distribution on the rows read; ``index``: the row read for each context."""
        assert self._taught is not None, "teacher rows asked of a reader made without them"
        rest, top = (np.concatenate(part) for part in zip(*self._teacher_parts, strict=True))
        return Teacher(self._taught[: self._at], rest[index], top[index], index)


class Teacher(NamedTuple):
    """The model version's own distribution on some rows, read where an option's ranking can look.

    ``columns`` is float16 times ``TEACHER_SCALE`` (read it with ``probs``): half the memory of
    float32 at a relative error of 5e-4, and the scale keeps probabilities down to 2e-9 out of
    float16's subnormals, which numpy makes from float32 about 25 times slower. Rows with the same
    context share one row of ``columns`` (``at``): anchor text repeats a third of its contexts.
    """

    columns: np.ndarray  # [U, C] float16: its probabilities of the candidate words, times TEACHER_SCALE
    rest: np.ndarray  # [N, 3] ... of the three best other words (under the current head)
    top: np.ndarray  # [N, 2] its own expected top-1 and top-3: the mass of its best word and best three
    at: np.ndarray | None = None  # [N] each row's row of ``columns``; None: its own (U = N)

    def take(self, index: np.ndarray | slice) -> Teacher:
        if self.at is None:
            return Teacher(self.columns[index], self.rest[index], self.top[index])
        return Teacher(self.columns, self.rest[index], self.top[index], self.at[index])

    def narrowed(self, keep: np.ndarray) -> Teacher:
        """Its probabilities of the candidates at positions ``keep`` only (``narrowed`` rows' teacher), row by
        row in memory (``columns[:, keep]`` is column-major: each training step's rows read from it were
        gathered seven times slower)."""
        return self._replace(columns=np.take(self.columns, keep, axis=1))

    def row_of(self, index: np.ndarray | slice) -> np.ndarray | slice:
        """The rows of ``columns`` that rows ``index`` read."""
        return index if self.at is None else self.at[index]

    def probs(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Its probabilities of the candidate words on rows ``index``, float32 ``[n, C]``.

        Read from the float16 bits: shifted into a float32's place and rescaled by a power of two
        (exact for every float16 below infinity, subnormals included), ten times faster than
        numpy's float16 cast.
        """
        bits = self.columns[self.row_of(index)].view(np.uint16).astype(np.uint32)
        bits <<= 13
        out = bits.view(np.float32)
        out *= np.float32(2.0 ** (127 - 15) / TEACHER_SCALE)
        return out


def narrowed(rows: Rows, head: tuple[np.ndarray, np.ndarray], keep: np.ndarray) -> Rows:
    """``rows`` over the candidate columns at positions ``keep`` (sorted; the targets among them): the
    other candidates join the rest of the vocabulary, with their logits under ``head`` (the candidate
    columns' weights ``([F, C], [C])``). No best three of the others (training reads none)."""
    drop = np.setdiff1d(np.arange(len(head[1])), keep)
    rest = rows.rest_lse.copy()
    for start in range(0, len(rows) if len(drop) else 0, CHUNK):  # O(CHUNK x C) at a time
        sl = slice(start, start + CHUNK)
        z = rows.features[sl] @ head[0][:, drop]
        z += head[1][drop]
        peak = np.maximum(z.max(axis=1), rest[sl])
        z -= peak[:, None]
        np.exp(z, out=z)
        rest[sl] = peak + np.log(z.sum(axis=1) + np.exp(rest[sl] - peak))
    return Rows(rows.features, rows.contexts, np.searchsorted(keep, rows.targets), rest, None)


def minus_inf(keep: np.ndarray) -> np.ndarray:
    """``0`` where ``keep``, ``-inf`` elsewhere: added to logits, it masks them in one pass."""
    return np.where(keep, np.float32(0), np.float32(-np.inf)).astype(np.float32)


def best_of(z: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ids and values of each row's ``k`` largest values, best first ``[N, k]`` each (``z`` is left
    as it was; of equal values the lowest id first).

    ``k`` ``argmax`` passes (each found value set aside meanwhile): a few times faster than
    ``argpartition`` over thousands of columns for a handful. A row with fewer than ``k`` finite values gets
    ``-inf`` values for the missing ones (their ids are any).
    """
    rows, ids, saved = np.arange(len(z)), [], []
    for _ in range(k):
        i = z.argmax(axis=1)
        ids.append(i)
        saved.append(z[rows, i].copy())
        z[rows, i] = -np.inf
    for i, v in zip(reversed(ids), reversed(saved), strict=True):
        z[rows, i] = v
    return np.stack(ids, axis=1), np.stack(saved, axis=1)


def expected_top(p: np.ndarray, rest: np.ndarray, teacher: Teacher) -> np.ndarray:
    """Per row, the teacher's mass on an option's best word and best three words ``[N, 2]``.

    ``p`` (the candidates) and ``rest`` (the other words' best three) are the option's scores;
    the teacher's mass is read only where they rank first to third.
    """
    return teacher_mass(best_of(np.concatenate([p, rest], axis=1))[0], p.shape[1], teacher)


def teacher_mass(ids: np.ndarray, candidates: int, teacher: Teacher) -> np.ndarray:
    """The teacher's mass ``[N, 2]`` on each row's best word and best three, ``ids [N, 3]``: a candidate's
    position, or ``candidates + k`` for the other words' ``k``-th best."""
    rows = np.arange(len(ids))[:, None]
    taught = teacher.columns[teacher.row_of(rows), np.minimum(ids, candidates - 1)]
    mass = np.where(ids < candidates, Teacher(taught, teacher.rest, teacher.top).probs(),
                    teacher.rest[rows, np.maximum(ids - candidates, 0)])
    return np.stack([mass[:, 0], mass.sum(axis=1)], axis=1)
