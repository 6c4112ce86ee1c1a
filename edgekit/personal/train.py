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

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from ..progress import progress_bar
from .phrases import PhraseMemory
from .rows import CHUNK, Rows, Teacher, expected_top


@dataclass
class TrainConfig:
    """Defaults chosen on SMS and Austen personal splits (see README)."""

    epochs: int = 4  # at most: training stops when held-out loss stops falling
    min_steps: int = 150  # small texts still get enough optimizer steps to move the head
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
               heldout: Rows | None = None, anchor: tuple[Rows, Teacher] | None = None,
               anchor_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Adam on softmax cross-entropy; returns new ``(weight [F, C], bias [C])``.

    With ``rest_lse`` the columns are the candidates and the other words'
    logits are fixed (``Rows``). With ``heldout`` (candidate rows), training
    stops after an epoch that did not lower the held-out loss and returns
    the best weights seen. With ``anchor``, each step also distils the
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
            if heldout is not None and epoch + 1 >= min_epochs:
                loss = heldout_loss(heldout, wb[:-1], wb[-1])
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
    """
    out = np.zeros((len(options), len(groups), 3))
    seen: dict[tuple[int, int], np.ndarray] = {}  # options whose chunk is the bare head's (no phrase share there)
    for i, sl, r, p, rest, bare in _mixed(rows, options, columns):
        got = seen.get((sl.start, bare)) if bare is not None else None
        if got is None:
            p_t = p[np.arange(len(r)), r.targets]
            tied_below = (p == p_t[:, None]) & (columns[None, :] < columns[r.targets][:, None])
            better = (np.count_nonzero(p > p_t[:, None], axis=1) + np.count_nonzero(rest >= p_t[:, None], axis=1)
                      + np.count_nonzero(tied_below, axis=1))
            hits = np.stack([better < 1, better < 3, -np.log(np.maximum(p_t, 1e-12))], axis=1).astype(np.float64)
            got = groups[:, sl].astype(np.float64) @ hits
            if bare is not None:
                seen[(sl.start, bare)] = got
        out[i] += got
    return out / np.maximum(groups.sum(axis=1), 1)[None, :, None]


def anchor_scores(rows: Rows, teacher: Teacher, options: list[Option], columns: np.ndarray) -> np.ndarray:
    """Each option's expected top-1 and top-3 on anchor rows under the version's distribution ``[O, 2]``."""
    out = np.zeros((len(options), 2))
    seen: dict[tuple[int, int], np.ndarray] = {}  # options whose chunk is the bare head's (no phrase share there)
    for i, sl, _, p, rest, bare in _mixed(rows, options, columns):
        got = seen.get((sl.start, bare)) if bare is not None else None
        if got is None:
            got = expected_top(p, rest, teacher.take(sl)).sum(axis=0)
            if bare is not None:
                seen[(sl.start, bare)] = got
        out[i] += got
    return out / max(len(rows), 1)


def mixture_data(rows: Rows, head: tuple[np.ndarray, np.ndarray], memory: PhraseMemory, columns: np.ndarray,
                 teacher: Teacher | None = None, k: int = 8) -> tuple[np.ndarray, ...]:
    """What fitting the phrase gate reads: per row the memory's best probability and, at the target
    (or, with ``teacher``, at the version's ``k`` likeliest candidates), the neural and memory probabilities
    (and the version's)."""
    parts = []
    option = Option(head, None, None)
    for _, sl, r, p, _, _ in _mixed(rows, [option], columns):
        m = memory.probs_columns(r.contexts, columns)
        k = min(k, len(columns))
        taught = None if teacher is None else teacher.probs(sl)
        at = r.targets[:, None] if taught is None else np.argpartition(-taught, k - 1, axis=1)[:, :k]
        got = [m.max(axis=1), np.take_along_axis(p, at, axis=1), np.take_along_axis(m, at, axis=1)]
        parts.append(got + ([] if taught is None else [np.take_along_axis(taught, at, axis=1)]))
    out = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    return out if teacher is not None else (out[0], out[1][:, 0], out[2][:, 0])


def _mixed(rows: Rows, options: list[Option], columns: np.ndarray) -> Iterator[tuple]:
    """Per chunk of rows and option: (option index, row slice, rows, candidate probabilities, the
    others' best three, the head's id when the option mixes nothing into the chunk, else ``None``).

    A mixture's probabilities are written into one buffer, reused for the next option: use them
    before asking for the next. Options that mix nothing get their head's own arrays, the same
    for every such option, so callers can score them once (by chunk and head id).
    """
    mixed: np.ndarray | None = None
    for start in range(0, len(rows), CHUNK):
        sl = slice(start, start + CHUNK)
        r = rows.take(sl)
        neural: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        phrases: dict[int, np.ndarray] = {}
        for i, (head, memory, share) in enumerate(options):
            if id(head) not in neural:
                neural[id(head)] = _neural(r, head)
            p, rest = neural[id(head)]
            lam = None if share is None or memory is None else share[sl]
            if lam is None or memory is None or not lam.any():  # a zero share leaves p as it is
                yield i, sl, r, p, rest, id(head)
                continue
            if id(memory) not in phrases:
                phrases[id(memory)] = memory.probs_columns(r.contexts, columns)
            if mixed is None or mixed.shape != p.shape:
                mixed = np.empty_like(p)
            np.subtract(phrases[id(memory)], p, out=mixed)  # (1 - lam) p + lam m, in place
            mixed *= lam[:, None]
            mixed += p
            yield i, sl, r, mixed, (1 - lam)[:, None] * rest, None


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
