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
    w, b = weight.copy(), bias.copy()
    w0, b0 = weight, bias
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    rng = np.random.default_rng(config.seed)
    n, bs = len(targets), config.batch_size
    steps_per_epoch = max(1, -(-n // bs))
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    min_epochs = -(-config.min_steps // steps_per_epoch)
    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
    scratch_w, scratch_b = (np.empty_like(w), np.empty(w.shape)), (np.empty_like(b), np.empty(b.shape))
    best_loss, best = np.inf, (w.copy(), b.copy())
    with progress_bar(epochs * steps_per_epoch, "personalizing", progress) as bar:
        for epoch in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                f = features[idx]
                g, _ = _probs(f @ w + b, None if rest_lse is None else rest_lse[idx])
                g[np.arange(len(idx)), targets[idx]] -= 1.0
                g /= len(idx)
                gw = f.T @ g + config.weight_decay * (w - w0)
                gb = g.sum(axis=0) + config.weight_decay * (b - b0)
                if anchor is not None:
                    a_rows, teacher = anchor
                    a = rng.integers(0, len(a_rows), len(idx))
                    fa = a_rows.features[a]
                    ga, _ = _probs(fa @ w + b, a_rows.rest_lse[a])
                    ga -= teacher.columns[a]
                    ga *= anchor_weight / len(a)
                    gw += fa.T @ ga
                    gb += ga.sum(axis=0)
                t += 1
                lr = config.learning_rate * np.sqrt(1 - beta2**t) / (1 - beta1**t)
                _adam(w, mw, vw, gw, lr, beta1, beta2, eps, scratch_w)
                _adam(b, mb, vb, gb, lr, beta1, beta2, eps, scratch_b)
                bar.update(1)
            if heldout is not None and epoch + 1 >= min_epochs:
                loss = heldout_loss(heldout, w, b)
                if loss >= best_loss:
                    return best
                best_loss, best = loss, (w.copy(), b.copy())
    return w, b


def _adam(p: np.ndarray, m: np.ndarray, v: np.ndarray, grad: np.ndarray, lr: float, beta1: float, beta2: float,
          eps: float, scratch: tuple[np.ndarray, np.ndarray]) -> None:
    """One Adam step on ``p`` in place: ``p -= lr * m / (sqrt(v) + eps)`` after the moment updates, in
    two scratch arrays (``p``'s type, and float64 for the step, as numpy computes ``lr * m`` with a
    float64 ``lr``) instead of a new array for every operation: the same numbers, fewer passes."""
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
    np.multiply(m, lr, out=high)
    high /= low
    p -= high


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
        key = None if bare is None else (sl.start, bare)
        got = seen.get(key) if key else None
        if got is None:
            p_t = p[np.arange(len(r)), r.targets]
            better = (p > p_t[:, None]).sum(axis=1) + (rest >= p_t[:, None]).sum(axis=1) + (
                (p == p_t[:, None]) & (columns[None, :] < columns[r.targets][:, None])).sum(axis=1)
            hits = np.stack([better < 1, better < 3, -np.log(np.maximum(p_t, 1e-12))], axis=1).astype(np.float64)
            got = groups[:, sl].astype(np.float64) @ hits
            if key:
                seen[key] = got
        out[i] += got
    return out / np.maximum(groups.sum(axis=1), 1)[None, :, None]


def anchor_scores(rows: Rows, teacher: Teacher, options: list[Option], columns: np.ndarray) -> np.ndarray:
    """Each option's expected top-1 and top-3 on anchor rows under the version's distribution ``[O, 2]``."""
    out = np.zeros((len(options), 2))
    seen: dict[tuple[int, int], np.ndarray] = {}  # options whose chunk is the bare head's (no phrase share there)
    for i, sl, _, p, rest, bare in _mixed(rows, options, columns):
        key = None if bare is None else (sl.start, bare)
        got = seen.get(key) if key else None
        if got is None:
            got = expected_top(p, rest, teacher.take(sl)).sum(axis=0)
            if key:
                seen[key] = got
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
        at = r.targets[:, None] if teacher is None else np.argpartition(-teacher.columns[sl], k - 1, axis=1)[:, :k]
        got = [m.max(axis=1), np.take_along_axis(p, at, axis=1), np.take_along_axis(m, at, axis=1)]
        parts.append(got + ([] if teacher is None else [np.take_along_axis(teacher.columns[sl], at, axis=1)]))
    out = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    return out if teacher is not None else (out[0], out[1][:, 0], out[2][:, 0])


def _mixed(rows: Rows, options: list[Option], columns: np.ndarray) -> Iterator[tuple]:
    """Per chunk of rows and option: (option index, row slice, rows, candidate probabilities,
    the others' best three, ``id`` of the head when the option mixes nothing into the chunk, else
    None). Options with the same bare head score the same, so callers score them once; a mixed
    array is a temporary, whose ``id`` a later one may take, so it is never a key."""
    for start in range(0, len(rows), CHUNK):
        sl = slice(start, start + CHUNK)
        r = rows.take(sl)
        neural: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        phrases: dict[int, np.ndarray] = {}
        for i, (head, memory, share) in enumerate(options):
            if id(head) not in neural:
                z = r.features @ head[0] + head[1]
                peak = z.max(axis=1, keepdims=True)
                lse = np.logaddexp(peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1)), r.rest_lse)[:, None]
                neural[id(head)] = (np.exp(z - lse), np.exp(r.rest_top - lse))
            p, rest = neural[id(head)]
            if share is not None and memory is not None and share[sl].any():  # a zero share leaves p as it is
                if id(memory) not in phrases:
                    phrases[id(memory)] = memory.probs_columns(r.contexts, columns)
                lam = share[sl][:, None]
                yield i, sl, r, (1 - lam) * p + lam * phrases[id(memory)], (1 - lam) * rest, None
            else:
                yield i, sl, r, p, rest, id(head)
