"""Training the last layer on the device, in numpy, on the words the user writes.

The body (embedding + recurrent layers) stays frozen inside the ``.tflite``
whatever its quantization; the interpreter only supplies features. The float
head (softmax regression over the vocabulary) trains here with Adam on
softmax cross-entropy. Measured on this project: numpy steps on interpreter
features beat training inside the ``.tflite`` and work with an int8 body.

Personalization trains only the *candidate* columns (the words in the user's
text, ``Rows``): every other word keeps its logit, so its share of the
softmax is one number per example (``rest_lse``), computed once from the
current head. The loss is the exact full-vocabulary cross-entropy, at the
cost of a few thousand columns instead of ten thousand, and words the user
never wrote do not move at all.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, NamedTuple

import numpy as np

from ..progress import progress_bar
from .phrases import PhraseMemory
from .rows import CHUNK, Rows, Teacher, best_of, teacher_mass


@dataclass
class TrainConfig:
    """Defaults chosen on SMS and Austen personal splits (see README)."""

    epochs: int = 4  # at most: training stops when held-out loss stops falling
    min_steps: int = 150  # small texts still get enough optimizer steps to move the head (see for_small_text)
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4  # pulls the head back toward where it started
    holdout_every: int = 5  # every 5th line is held out to decide adoption
    min_word_count: int = 2  # an unknown word seen this often gets a personal slot
    max_lines: int = 50_000  # bounded memory on huge personal text: lines read, and tokens kept,
    max_tokens: int = 1_000_000  # at most (a line over 8,192 characters counts as one line per piece)
    seed: int = 0
    # The most expected top-3 an option may lose, against the model version, on
    # text the version writes itself (``personal.anchor``): what keeps learning
    # one kind of text from spoiling others. ``None`` lifts the bound (a device
    # used for one kind of text only gains more). Calibrated on real text: after
    # learning SMS, options that lost up to 0.0106 here lost at most 0.7 points
    # of top-3 on *Persuasion* (0.012 keeps a point's budget on other text and
    # lets *Persuasion*, learned itself, adopt its whole trained head).
    other_text_slack: float | None = 0.012
    # BLAS threads while learning. One leaves the other cores to the app, and on
    # a busy 2-core box single-threaded steps were 3x faster than OpenBLAS's
    # default threading (which spins while competing with other work).
    threads: int | None = 1


def for_small_text(config: TrainConfig, examples: int) -> TrainConfig:
    """``config`` for personalizing on ``examples`` rows: a text whose epochs give fewer than
    ``min_steps`` steps trains half of them at twice the learning rate, not all of them.

    Those steps are most of learning a few lines (a keyboard's quit, a day's journal): half as many
    move the head as far (on the README's dialogue user, top-3 66.6% either way; the steps
    alone, at the same rate, lost 1.5 points) in half the time.
    """
    steps = config.epochs * max(1, -(-examples // config.batch_size))
    if steps >= config.min_steps:
        return config
    return replace(config, min_steps=max(steps, config.min_steps // 2), learning_rate=2 * config.learning_rate)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _probs(logits: np.ndarray, rest_lse: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax over the columns plus, when given, the rest of the vocabulary as one more class."""
    if rest_lse is None:
        return softmax(logits), None
    peak = np.maximum(logits.max(axis=1), rest_lse)
    p = np.exp(logits - peak[:, None])
    rest = np.exp(rest_lse - peak)
    total = p.sum(axis=1) + rest
    p /= total[:, None]
    return p, rest / total


def train_head(features: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray,
               config: TrainConfig, progress: bool = False, rest_lse: np.ndarray | None = None,
               heldout: Callable[[], Rows] | None = None, anchor: tuple[Rows, Teacher] | None = None,
               anchor_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Adam on softmax cross-entropy; returns new ``(weight [F, C], bias [C])``.

    With ``rest_lse`` the columns are the candidates and the other words'
    logits are fixed (``Rows``). With ``heldout`` (a function that makes the
    candidate rows held out, called when first needed: a text whose only
    checked epoch is its last never needs them), training stops after an
    epoch that did not lower the held-out loss and returns the best weights
    seen. With ``anchor``, each step also distils the
    model version's distribution on a batch of anchor rows
    (``personal.anchor``), weighted ``anchor_weight``.
    """
    # The bias is the weight of one more feature that is always 1, and a step's user and anchor rows
    # are one [B + A, C] batch: one matrix product makes all the logits, one more the whole gradient
    # (each row's part scaled through its features), and Adam runs once. The batch is worked on in
    # place in one reused buffer.
    wb0 = np.vstack([weight, bias[None, :]]).astype(np.float32)
    wb = wb0.copy()
    m, v = np.zeros_like(wb), np.zeros_like(wb)
    rng = np.random.default_rng(config.seed)
    n, bs = len(targets), config.batch_size
    steps_per_epoch = max(1, -(-n // bs))
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    min_epochs = -(-config.min_steps // steps_per_epoch)
    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
    grad, low, high = np.empty_like(wb), np.empty_like(wb), np.empty((ADAM_ROWS, wb.shape[1]))  # scratch: ``_adam``
    feats = _with_ones(features)
    a_feats = None if anchor is None else _with_ones(anchor[0].features)
    z = np.empty((min(bs, n) * (1 if anchor is None else 2), wb.shape[1]), np.float32)
    rest = np.full(len(z), -np.inf, np.float32)  # the other words' log-sum-exp per row; none: -inf
    best_loss, best = np.inf, (wb[:-1].copy(), wb[-1].copy())
    held: Rows | None = None
    with progress_bar(epochs * steps_per_epoch, "personalizing", progress) as bar:
        for epoch in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                k = len(idx)
                f = feats[idx]
                if rest_lse is not None:
                    rest[:k] = rest_lse[idx]
                if anchor is not None and a_feats is not None:
                    a_rows, teacher = anchor
                    a = rng.integers(0, len(a_rows), k)
                    f = np.concatenate([f, a_feats[a]])
                    rest[k : 2 * k] = a_rows.rest_lse[a]
                g = z[: len(f)]
                np.matmul(f, wb, out=g)
                _softmax_(g, rest[: len(f)])
                g[np.arange(k), targets[idx]] -= 1.0  # softmax - one-hot: cross-entropy's gradient at the logits
                f[:k] *= np.float32(1.0 / k)
                if anchor is not None:
                    g[k:] -= teacher.probs(a)  # softmax - the version's: distillation's
                    f[k:] *= np.float32(anchor_weight / k)
                np.matmul(f.T, g, out=grad)
                decay = np.subtract(wb, wb0, out=low)
                decay *= config.weight_decay
                grad += decay
                t += 1
                lr = config.learning_rate * np.sqrt(1 - beta2**t) / (1 - beta1**t)
                _adam(wb, m, v, grad, lr, beta1, beta2, eps, (low, high))
                bar.update(1)
            # The last epoch's loss matters only against an earlier one (a few lines: no earlier one).
            if heldout is not None and epoch + 1 >= min_epochs and (epoch + 1 < epochs or best_loss < np.inf):
                held = heldout() if held is None else held
                loss = heldout_loss(held, wb[:-1], wb[-1])
                if loss >= best_loss:
                    return best
                best_loss, best = loss, (wb[:-1].copy(), wb[-1].copy())
    return wb[:-1].copy(), wb[-1].copy()


def _with_ones(features: np.ndarray) -> np.ndarray:
    """``[features, 1]`` as float32 ``[N, F + 1]``: the bias as one more weight row."""
    out = np.ones((len(features), features.shape[1] + 1), np.float32)
    out[:, :-1] = features
    return out


def _softmax_(z: np.ndarray, rest_lse: np.ndarray) -> None:
    """``z <- softmax(z)`` in place, over the columns and the rest of the vocabulary as one more
    class (``Rows.rest_lse``; ``-inf``: no rest)."""
    peak = np.maximum(z.max(axis=1), rest_lse)
    z -= peak[:, None]
    np.exp(z, out=z)
    total = z.sum(axis=1)
    total += np.exp(rest_lse - peak)
    z /= total[:, None]


ADAM_ROWS = 8  # weight rows per float64 step in ``_adam``


def _adam(p: np.ndarray, m: np.ndarray, v: np.ndarray, grad: np.ndarray, lr: float, beta1: float, beta2: float,
          eps: float, scratch: tuple[np.ndarray, np.ndarray]) -> None:
    """One Adam step on ``p`` in place: ``p -= lr * m / (sqrt(v) + eps)`` after the moment updates, in
    two scratch arrays (``p``'s shape and type, and float64 ``ADAM_ROWS`` rows for the step, as numpy
    computes ``lr * m`` with a float64 ``lr``) instead of a new array for every operation: the same
    numbers, fewer passes, and the float64 step a few rows at a time (a whole one is the size of two
    more float32 buffers, where learning peaks)."""
    low, high = scratch
    m *= beta1
    np.multiply(grad, 1 - beta1, out=low)
    m += low
    v *= beta2
    np.multiply(grad, 1 - beta2, out=low)
    low *= grad
    v += low
    np.sqrt(v, out=low)
    low += eps
    for start in range(0, len(p), len(high)):
        rows = slice(start, start + len(high))
        step = high[: min(len(high), len(p) - start)]
        np.multiply(m[rows], lr, out=step)
        step /= low[rows]
        p[rows] -= step


def heldout_loss(rows: Rows, w: np.ndarray, b: np.ndarray) -> float:
    """Mean cross-entropy of a candidate head on candidate rows."""
    total = 0.0
    for start in range(0, len(rows), CHUNK):
        r = rows.take(slice(start, start + CHUNK))
        p, _ = _probs(r.features @ w + b, r.rest_lse)
        total -= np.log(np.maximum(p[np.arange(len(r)), r.targets], 1e-12)).sum()
    return total / max(len(rows), 1)


class Option(NamedTuple):
    """A candidate state to score: a candidate head, a phrase memory and its share per row ``[N]``."""

    head: tuple[np.ndarray, np.ndarray]
    memory: PhraseMemory | None
    share: np.ndarray | None


def score_options(rows: Rows, options: list[Option], groups: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(top-1, top-3, mean NLL) of each option on each group of rows: ``[len(options), len(groups), 3]``.

    ``groups`` is a boolean ``[G, N]`` (e.g. every held-out row, and the
    rows from lines the user had not written before). Exact over the whole
    vocabulary: a word outside the candidates beats the target when one of
    the three best of them does. Ties rank as ``suggest()`` ranks them (the
    lower id first; an outside word, whose id is not kept, counts as ahead),
    as ``metrics.evaluate`` counts them.

    Each head's and memory's probabilities are made once per chunk of rows,
    and an option's mixture is ranked from their ``TOP`` best columns
    (``_Listed``), not over every candidate: with fifteen options that was
    most of a personalization's time.
    """
    out = np.zeros((len(options), len(groups), 3))
    for which, sl, r, listed, lam in _listed(rows, options, columns):
        ahead, p_t = listed.ahead(r.targets, columns, lam)
        hits = np.stack([ahead < 1, ahead < 3, -np.log(np.maximum(p_t, 1e-12))], axis=-1).astype(np.float64)
        out[which] += np.einsum("gn,knh->kgh", groups[:, sl].astype(np.float64), hits)
    return out / np.maximum(groups.sum(axis=1), 1)[None, :, None]


def anchor_scores(rows: Rows, teacher: Teacher, options: list[Option], columns: np.ndarray) -> np.ndarray:
    """Each option's expected top-1 and top-3 on anchor rows under the version's distribution ``[O, 2]``
    (each option's best three found as ``score_options`` ranks)."""
    out = np.zeros((len(options), 2))
    for which, sl, _, listed, lam in _listed(rows, options, columns):
        taught = teacher.take(sl)
        for i, best in zip(which, listed.best_three(lam), strict=True):
            out[i] += teacher_mass(best, len(columns), taught).sum(axis=0)
    return out / max(len(rows), 1)


TOP = 8  # columns per row a head's or a memory's probabilities keep for ranking mixtures (``_Listed``)
MARGIN = 1e-4  # of the larger probability mixed: far more than float32's rounding in a mixture of two


class _Ranked:
    """One chunk's probabilities of the candidates under a head (with the other words' best three) or a
    memory, and each row's ``TOP`` best columns, found on first use."""

    def __init__(self, probs: np.ndarray, rest: np.ndarray | None):
        self.probs, self.rest = probs, rest
        self._top: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [n, k], values [n, k])``, best first, ``k = min(TOP, columns)``."""
        if self._top is None:
            self._top = best_of(self.probs, min(TOP, self.probs.shape[1]))
        return self._top


def _listed(rows: Rows, options: list[Option], columns: np.ndarray) -> Iterator[tuple]:
    """Per chunk of rows and pair of a head and a memory: (the indices of the options that mix them, row
    slice, rows, the pair's ``_Listed`` there, each option's memory share ``[k, n]``); each head's and
    memory's probabilities made once a chunk."""
    pairs: dict[tuple[int, int], list[int]] = {}
    for i, (head, memory, share) in enumerate(options):
        pairs.setdefault((id(head), id(memory) if share is not None else id(None)), []).append(i)
    for start in range(0, len(rows), CHUNK):
        sl = slice(start, start + CHUNK)
        r = rows.take(sl)
        made: dict[int, _Ranked] = {}
        for which in pairs.values():
            head, memory, _ = options[which[0]]
            if id(head) not in made:
                made[id(head)] = _Ranked(*_neural(r, head))
            shares = [options[i].share for i in which]
            if memory is None or shares[0] is None:
                mixed, lam = None, np.zeros((len(which), len(r)), np.float32)
            else:
                if id(memory) not in made:
                    made[id(memory)] = _Ranked(memory.probs_columns(r.contexts, columns), None)
                mixed, lam = made[id(memory)], np.stack([s[sl] for s in shares if s is not None])
            yield which, sl, r, _Listed(made[id(head)], mixed), lam


class _Listed:
    """A head and a memory (or none) on one chunk of rows, for ranking their mixtures ``(1 - lam) p + lam m``
    without mixing every candidate: the columns either lists among its ``TOP`` best, in id order. Each
    ranking takes the shares of several mixtures at once, ``lam [k, n]``.

    A column in neither list has at most the mixture of the lists' last values (``bound``): rows where
    that stays below what a ranking needs (by a ``MARGIN`` that float32's rounding cannot close) are
    ranked from the listed columns and the other words' best three, mixed with the same float32
    operations as every candidate would be; the few others are ranked over every candidate.
    """

    def __init__(self, neural: _Ranked, memory: _Ranked | None):
        self.p, self.rest = neural.probs, neural.rest
        self.m = np.zeros_like(self.p) if memory is None else memory.probs
        listed = neural.top[0] if memory is None else np.concatenate([neural.top[0], memory.top[0]], axis=1)
        self.ids = np.sort(listed, axis=1)
        self.again = np.zeros(self.ids.shape, bool)  # listed by both: counts once
        self.again[:, 1:] = self.ids[:, 1:] == self.ids[:, :-1]
        at = np.arange(len(self.ids))[:, None]
        self.p_at, self.m_at = self.p[at, self.ids], self.m[at, self.ids]
        self.last = neural.top[1][:, -1].astype(np.float64)
        self.m_last = np.zeros_like(self.last) if memory is None else memory.top[1][:, -1].astype(np.float64)
        self.everything = neural.top[0].shape[1] >= self.p.shape[1]  # the head's list holds every candidate

    def _near(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mixtures at the listed columns ``[k, n, L]``, the others' best three ``[k, n, 3]``, and the
        least a listed value must exceed to be sure no other candidate is above it ``[k, n]``."""
        near = (self.m_at - self.p_at) * lam[..., None] + self.p_at
        rest = (1 - lam)[..., None] * self.rest
        bound = (1 - lam) * self.last + lam * self.m_last + MARGIN * np.maximum(self.last, self.m_last)
        return near, rest, np.full(lam.shape, -np.inf) if self.everything else bound

    def _mixed(self, option: np.ndarray, rows: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Whole mixtures ``[len(rows), C]`` of ``(option, row)`` pairs."""
        return (self.m[rows] - self.p[rows]) * lam[option, rows][:, None] + self.p[rows]

    def ahead(self, targets: np.ndarray, columns: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How many words rank ahead of each row's target (exact below 3, else at least 3: all top-1 and
        top-3 need), and the target's probability, per mixture and row ``[k, n]``."""
        rows = np.arange(len(targets))
        p_t = (self.m[rows, targets] - self.p[rows, targets]) * lam + self.p[rows, targets]
        near, rest, bound = self._near(lam)
        count = ~self.again & (self.ids != targets[:, None])  # the target never counts itself
        lower = count & (columns[self.ids] < columns[targets][:, None])
        at = p_t[..., None]
        ahead = (np.count_nonzero(count & (near > at), axis=-1) + np.count_nonzero(lower & (near == at), axis=-1)
                 + np.count_nonzero(rest >= at, axis=-1))
        option, row = np.nonzero((ahead < 3) & (bound >= p_t))
        if len(row):
            mixed, at = self._mixed(option, row, lam), p_t[option, row][:, None]
            ahead[option, row] = (
                np.count_nonzero(mixed > at, axis=1) + np.count_nonzero(rest[option, row] >= at, axis=1)
                + np.count_nonzero((mixed == at) & (columns[None, :] < columns[targets[row], None]), axis=1))
        return ahead, p_t

    def best_three(self, lam: np.ndarray) -> np.ndarray:
        """Each row's three best words per mixture ``[k, n, 3]`` as ``expected_top`` ranks them: a
        candidate's position, or ``candidates + j`` for the other words' ``j``-th best."""
        near, rest, bound = self._near(lam)
        near[:, self.again] = -np.inf
        k, n, listed = near.shape
        at, value = (a.reshape(k, n, 3) for a in best_of(np.concatenate([near, rest], axis=-1).reshape(k * n, -1)))
        ids = np.broadcast_to(self.ids, near.shape)
        best = np.where(at < listed, np.take_along_axis(ids, np.minimum(at, listed - 1), axis=-1),
                        self.p.shape[1] + at - listed)
        option, row = np.nonzero(value[..., 2] <= bound)
        if len(row):
            best[option, row] = best_of(np.concatenate([self._mixed(option, row, lam), rest[option, row]], axis=1))[0]
        return best


def memory_best(rows: Rows, memory: PhraseMemory, columns: np.ndarray) -> np.ndarray:
    """The memory's best probability among the candidates, per row ``[N]`` (a gate input, ``gate``)."""
    return np.concatenate([memory.best_columns(rows.contexts[start : start + CHUNK], columns)
                           for start in range(0, len(rows), CHUNK)] or [np.zeros(0, np.float32)])


def mixture_data(rows: Rows, head: tuple[np.ndarray, np.ndarray], memory: PhraseMemory, columns: np.ndarray,
                 teacher: Teacher | None = None, k: int = 8) -> tuple[np.ndarray, ...]:
    """What fitting the phrase gate reads: per row the memory's best probability and, at the target
    (or, with ``teacher``, at the version's ``k`` likeliest candidates), the neural and memory probabilities
    (and the version's)."""
    parts = []
    for start in range(0, len(rows), CHUNK):
        sl = slice(start, start + CHUNK)
        r = rows.take(sl)
        p = _neural(r, head)[0]
        m = memory.probs_columns(r.contexts, columns)
        k = min(k, len(columns))
        taught = None if teacher is None else teacher.probs(sl)
        at = r.targets[:, None] if taught is None else np.argpartition(-taught, k - 1, axis=1)[:, :k]
        got = [m.max(axis=1), np.take_along_axis(p, at, axis=1), np.take_along_axis(m, at, axis=1)]
        parts.append(got + ([] if taught is None else [np.take_along_axis(taught, at, axis=1)]))
    out = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    return out if teacher is not None else (out[0], out[1][:, 0], out[2][:, 0])


def _neural(rows: Rows, head: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A candidate head's probabilities of the candidates and of the others' best three (whole-vocabulary softmax)."""
    z = rows.features @ head[0]
    z += head[1]
    peak = z.max(axis=1)
    z -= peak[:, None]
    np.exp(z, out=z)
    lse = np.logaddexp(peak + np.log(z.sum(axis=1)), rows.rest_lse)
    z *= np.exp(peak - lse)[:, None]
    return z, np.exp(rows.rest_top - lse[:, None])
