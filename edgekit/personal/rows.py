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

CHUNK = 256  # rows per step of scoring over the candidate columns: memory O(CHUNK x C)
READ = BATCH  # rows per interpreter pass when reading: every [rows, V] array (logits, softmax) is O(READ x V)
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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

    ``score(ids)`` gives ``(features, logits of the current head, logits of
    the model version's head)`` for a chunk; ``columns`` are the candidate
    ids (sorted), ``words`` the boolean mask of ids that can be suggested at
    all. ``top=False`` skips the others' best three (training needs none).
    """
    reader = RowReader(columns, words, top)
    with progress_bar(len(contexts), "running model", progress) as bar:
        for start in range(0, len(contexts), READ):
            reader.add(*score(contexts[start : start + READ]))
            bar.update(min(READ, len(contexts) - start))
    return reader.rows(contexts, targets)


class RowReader:
    """Reads chunks of interpreter output into ``Rows`` (and, with ``teacher``, the version's ``Teacher``)."""

    def __init__(self, columns: np.ndarray, words: np.ndarray, top: bool = True, teacher: bool = False):
        self.columns, self.words, self.top, self.teacher = columns, words, top, teacher
        self.other = words.copy()
        self.other[columns] = False
        self.parts: list[tuple] = []

    def add(self, features: np.ndarray, logits: np.ndarray, base_logits: np.ndarray) -> None:
        """One interpreter pass's output (``READ`` rows at most: its temporaries are ``[rows, V]``)."""
        z = np.where(self.other, logits, -np.inf)
        top_ids = np.argpartition(z, z.shape[1] - 3, axis=1)[:, -3:] if self.teacher else None
        # By value where no ids are needed; a copy, not a view that would keep the partitioned [N, V] alive.
        best = np.take_along_axis(z, top_ids, axis=1) if top_ids is not None \
            else np.partition(z, z.shape[1] - 3, axis=1)[:, -3:].copy() if self.top else None
        peak = np.max(z, axis=1, keepdims=True) if best is None else best.max(axis=1, keepdims=True)
        peak = np.maximum(peak, np.finfo(np.float32).min)  # every word a candidate: no others
        with np.errstate(divide="ignore"):
            lse = peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1))
        taught = _teacher(base_logits, self.words, self.columns, top_ids) if top_ids is not None and self.teacher \
            else None
        self.parts.append((features.astype(np.float32), lse, best, taught))

    def rows(self, contexts: np.ndarray, targets: np.ndarray) -> Rows:
        features, lse, best, _ = zip(*self.parts, strict=True) if self.parts else ((), (), (), ())
        return Rows(np.concatenate(features), contexts, np.searchsorted(self.columns, targets),
                    np.concatenate(lse), np.concatenate(best) if self.top else None)

    def teacher_rows(self) -> Teacher:
        return Teacher(*(np.concatenate([p[3][i] for p in self.parts]) for i in range(3)))


class Teacher(NamedTuple):
    """The model version's own distribution on some rows, read where an option's ranking can look."""

    columns: np.ndarray  # [N, C] its probabilities of the candidate words
    rest: np.ndarray  # [N, 3] ... of the three best other words (under the current head)
    top: np.ndarray  # [N, 2] its own expected top-1 and top-3: the mass of its best word and best three

    def take(self, index: np.ndarray | slice) -> Teacher:
        return Teacher(self.columns[index], self.rest[index], self.top[index])


def _teacher(base_logits: np.ndarray, words: np.ndarray, columns: np.ndarray, other_top: np.ndarray) -> tuple:
    z = np.where(words, base_logits, -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    best = np.partition(p, p.shape[1] - 3, axis=1)[:, -3:]
    return p[:, columns], np.take_along_axis(p, other_top, axis=1), np.stack([best.max(axis=1), best.sum(axis=1)], 1)


def expected_top(p: np.ndarray, rest: np.ndarray, teacher: Teacher) -> np.ndarray:
    """Per row, the teacher's mass on an option's best word and best three words ``[N, 2]``."""
    scores = np.concatenate([p, rest], axis=1)
    mass = np.concatenate([teacher.columns, teacher.rest], axis=1)
    top3 = np.argpartition(-scores, 2, axis=1)[:, :3]
    top1 = scores.argmax(axis=1)
    return np.stack([mass[np.arange(len(p)), top1], np.take_along_axis(mass, top3, axis=1).sum(axis=1)], axis=1)


