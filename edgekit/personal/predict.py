"""Next-word scores with the personal state in play: the head's change, then the phrase memory.

With nothing personal in play the interpreter's outputs serve as they come,
its word ranking included: the keyboard's hot path. Otherwise a context's
scores differ from the interpreter's only at a few thousand ids (``_Sparse``:
the head's changed columns, the phrase memory's words, the personal words),
so ranking the next words works there and takes the other words from the
interpreter's own ranking: the same words and probabilities as a softmax
over the whole vocabulary, for a fraction of its cost. Every id's score is
made only when asked for (a completion of a typed prefix, or a ranking the
sparse view cannot settle).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..blas import blas_threads
from ..head import Head
from ..runtime import Runtime, Scores
from ..vocab import Vocabulary
from .gate import context_share, mix
from .phrases import ORDER
from .state import PersonalState
from .train import softmax

ENDINGS = 64  # context endings whose phrase-memory view is kept (a keyboard's recent contexts)


class _Sparse(NamedTuple):
    """Where a personal state's scores can differ from the interpreter's ranking: gathered once per state."""

    cols: np.ndarray  # [C] the ids whose logit the head's change moves (sorted)
    dw: np.ndarray  # [F, C] that change
    db: np.ndarray  # [C]
    col_word: np.ndarray  # [C] 1.0 at a model word (inside the interpreter's sum_exp), else 0
    col_slot: np.ndarray  # [C] 1.0 at an assigned personal word
    col_banned: np.ndarray  # [C] 1.0 at an id never suggested
    col_ok: np.ndarray  # [C] bool: suggestable
    extra: np.ndarray  # outside cols: assigned personal words (the interpreter ranks none), then ids never
    # suggested (in a softmax's total only)
    slots: np.ndarray  # the personal words: the start of ``extra``
    extra_sums: np.ndarray  # [E, 2] 1.0 where ``extra`` is a personal word (column 0) or never suggested (1)
    moved: np.ndarray  # [V] bool: in cols
    fixed: np.ndarray  # [V] bool: in cols, a personal word, or never suggested (candidates, or never ones)
    flag: np.ndarray  # [V] bool, all False: marks a few ids for one call
    frequent: np.ndarray  # the phrase memory's likeliest words by unigram probability, best first
    rest_unigram: float  # the unigram probability of the likeliest word after them (0: none)
    memory_ok: bool  # every word the memory knows can be suggested (so its mass there is 1)
    unigram: np.ndarray  # [V] float32: the memory's unigram probabilities
    scratch: np.ndarray  # [V] float32 zeros: one ending's n-gram weights while they are read
    endings: dict[tuple[int, ...], _Ending]  # the phrase memory's view of the contexts met lately, by ending


class _Ending(NamedTuple):
    """What the phrase memory says after one context ending (its last ``ORDER - 1`` words: all it reads)."""

    named: np.ndarray  # the words its n-grams name there (sorted)
    weights: np.ndarray  # float32: what its n-grams give them (``PhraseMemory.probs`` adds the unigram's share)
    more: np.ndarray  # those and its likeliest words overall, less the ids that are candidates anyway
    share: float  # its share of the mixture (``gate.context_share``)
    left: np.float32  # the scale left for the unigram: a word gets ``left * unigram`` on top of its weight


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
        self._sparse: _Sparse | None = None

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
        feats, base = self.runtime.invoke_features(ids[None])
        st = self.state
        phrases = bool(st.phrase_weight and st.phrases.evidence(ids))
        ranked = self._ranked(ids, feats, base, phrases)
        return Scores(None, *ranked, dense=lambda: self._dense(ids, feats, base.values, phrases)) \
            if ranked is not None else Scores(self._dense(ids, feats, base.values, phrases))

    def features_scores(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, this head's logits and the version's for contexts ``[N, T]``: what learning reads."""
        feats, logits = self.runtime.features_logits(ids)
        return feats, self.head.logits(feats, logits), self.head.base_logits(feats, logits)

    def _dense(self, ids: np.ndarray, feats: np.ndarray, logits: np.ndarray, phrases: bool) -> np.ndarray:
        """Every id's score: the head's logits, or with the phrase memory the log of the mixture."""
        personal, st = self.head.logits(feats[None], logits[None]), self.state
        if not phrases:  # no phrase to mix in: logits rank as they are
            return personal[0]
        probs = mix(softmax(personal.astype(np.float32)), st.phrases, ids[None], st.phrase_weight, st.phrase_gate)
        return np.log(np.maximum(probs[0], 1e-30))

    def _ranked(self, ids: np.ndarray, feats: np.ndarray, base: Scores,
                phrases: bool) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The best words under the personal state, from the few ids where it differs and the
        interpreter's ranking: ``(ids, log-probabilities up to one constant, the sum of their exps
        over the suggestable words)``.

        The same mixture as ``_dense``: ``(1 - share) softmax(logits) + share memory`` over every id,
        renormalized over the suggestable ones. Candidates: the interpreter's ranked words, the
        columns the head moved, the personal words, and with the phrase memory the words its
        n-grams name for this context and its likeliest words overall. Any other word keeps its
        interpreter logit (at most the last ranked one) and its memory share is at most the
        unigram of the likeliest word left out: candidates above that bound are settled.
        ``None`` when the interpreter gave no ranking or fewer than one candidate is settled.
        """
        total, top_ids, top_values = base.sum_exp, base.top_ids, base.top_values
        if top_ids is None or top_values is None or not 0.0 < total < math.inf:
            return None
        sp = self._sparse or self._make_sparse()
        logits, f64 = base.values, np.float64
        ranked_ids, ranked = top_ids, np.exp(top_values, dtype=f64)
        extra = np.exp(logits[sp.extra], dtype=f64)
        slot_sum, banned_sum = extra @ sp.extra_sums
        parts_ids, parts = [sp.slots], [extra[: len(sp.slots)]]
        suggestable, banned = total + float(slot_sum), float(banned_sum)
        if len(sp.cols):
            before = logits[sp.cols]
            e_cols = np.exp(before + feats @ sp.dw + sp.db, dtype=f64)
            moved = (e_cols - np.exp(before, dtype=f64)) @ sp.col_word
            if not total + moved > 1e-6 * total:  # the change took nearly all the interpreter's mass
                return None
            suggestable += float(moved + e_cols @ sp.col_slot)
            banned += float(e_cols @ sp.col_banned)
            keep = ~sp.moved[top_ids]
            ranked_ids, ranked = top_ids[keep], ranked[keep]
            parts_ids.append(sp.cols[sp.col_ok])
            parts.append(e_cols[sp.col_ok])
        everything = suggestable + banned
        floor = math.exp(float(top_values[-1])) / everything
        norm = suggestable / everything
        if phrases:
            if not sp.memory_ok:
                return None
            end = sp.endings.get(tuple(ids[-(ORDER - 1):].tolist())) or self._ending(ids)
            lam = end.share
            sp.flag[top_ids] = True  # the interpreter's words are candidates already
            more = end.more[~sp.flag[end.more]]
            sp.flag[top_ids] = False
            parts_ids.append(more)
            parts.append(np.exp(logits[more], dtype=f64))
            cand_ids = np.concatenate([ranked_ids, *parts_ids])
            cand = np.concatenate([ranked, *parts])
            memory = end.left * sp.unigram[cand_ids]  # PhraseMemory.probs at the candidates, in its float32
            sp.scratch[end.named] = end.weights
            memory += sp.scratch[cand_ids]
            sp.scratch[end.named] = 0.0
            cand *= (1 - lam) / everything
            cand += lam * memory
            floor = (1 - lam) * floor + lam * float(end.left) * sp.rest_unigram
            norm = (1 - lam) * norm + lam
        else:
            cand_ids = np.concatenate([ranked_ids, *parts_ids])
            cand = np.concatenate([ranked, *parts])
            cand /= everything
        width, neg = len(top_ids), -cand
        if len(neg) > width:
            part = np.argpartition(neg, width - 1)[:width]
            neg, cand_ids = neg[part], cand_ids[part]
        order = np.lexsort((cand_ids, neg))  # ties: the lower id first, as the interpreter's top-k does
        cand_ids, neg = cand_ids[order], neg[order]
        settled = int(np.searchsorted(neg, -floor, side="right"))
        if not settled:
            return None
        return cand_ids[:settled], np.log(-neg[:settled]), norm

    def _ending(self, ids: np.ndarray) -> _Ending:
        """The phrase memory's view of a context, kept for its ending (the last ``ENDINGS``).

        The same float32 numbers as ``PhraseMemory.probs``: each order's weights added, longest first,
        then ``left * unigram``; its best probability is a named word's or, when that is lower, the
        likeliest word's by the unigram alone (if that word is named, its own is higher).
        """
        sp, st = self._sparse, self.state
        assert sp is not None
        orders = list(st.phrases.orders(ids))
        for word_ids, weights, _ in orders:
            sp.scratch[word_ids] += weights
        named = np.unique(np.concatenate([o[0] for o in orders])) if orders else np.zeros(0, np.int64)
        weights = sp.scratch[named]  # a copy (fancy indexing)
        sp.scratch[named] = 0.0
        left = np.float32(orders[-1][2] if orders else 1.0)
        best = max(float((weights + left * sp.unigram[named]).max(initial=0.0)),
                   float(left * sp.unigram[sp.frequent[:1]].max(initial=0.0)))
        more = np.unique(np.concatenate([named, sp.frequent]))
        end = _Ending(named, weights, more[~sp.fixed[more]],
                      context_share(st.phrases, ids, best, st.phrase_weight, st.phrase_gate), left)
        if len(sp.endings) >= ENDINGS:
            sp.endings.pop(next(iter(sp.endings)))
        sp.endings[tuple(ids[-(ORDER - 1):].tolist())] = end
        return end

    def _make_sparse(self) -> _Sparse:
        vocab, memory = self._vocab, self.state.phrases
        if self.head.on_host:
            cols, dw, db = self.head.change()
        else:
            cols, dw, db = np.zeros(0, np.int64), np.zeros((self.head.base[0].shape[0], 0), np.float32), \
                np.zeros(0, np.float32)
        mask, (start, end) = vocab.suggestable_mask(), vocab.word_ids
        slot_ids = np.array(sorted(vocab.personal_words.values()), np.int64)
        moved = np.zeros(len(mask), bool)
        moved[cols] = True
        fixed = moved | ~mask
        fixed[slot_ids] = True
        own = (cols >= start) & (cols < end)
        unigram = memory.unigram_probs()
        support = np.fromiter(memory.unigram, np.int64, len(memory.unigram))
        by_count = support[np.argsort(-unigram[support], kind="stable")]
        width = self.runtime.max_k
        slots, banned = slot_ids[~moved[slot_ids]], np.setdiff1d(vocab.unsuggestable_ids(), cols)
        extra = np.concatenate([slots, banned]).astype(np.int64)
        sums = np.zeros((len(extra), 2))
        sums[: len(slots), 0], sums[len(slots) :, 1] = 1.0, 1.0
        self._sparse = _Sparse(
            cols, dw, db, own.astype(np.float64), (mask[cols] & ~own).astype(np.float64),
            (~mask[cols]).astype(np.float64), mask[cols], extra, extra[: len(slots)], sums, moved, fixed,
            np.zeros(len(mask), bool),
            by_count[:width], float(unigram[by_count[width]]) if len(by_count) > width else 0.0,
            bool(mask[support].all()), unigram, np.zeros(len(mask), np.float32), {})
        return self._sparse
