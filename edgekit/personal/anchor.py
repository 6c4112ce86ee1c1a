"""Anchor text: what the model version itself would write, to keep personalization local.

A user's text moves the head for every context, not only the ones they write:
after learning SMS, top-3 on formal prose fell by 3.5 points. The device has
no text of other kinds to check against, but the model is a language model:
it can write some. ``anchor_rows`` draws sentences from the model
version's own distribution; head training is pulled toward the version's
predictions on them (distillation, ``train.train_head``), and an option is
adopted only if the version's likely next words on them stay in its top-3
(``TrainConfig.other_text_slack``, ``learner.choose``). Features of the user's contexts
barely separate from prose (a nearest-centroid gate scored 0.65 AUC on SMS
against *Persuasion*), so the bound is on the predictions, not a gate on
the features.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..vocab import Vocabulary
from .rows import READ, RowReader, Rows, Scorer, Teacher, minus_inf, unique_rows

SENTENCES = 256  # written side by side: one step of each is one word
ANCHOR_ROWS = 3072  # 256 sentences x 12 words (rounded up to whole steps of 256)
ANCHOR_WEIGHT = 1.0  # distillation's weight in each training step, against the user's cross-entropy


def anchor_rows(score: Scorer, vocab: Vocabulary, context_length: int, columns: np.ndarray,
                rows: int = ANCHOR_ROWS, seed: int = 0) -> tuple[Rows, Teacher]:
    """Sentences the model version writes (temperature 1; words and sentence ends), read as rows.

    Each step runs the interpreter on the sentences (``READ`` at a time): its
    output is both the next row's statistics and the distribution the next
    word is drawn from. A context several sentences share (every sentence's
    first; many second ones) is read once: a third of the rows. Deterministic
    for a model version and ``seed``, so the contexts drawn are kept for the
    process's next learning (``_DRAWN``; drawing was a third of this text's
    time): the interpreter still reads them, for the head and the candidate
    columns of the day.
    """
    rng = np.random.default_rng(seed)
    start = np.full(context_length, vocab.pad, np.int32)
    start[-1] = vocab.bos
    allowed = vocab.suggestable_mask().copy()
    allowed[vocab.first_slot:] = False  # personal words are the user's, not the version's
    allowed[vocab.eos] = True
    allowed = minus_inf(allowed)
    steps = -(-rows // SENTENCES)
    reader = RowReader(columns, vocab.suggestable_mask(), teacher=steps * SENTENCES)
    ctx, seen, drawn, origin = np.tile(start, (SENTENCES, 1)), list[np.ndarray](), None, b""
    index, read = list[np.ndarray](), 0  # the row read for each context; rows read so far
    for step in range(steps):
        unique, at = unique_rows(ctx)
        index.append(read + at)
        read += len(unique)
        nxt, draws = np.empty(SENTENCES, np.int64), rng.random((SENTENCES, 1))
        for s in range(0, len(unique), READ):
            scored = score(unique[s : s + READ])
            reader.add(*scored)
            base = scored.base_logits
            if step == s == 0:
                origin = _origin(base[0], allowed, seed)
                drawn = _DRAWN.get(origin)
                drawn = drawn if drawn is not None and len(drawn) >= steps * SENTENCES else None
            if drawn is None:
                here = np.flatnonzero((at >= s) & (at < s + READ))
                nxt[here] = _draw(draws[here], allowed, base, at[here] - s)
        seen.append(ctx.copy())
        if drawn is not None:
            ctx = drawn[(step + 1) * SENTENCES : (step + 2) * SENTENCES]
        else:
            ctx = np.concatenate([ctx[:, 1:], nxt[:, None].astype(np.int32)], axis=1)
            ctx[nxt == vocab.eos] = start
    contexts, at = np.concatenate(seen), np.concatenate(index)
    if drawn is None:
        _DRAWN.clear()  # one version's at a time
        _DRAWN[origin] = contexts
    return reader.rows(contexts, np.zeros(len(contexts), np.int64), at), reader.teacher_rows(at)


# The latest anchor contexts drawn in this process, by what drew them (``_origin``): longer ones serve a
# shorter text too, its steps being their first ones.
_DRAWN: dict[bytes, np.ndarray] = {}


def _origin(first: np.ndarray, allowed: np.ndarray, seed: int) -> bytes:
    """What anchor contexts are drawn from: the version's logits at the first context (a new version or
    another file of it has others), the words allowed, the seed."""
    return hashlib.blake2b(first.tobytes() + allowed.tobytes() + str(seed).encode(), digest_size=16).digest()


def _draw(draws: np.ndarray, allowed: np.ndarray, logits: np.ndarray, which: np.ndarray) -> np.ndarray:
    """One next word per sentence, from ``softmax(logits[which])`` over the ids where ``allowed``
    (``-inf`` elsewhere, ``minus_inf``), by its uniform draw ``draws [n, 1]``: the first id whose
    running sum passes the draw's share of the total.

    The running sum is float32 and sequential, as it always was: a faster one (by blocks of ids)
    rounds differently, and one word drawn differently makes a different sentence from there on,
    hence different anchor text and slightly different learning. Two rows' sums are run at once, as
    the real and imaginary parts of complex64 numbers: the same float32 additions in the same order,
    in a little over half the time.
    """
    z = logits + allowed
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    pairs = np.zeros((-(-len(z) // 2), z.shape[1], 2), np.float32)  # rows 2i and 2i + 1 side by side
    pairs[:, :, 0], pairs[: len(z) // 2, :, 1] = z[0::2], z[1::2]
    cum = np.cumsum(pairs.view(np.complex64)[..., 0], axis=1).view(np.float32).reshape(pairs.shape)
    limits = draws[:, 0] * cum[which // 2, -1, which % 2]
    return np.array([np.searchsorted(cum[w // 2, :, w % 2], x)
                     for w, x in zip(which.tolist(), limits.tolist(), strict=True)], np.int64)
