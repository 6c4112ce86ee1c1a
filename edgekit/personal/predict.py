"""Next-word scores with the personal state in play: the head's change, then the phrase memory.

The personal head runs inside the interpreter: a copy of the flatbuffer
with the head written in and its word ranking widened to the personal words
(``Runtime.with_head``), so the interpreter ranks every suggestable word
under it at the version's speed. What the interpreter cannot see, the phrase
memory, is merged on the host with its ranking (``_merge``): only the few
words that can still reach the top are scored, in plain Python, and the
result is the same words and probabilities as a softmax over the whole
vocabulary mixed with the memory. Every id's score is made only when asked
for (a completion of a typed prefix, or a ranking the merge cannot settle).

A keyboard waits for this after every space, so the merge reads what it
can from the memory's view of the context's ending (``_View``, kept per
ending and scaled by the memory's share there) and does a few dozen float
operations per context beyond the interpreter's.

Where a personal int8 head would saturate the file's logits, or cannot be
written into the file, the version's logits plus the head's change are
computed for every id on the host instead (``_dense``): exact, slower, rare.
"""
from __future__ import annotations

import math
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from ..blas import blas_threads
from ..flatbuffer_head import FlatHeadError
from ..head import Head
from ..runtime import Runtime, Scores
from ..vocab import Vocabulary
from .gate import context_share, mix
from .phrases import ORDER
from .rows import Scored
from .state import PersonalState
from .train import softmax

RANKED = 4  # words a personalized context ranks unless asked for more: a keyboard shows three, one to spare
SPARE = 2  # words the personal copy ranks beyond those a merge settles (its top-k: narrower runs faster)
RANKING_WIDTH = RANKED + SPARE  # what the personal copy ranks unless more words are asked for
MEMORY_TOP = 8  # the phrase memory's likeliest words kept per ending (a bound stands for the rest)
_SECOND = itemgetter(1)
ENDINGS = 4096  # context endings whose phrase-memory view is kept (a user's common word pairs)


class _View(NamedTuple):
    """What the phrase memory adds after one context ending (its last ``ORDER - 1`` words: all it reads),
    already times its share of the mixture.

    The same float32 numbers as ``PhraseMemory.probs``: each order's weights,
    then ``left * unigram``.
    """

    share: float  # its share of the mixture (``gate.context_share``); 0 where it has no evidence
    named: dict[int, float]  # share x the probability of each word its n-grams name there
    left: float  # share x any other word's probability, per unit of its unigram probability
    top: list[tuple[int, float]]  # its ``MEMORY_TOP`` likeliest words and share x their probabilities, best first
    bound: float  # share x the probability no word outside ``top`` reaches


_SILENT = _View(0.0, {}, 0.0, [], 0.0)  # an ending the memory has nothing to say after


class _Parts(NamedTuple):
    """What merging reads of a personal state, gathered once per state."""

    banned: slice | np.ndarray  # the ids never suggested (specials, free slots): in the softmax's total only
    unigram: dict[int, float]  # the phrase memory's unigram probability of each word it knows
    by_unigram: list[tuple[int, float]]  # the memory's words and unigram probabilities, likeliest first
    memory_ok: bool  # every word the memory knows can be suggested (so its mass there is 1)
    scratch: np.ndarray  # [V] float32 zeros: one ending's n-gram weights while they are read
    views: dict[bytes, _View]  # the phrase memory's view of the endings met lately


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
        self._ceiling = math.inf  # where the copy's logits saturate
        self._flat_width = 0  # the words the copy ranks (asked for: a file may rank fewer)
        slots = self._slot_ids = np.array(sorted(self._vocab.personal_words.values()), np.int64)
        # Free slots below the last personal word (a forgotten word's) are in the ranker's ranking too.
        self._holes = np.setdiff1d(np.arange(self._vocab.first_slot, slots[-1] + 1), slots) if len(slots) else slots
        self._free = frozenset(self._holes.tolist())

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

    def scores(self, ids: np.ndarray, ranked: int = RANKED) -> Scores:
        """One context's (``[T]``) log-scale scores, for ranking: at least its ``ranked`` best words when
        the interpreter ranks (a merge with the personal state ranks no more than asked)."""
        if self.plain:
            return self.runtime.invoke(ids[None])
        ranker = self._flat if self._flat is not None and ranked + SPARE <= self._flat_width else self._ranker(ranked)
        if ranker is not None:
            scores = self._personal(ids, ranker.invoke(ids[None]), self._parts or self._make_parts(), ranked)
            if scores is not None:
                return scores
        feats, base = self.runtime.invoke_features(ids[None])  # the head's change on the host, every id
        logits = self.head.logits(feats[None], base.values[None])[0]
        return Scores(self._dense(ids, logits, bool(self.state.phrase_weight and self.state.phrases.evidence(ids))))

    def _ranker(self, ranked: int = RANKED) -> Runtime | None:
        """The personal copy of the flatbuffer (made on first use): the head written in where it differs
        from the version's, the personal words in its ranking, and a top-k ``RANKING_WIDTH`` wide, or
        ``SPARE`` more than the ``ranked`` words asked for (a merge reads a few words beyond those it
        settles, and a narrower top-k runs faster; an app asking for more words makes it again, wider,
        once); ``None`` when this file cannot have one."""
        width = max(RANKING_WIDTH, ranked + SPARE)
        if self._flat_failed or (self._flat is not None and width <= self._flat_width):
            return self._flat
        try:
            on_host = self.head.on_host
            weights = self.head.weights if on_host else None
            self._flat = None  # a narrower copy is freed before the wider one is made
            self.runtime.release()  # the copy ranks from now on: the version's interpreter is idle,
            flat = self.runtime.with_head(weights, int(self._slot_ids[-1]) + 1 if len(self._slot_ids) else None,
                                          width)
            self.head.release()  # and so are the float heads
            # The version's own logits saturate where its base suggestions do: only a personal head is checked.
            self._ceiling = flat.logit_ceiling if on_host else math.inf
            self._flat, self._flat_width = flat, width
        except FlatHeadError:
            self._flat_failed = True
        return self._flat

    def _personal(self, ids: np.ndarray, own: Scores, parts: _Parts, ranked: int) -> Scores | None:
        """Scores under the personal state, from the interpreter's under the personal head; ``None`` where
        its ranking is missing or its best word reached the logits' ceiling."""
        top_ids, top_values, values = own.top_ids, own.top_values, own.values
        if top_ids is None or top_values is None or not top_values[0] < self._ceiling:
            return None
        if self._free:  # free slots in the ranking: out of the total and the words
            kept = [(w, v) for w, v in zip(top_ids, top_values, strict=True) if w not in self._free]
            own = Scores(values, [w for w, _ in kept], [v for _, v in kept],
                         own.sum_exp - float(np.exp(values[self._holes], dtype=np.float64).sum()))
        view = parts.views.get(ids[1 - ORDER :].tobytes()) or self._view(ids, parts)
        if not view.share:  # nothing to merge: the interpreter ranked
            return own
        merged = self._merge(own, view, parts, ranked) if parts.memory_ok else None
        return Scores(None, *merged, dense=lambda: self._dense(ids, values, True)) \
            if merged is not None else Scores(self._dense(ids, values, True))

    def features_scores(self, ids: np.ndarray) -> Scored:
        """Features, this head's logits (as the interpreter's and the change) and the version's for
        contexts ``[N, T]``: what learning reads."""
        feats, logits = self.runtime.features_logits(ids)
        return Scored(feats, logits, self.head.base_logits(feats, logits), self.head.logits_change(feats))

    def _dense(self, ids: np.ndarray, logits: np.ndarray, phrases: bool) -> np.ndarray:
        """Every id's score from the head's logits: as they are, or with the phrase memory the log of the mixture."""
        if not phrases:
            return logits
        st = self.state
        probs = mix(softmax(logits[None].astype(np.float32)), st.phrases, ids[None], st.phrase_weight,
                    st.phrase_gate)
        return np.log(np.maximum(probs[0], 1e-30))

    def _merge(self, own: Scores, view: _View, parts: _Parts,
               ranked: int) -> tuple[list[int], list[float], float] | None:
        """The ``ranked`` best words under the personal state, from the interpreter's ranking and the
        memory's view of the context: ``(ids, log-probabilities up to one constant, the sum of their
        exps over the suggestable words)``, or ``None`` when the merge cannot settle a word.

        The same mixture as ``_dense``: ``(1 - share) softmax(logits) + share memory`` over every id,
        renormalized over the suggestable ones. A threshold merge (Fagin's) that scores as few words
        as it can: the interpreter's first ``ranked``, then each of the memory's likeliest words and
        each further interpreter word only while what it could score at most (its own part plus the
        most the other list's next word adds) reaches the ``ranked``-th best so far. A word neither
        list has reached scores at most the next of each (the floor): words above it are settled.
        """
        suggestable, top_ids, top_values, values = own.sum_exp, own.top_ids, own.top_values, own.values
        if not top_ids or top_values is None or not 0.0 < suggestable < math.inf:
            return None
        lam, named, left, memory, unigram, exp = view.share, view.named, view.left, view.top, parts.unigram, math.exp
        try:
            everything = suggestable + sum(map(exp, values[parts.banned].tolist()))  # the softmax's total
        except OverflowError:  # a never-suggested id's logit past exp's range: the full softmax copes
            return None
        a = (1 - lam) / everything
        # Plain loops, not comprehensions: each comprehension is a function call (Python 3.11), and this
        # runs after every space.
        score: dict[int, float] = {}
        n, i = len(top_ids), 0
        while i < ranked and i < n:
            w = top_ids[i]
            score[w] = a * exp(top_values[i]) + named.get(w, left * unigram.get(w, 0.0))
            i += 1
        least = min(score.values()) if i == ranked else 0.0  # the ranked-th best so far
        below = a * exp(top_values[min(i, n - 1)])  # the most an interpreter word not yet read adds
        held = view.bound  # the most a memory word not yet read adds
        for u, m in memory:
            if u in score:
                continue
            if m + below < least:
                held = m
                break
            score[u] = su = a * exp(values.item(u)) + m
            if su > least and len(score) >= ranked:
                least = sorted(score.values())[-ranked]
        qw = below
        while i < n:
            w = top_ids[i]
            qw = a * exp(top_values[i])
            if qw + held < least:
                break
            if w not in score:
                score[w] = sw = qw + named.get(w, left * unigram.get(w, 0.0))
                if sw > least and len(score) >= ranked:
                    least = sorted(score.values())[-ranked]
            i += 1
        floor = qw + held  # no word left unread scores more: words above it are settled (one at it may tie)
        words: list[int] = []
        logs: list[float] = []
        for w, s in sorted(sorted(score.items()), key=_SECOND, reverse=True):  # ties: the lower id first
            if len(words) == ranked or s <= floor:
                break
            words.append(w)
            logs.append(math.log(s))
        if not words:
            return None
        return words, logs, (1 - lam) * suggestable / everything + lam

    def _view(self, ids: np.ndarray, parts: _Parts) -> _View:
        """The phrase memory's view of a context, kept for its ending (the last ``ENDINGS``)."""
        st, scratch, unigram = self.state, parts.scratch, self.state.phrases.unigram_probs()
        view = _SILENT
        if st.phrase_weight and st.phrases.evidence(ids):
            orders = list(st.phrases.orders(ids))
            for word_ids, weights, _ in orders:
                scratch[word_ids] += weights
            named_ids = np.unique(np.concatenate([o[0] for o in orders]))
            left = np.float32(orders[-1][2])
            probs = scratch[named_ids] + left * unigram[named_ids]
            scratch[named_ids] = 0.0
            best_named = np.argsort(-probs, kind="stable")[: MEMORY_TOP + 1]
            named = dict(zip(named_ids.tolist(), probs.tolist(), strict=True))
            others: list[tuple[int, float]] = []  # the likeliest words the n-grams do not name: the unigram's share
            for w, u in parts.by_unigram:
                if len(others) > MEMORY_TOP:
                    break
                if w not in named:
                    others.append((w, float(left) * u))
            ranked = sorted([(w, named[w]) for w in named_ids[best_named].tolist()] + others, key=lambda t: -t[1])
            # Any word outside ``ranked`` is below the least one of its group there, so below ranked[MEMORY_TOP].
            lam = context_share(st.phrases, ids, ranked[0][1], st.phrase_weight, st.phrase_gate)
            view = _View(lam, {w: lam * p for w, p in named.items()}, lam * float(left),
                         [(w, lam * p) for w, p in ranked[:MEMORY_TOP]],
                         lam * ranked[MEMORY_TOP][1] if len(ranked) > MEMORY_TOP else 0.0)
        if len(parts.views) >= ENDINGS:
            parts.views.pop(next(iter(parts.views)))
        parts.views[ids[1 - ORDER :].tobytes()] = view
        return view

    def _make_parts(self) -> _Parts:
        vocab, memory = self._vocab, self.state.phrases
        mask = vocab.suggestable_mask()
        unigram = memory.unigram_probs()
        support = np.fromiter(memory.unigram, np.int64, len(memory.unigram))
        support = support[np.argsort(-unigram[support], kind="stable")]
        by_unigram = list(zip(support.tolist(), unigram[support].tolist(), strict=True))
        self._parts = _Parts(_as_slice(vocab.unsuggestable_ids()),
                             dict(by_unigram), by_unigram, bool(mask[support].all()),
                             np.zeros(len(mask), np.float32), {})
        return self._parts


def _as_slice(ids: np.ndarray) -> slice | np.ndarray:
    """``ids`` (ascending) as a slice where they are one run: reading a run is cheaper than gathering."""
    return slice(int(ids[0]), int(ids[-1]) + 1) if len(ids) and ids[-1] - ids[0] == len(ids) - 1 else ids
