"""Anchor text: what the model version itself would write, to keep personalization local.

A user's text moves the head for every context, not only the ones they write:
after learning SMS, top-3 on formal prose fell by 3.5 points. The device has
no text of other kinds to check against, but the model is a language model:
it can write some. ``sample_contexts`` draws sentences from the model
version's own distribution; head training is pulled toward the version's
predictions on them (distillation, ``train.train_head``), and an option is
adopted only if the version's likely next words on them stay in its top-3
(``TrainConfig.other_text_slack``, ``learner.choose``). Features of the user's contexts
barely separate from prose (a nearest-centroid gate scored 0.65 AUC on SMS
against *Persuasion*), so the bound is on the predictions, not a gate on
the features.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..vocab import Vocabulary
from .rows import CHUNK

ANCHOR_ROWS = 3072  # 256 sentences x 12 words
ANCHOR_WEIGHT = 1.0  # distillation's weight in each training step, against the user's cross-entropy


def sample_contexts(logits: Callable[[np.ndarray], np.ndarray], vocab: Vocabulary, context_length: int,
                    rows: int = ANCHOR_ROWS, seed: int = 0) -> np.ndarray:
    """Contexts ``[rows, T]`` of sentences the model writes (temperature 1; words and sentence ends).

    ``logits(ids)`` is the model version's logits for a batch of contexts.
    Deterministic for a model version and ``seed``.
    """
    rng = np.random.default_rng(seed)
    start = np.full(context_length, vocab.pad, np.int32)
    start[-1] = vocab.bos
    allowed = vocab.suggestable_mask().copy()
    allowed[vocab.first_slot:] = False  # personal words are the user's, not the version's
    allowed[vocab.eos] = True
    ctx = np.tile(start, (CHUNK, 1))
    out: list[np.ndarray] = []
    while len(out) * CHUNK < rows:
        z = np.where(allowed, logits(ctx), -np.inf)
        cum = np.cumsum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)
        nxt = (cum < rng.random((len(cum), 1)) * cum[:, -1:]).sum(axis=1)
        out.append(ctx.copy())
        ctx = np.concatenate([ctx[:, 1:], nxt[:, None].astype(np.int32)], axis=1)
        ctx[nxt == vocab.eos] = start
    return np.concatenate(out)[:rows]
