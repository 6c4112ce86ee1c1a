"""Next-word scores with the personal state in play: the head's change, then the phrase memory.

The personal head runs inside the interpreter: a copy of the flatbuffer
with the head written in (``Runtime.with_head``), so the interpreter ranks
the words under it at the version's speed. What the interpreter cannot see,
the personal words (slots outside its ranking) and the phrase memory, is
merged on the host with its ranking (``_merge``): only the few words that
can still reach the top are scored, in plain Python, and the result is the
same words and probabilities as a softmax over the whole vocabulary mixed
with the memory. Every id's score is made only when asked for (a completion
of a typed prefix, or a ranking the merge cannot settle).

Where a personal int8 head would saturate the file's logits, or cannot be
written into the file, the version's logits plus the head's change are
computed for every id on the host instead (``_dense``): exact, slower, rare.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..blas import blas_threads
from ..flatbuffer_head import FlatHeadError
from ..head import Head
from ..runtime import Runtime, Scores
from ..vocab import Vocabulary
from .gate import context_share, mix
from .phrases import ORDER
from .state import PersonalState
from .train import softmax

RANKED = 8  # words a personalized context ranks: a keyboard shows three, with some to spare for blocked ones
ENDINGS = 4096  # context endings whose phrase-memory view is kept (a user's common word pairs)


class _Parts(NamedTuple):
    """What merging reads of a personal state, gathered once per state."""

    extra: np.ndarray  # the personal words' ids (``Predictor._slot_ids``), then the ids never suggested: with
    # the interpreter's sum, the softmax's total
    extra_sums: np.ndarray  # [E, 2] 1.0 where ``extra`` is a personal word (column 0) or never suggested (1)
    unigram: np.ndarray  # [V] float32: the phrase memory's unigram probabilities
    by_unigram: list[tuple[int, float]]  # the memory's words and unigram probabilities, likeliest first
    memory_ok: bool  # every word the memory knows can be suggested (so its mass there is 1)
    scratch: np.ndarray  # [V] float32 zeros: one ending's n-gram weights while they are read
    views: dict[tuple[int, ...], _View]  # the phrase memory's view of the endings met lately


class _View(NamedTuple):
    """What the phrase memory says after one context ending (its last ``ORDER - 1`` words: all it reads).

    The same float32 numbers as ``PhraseMemory.probs``: each order's weights,
    then ``left * unigram``.
    """

    share: float  # its share of the mixture (``gate.context_share``)
    named: dict[int, float]  # the probability of each word its n-grams name there
    left: float  # any other word's probability is ``left * unigram``
    top: list[tuple[int, float]]  # its ``RANKED`` likeliest words and their probabilities, best first
    top_ids: np.ndarray  # those words
    bound: float  # no word outside ``top`` is likelier than this


class Predictor:
    """The interpreter, the head and the personal state, as one scorer of contexts."""

    def __init__(self, runtime: Runtime, head: Head, state: PersonalState, vocab: Vocabulary,
                 blas_threads: int = 1):
        self.runtime, self.head, self._vocab, self._blas = runtime, head, vocab, blas_threads
        self.use(state)

    def use(self, state: PersonalState) -> None:
        """Score with ``state`` from now on (its head delta included; the vocabulary's personal words set)."""
        self.state = state
        self.head.set_delta(state.delta_w, state.delta_b)
        self.plain = not (self.head.on_host or (state.phrase_weight and len(state.phrases))
                          or state.personal_words)
        self._parts: _Parts | None = None
        self._flat: Runtime | None = None  # the personal head's flatbuffer copy, made on first use
        self._flat_failed = False  # this head cannot be written into the file
        self._slot_ids = np.array(sorted(self._vocab.personal_words.values()), np.int64)

    def release(self) -> None:
        """Drop what only suggestions use (the personal flatbuffer copy, the merge's views), made again
        on the next suggestion: learning needs the memory, and ends in a new state anyway."""
        self._flat, self._parts = None, None

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Next-word probabilities ``[N, V]`` for context ids ``[N, T]``."""
        feats, logits = self.runtime.features_logits(ids)
        st = self.state
        with blas_threads(self._blas):
            probs = softmax(self.head.logits(feats, logits).astype(np.float32))
            return mix(probs, st.phrases, ids, st.phrase_weight, st.phrase_gate)

    def scores(self, ids: np.ndarray) -> Scores:
        """One context's (``[T]``) log-scale scores, for ranking."""
        if self.plain:
            return self.runtime.invoke(ids[None])
        ranker = self._ranker()
        if ranker is not None:
            body = ids if not len(self._slot_ids) or ids.max() < self._vocab.first_slot else ranker.body_ids(ids)
            own = ranker.invoke(body[None])
            if ranker is self.runtime or self._unsaturated(own, ranker.logit_ceiling):
                return self._personal(ids, own)
        feats, base = self.runtime.invoke_features(ids[None])  # the head's change on the host, every id
        logits = self.head.logits(feats[None], base.values[None])[0]
        return Scores(self._dense(ids, logits, bool(self.state.phrase_weight and self.state.phrases.evidence(ids))))

    def _ranker(self) -> Runtime | None:
        """The runtime whose flatbuffer holds this head: the version's, or a copy with the personal head
        written in (made on first use); ``None`` when the head cannot be written into this file."""
        if not self.head.on_host:
            return self.runtime
        if self._flat is None and not self._flat_failed:
            try:
                weights = self.head.weights
                self.runtime.release()  # the copy ranks from now on: the version's interpreter is idle,
                self._flat = self.runtime.with_head(weights)
                self.head.release()  # and so are the float heads
            except FlatHeadError:
                self._flat_failed = True
        return self._flat

    def _unsaturated(self, own: Scores, ceiling: float) -> bool:
        """Whether no word the interpreter ranks, and no personal word, reached the logits' ceiling."""
        if own.top_values is None or not own.top_values[0] < ceiling:
            return False
        slots = self._slot_ids
        return not len(slots) or bool(own.values[slots].max() < ceiling)

    def _personal(self, ids: np.ndarray, own: Scores) -> Scores:
        """Scores under the personal state, from the interpreter's under the personal head."""
        st = self.state
        phrases = bool(st.phrase_weight and st.phrases.evidence(ids))
        if not phrases and own.top_values is not None:
            if not len(self._slot_ids):  # the interpreter ranked under this head: nothing to add
                return own
            slot_logits = own.values[self._slot_ids]
            if slot_logits.max() < own.top_values[-1]:  # no personal word among the ranked ones
                return Scores(own.values, own.top_ids, own.top_values,
                              own.sum_exp + float(np.exp(slot_logits, dtype=np.float64).sum()))
        merged = self._merge(ids, own, phrases, self._parts or self._make_parts())
        return Scores(None, *merged, dense=lambda: self._dense(ids, own.values, phrases)) \
            if merged is not None else Scores(self._dense(ids, own.values, phrases))

    def features_scores(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, this head's logits and the version's for contexts ``[N, T]``: what learning reads."""
        feats, logits = self.runtime.features_logits(ids)
        return feats, self.head.logits(feats, logits), self.head.base_logits(feats, logits)

    def _dense(self, ids: np.ndarray, logits: np.ndarray, phrases: bool) -> np.ndarray:
        """Every id's score from the head's logits: as they are, or with the phrase memory the log of the mixture."""
        if not phrases:
            return logits
        st = self.state
        probs = mix(softmax(logits[None].astype(np.float32)), st.phrases, ids[None], st.phrase_weight,
                    st.phrase_gate)
        return np.log(np.maximum(probs[0], 1e-30))

    def _merge(self, ids: np.ndarray, own: Scores, phrases: bool,
               parts: _Parts) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The best words under the personal state, from the interpreter's ranking, the personal words
        and the phrase memory: ``(ids, log-probabilities up to one constant, the sum of their exps over
        the suggestable words)``, or ``None`` when the merge cannot settle a word.

        The same mixture as ``_dense``: ``(1 - share) softmax(logits) + share memory`` over every id,
        renormalized over the suggestable ones. The memory's likeliest words are scored first; then
        the interpreter's, best first, until the next one could not pass the ``RANKED``-th best
        even with the most the memory gives a word outside its list (``bound``); then the personal
        words that could. Every word left unscored is below that (the floor): words above it are settled.
        """
        total, top_ids, top_values = own.sum_exp, own.top_ids, own.top_values
        if top_ids is None or top_values is None or not 0.0 < total < math.inf:
            return None
        ex = np.exp(own.values[parts.extra], dtype=np.float64)
        slot_sum, banned_sum = (ex @ parts.extra_sums).tolist()
        suggestable = total + slot_sum
        everything = suggestable + banned_sum
        score: dict[int, float] = {}
        if phrases:
            if not parts.memory_ok:
                return None
            view = parts.views.get(tuple(ids[-(ORDER - 1):].tolist())) or self._view(ids, parts)
            lam, named, left = view.share, view.named, view.left
            a, bound, norm = (1 - lam) / everything, lam * view.bound, (1 - lam) * suggestable / everything + lam
            logits = own.values[view.top_ids].tolist()
            for (w, m), logit in zip(view.top, logits, strict=True):
                score[w] = a * math.exp(logit) + lam * m
        else:
            lam, named, left, a, bound, norm = 0.0, {}, 0.0, 1 / everything, 0.0, suggestable / everything
        unigram, bar = parts.unigram, 0.0
        values = top_values.tolist()
        floor = a * math.exp(values[-1]) + bound
        for i, (w, v) in enumerate(zip(top_ids.tolist(), values, strict=True)):
            q = a * math.exp(v)
            if i == RANKED:  # the bar: the RANKED-th best so far
                bar = sorted(score.values())[-RANKED]
            if q + bound < bar:  # this word and every one below it stay under the bar
                floor = q + bound
                break
            if w not in score:
                score[w] = q + lam * named.get(w, left * float(unigram[w]))
        slot_ex = ex[: len(self._slot_ids)]  # personal words that can reach the floor (outside the memory's top: bound)
        if len(slot_ex) and a * float(slot_ex.max()) + bound >= floor:
            for i in np.flatnonzero(a * slot_ex + bound >= floor).tolist():
                w = int(self._slot_ids[i])
                if w not in score:
                    score[w] = a * float(slot_ex[i]) + lam * named.get(w, left * float(unigram[w]))
        settled = sorted((-p, w) for w, p in score.items() if p >= floor)[:RANKED]
        if not settled:
            return None
        return (np.array([w for _, w in settled], np.int64), np.log([-p for p, _ in settled]), norm)

    def _view(self, ids: np.ndarray, parts: _Parts) -> _View:
        """The phrase memory's view of a context, kept for its ending (the last ``ENDINGS``)."""
        st, scratch = self.state, parts.scratch
        orders = list(st.phrases.orders(ids))
        for word_ids, weights, _ in orders:
            scratch[word_ids] += weights
        named_ids = np.unique(np.concatenate([o[0] for o in orders])) if orders else np.zeros(0, np.int64)
        left = np.float32(orders[-1][2] if orders else 1.0)
        probs = scratch[named_ids] + left * parts.unigram[named_ids]
        scratch[named_ids] = 0.0
        best_named = np.argsort(-probs, kind="stable")[: RANKED + 1]
        named = dict(zip(named_ids.tolist(), probs.tolist(), strict=True))
        others: list[tuple[int, float]] = []  # the likeliest words the n-grams do not name: the unigram's share alone
        for w, u in parts.by_unigram:
            if len(others) > RANKED:
                break
            if w not in named:
                others.append((w, float(left) * u))
        ranked = sorted([(w, named[w]) for w in named_ids[best_named].tolist()] + others, key=lambda t: -t[1])
        # Any word outside ``ranked`` is below the least one of its group there, so below ranked[RANKED].
        view = _View(context_share(st.phrases, ids, ranked[0][1] if ranked else 0.0, st.phrase_weight,
                                   st.phrase_gate),
                     named, float(left), ranked[:RANKED], np.array([w for w, _ in ranked[:RANKED]], np.int64),
                     ranked[RANKED][1] if len(ranked) > RANKED else 0.0)
        if len(parts.views) >= ENDINGS:
            parts.views.pop(next(iter(parts.views)))
        parts.views[tuple(ids[-(ORDER - 1):].tolist())] = view
        return view

    def _make_parts(self) -> _Parts:
        vocab, memory = self._vocab, self.state.phrases
        mask = vocab.suggestable_mask()
        slots, banned = self._slot_ids, vocab.unsuggestable_ids()
        extra = np.concatenate([slots, banned]).astype(np.int64)
        sums = np.zeros((len(extra), 2))
        sums[: len(slots), 0], sums[len(slots) :, 1] = 1.0, 1.0
        unigram = memory.unigram_probs()
        support = np.fromiter(memory.unigram, np.int64, len(memory.unigram))
        support = support[np.argsort(-unigram[support], kind="stable")]
        by_unigram = list(zip(support.tolist(), unigram[support].tolist(), strict=True))
        self._parts = _Parts(extra, sums, unigram, by_unigram, bool(mask[support].all()),
                             np.zeros(len(mask), np.float32), {})
        return self._parts
