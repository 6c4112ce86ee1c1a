"""Suggestions from scores: the next words, or completions of the word being typed.

A keyboard asks after every keystroke. While a word is typed its context
does not change, so each keystroke after the first reuses that context's
scores (a small cache). With nothing personal in play the scores are the
interpreter's logits and word ranking as they come: the next words and their
probabilities are read off in plain Python, with no softmax over the
vocabulary here.

Words on the blocked list (by default ``blocklist.PROFANITY``) are never
offered, as next words or as completions; their probability mass stays in
the model's distribution, so the other words' probabilities do not change.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple

import numpy as np

from .blocklist import PROFANITY
from .metrics import top_k
from .runtime import Scores
from .tokenizer import Tokenizer
from .vocab import Vocabulary

SCORES_CACHE = 8  # contexts whose scores are kept (typing a word reuses one)
MAX_SUGGEST_CHARS = 4096  # only the end of a long text can matter to a 16-word context


class Suggestion(NamedTuple):
    word: str
    probability: float


class Suggester:
    """Ranks the words a ``score`` function gives for a text's context (one context ``[T]`` and how many
    words it should rank at least -> ``Scores``)."""

    def __init__(self, tokenizer: Tokenizer, vocab: Vocabulary, context_length: int,
                 score: Callable[[np.ndarray, int], Scores]):
        self._tokenizer, self._vocab, self._context_length, self._score = tokenizer, vocab, context_length, score
        self._cache: dict[bytes, Scores] = {}
        self.blocked_words = PROFANITY

    @property
    def blocked_words(self) -> frozenset[str]:
        """Words never suggested (lower case); empty turns the filter off."""
        return self._blocked_words

    @blocked_words.setter
    def blocked_words(self, words: Iterable[str]) -> None:
        if isinstance(words, str):
            raise TypeError("blocked_words takes a collection of words, not one str")
        self._blocked_words = frozenset(w.lower() for w in words)
        self._block_ids()

    def clear(self) -> None:
        """Forget cached scores: the model or the personal state changed."""
        self._cache = {}

    def vocabulary_changed(self) -> None:
        """The personal words changed (a new state): forget cached scores and find the blocked words again."""
        self.clear()
        self._block_ids()

    def _block_ids(self) -> None:
        """The blocked words' ids (personal words included), and the mask of the ids that may be offered."""
        self._blocked = frozenset(self._vocab.encode(self._blocked_words)) - {self._vocab.unk}
        self._offered = self._vocab.suggestable_mask().copy()
        self._offered[list(self._blocked)] = False

    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """The ``k`` likeliest next words, or completions of a partly typed word.

        Probabilities are conditional on the typed prefix (they sum to 1 over
        all completions). Case follows the user: "Tomo" -> "Tomorrow".
        """
        if not isinstance(text, str):
            raise TypeError(f"suggest() needs text (str), got {type(text).__name__}")
        context, prefix = self._tokenizer.split_partial(text[-MAX_SUGGEST_CHARS:], keep=self._context_length)
        if k <= 0:
            return []
        scores = self._scores(self._vocab.context_ids(context, self._context_length), k)
        if not prefix:
            ids, probs = self._rank_next(scores, k)
            return list(map(Suggestion, map(self._vocab.word, ids), probs))
        ids, probs = self._rank_completions(scores.values, prefix, k)
        typed = text.rstrip()[-len(prefix):]
        return [Suggestion(match_case(self._vocab.word(i), typed), p) for i, p in zip(ids, probs, strict=True)]

    def _scores(self, ids: np.ndarray, k: int) -> Scores:
        """The context's scores, ranking ``k`` words and one to spare for a blocked one (from the cache when
        it has them: a cached ranking shorter than a later ``k`` is extended from every id's score)."""
        key = ids.tobytes()
        scores = self._cache.get(key)
        if scores is None:
            scores = self._score(ids, k + 1)
            if len(self._cache) >= SCORES_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = scores
        return scores

    def _rank_next(self, scores: Scores, k: int) -> tuple[list[int], list[float]]:
        """Top ``k`` words over the whole vocabulary, skipping specials and free slots.

        The interpreter ranks the words itself when the file can; its outputs
        are read off in plain Python: a few numbers do not pay for numpy's
        calls. Otherwise (older files, a personal state, ``k`` above its
        width, an overflowed sum) the scores are partitioned here.
        Probabilities are a softmax over the words only.
        """
        total = scores.sum_exp
        if scores.top_ids is not None and scores.top_values is not None and 0.0 < total < math.inf:
            ids, top = scores.top_ids[:k], scores.top_values[:k]
            if self._blocked.isdisjoint(ids):  # the usual case: nothing to leave out
                if len(ids) == k:
                    return ids, [math.exp(v) / total for v in top]
            else:
                ranked = [(i, v) for i, v in zip(scores.top_ids, scores.top_values, strict=True)
                          if i not in self._blocked][:k]
                if len(ranked) == k:
                    return [i for i, _ in ranked], [math.exp(v) / total for _, v in ranked]
        values, banned = scores.values, self._vocab.unsuggestable_ids()
        skip = len(banned) + len(self._blocked)  # ids never offered: the pool holds k offered ones
        pool = np.argpartition(values, len(values) - (k + skip))[-(k + skip):]
        pool = pool[np.lexsort((pool, -values[pool]))]  # ties: the lower id first, as the interpreter's top-k does
        best = pool[self._offered[pool]][:k]
        if not len(best):
            return [], []
        weights = np.exp(values - values[best[0]])
        return best.tolist(), (weights[best] / (weights.sum() - weights[banned].sum())).tolist()

    def _rank_completions(self, scores: np.ndarray, prefix: str, k: int) -> tuple[list[int], list[float]]:
        """Top ``k`` words starting with ``prefix``; probabilities sum to 1 over all completions."""
        candidates = self._vocab.prefix_ids(prefix)
        if self._blocked:
            candidates = candidates[self._offered[candidates]]
        if not len(candidates):
            return [], []
        best = top_k(scores, candidates, k)
        peak = scores[best[0]]
        return best.tolist(), (np.exp(scores[best] - peak) / np.exp(scores[candidates] - peak).sum()).tolist()


def match_case(word: str, typed: str) -> str:
    """The user's case on a suggested word: "Tomo" -> "Tomorrow", "TOMO" -> "TOMORROW"."""
    if typed[:1].isupper():
        return word.upper() if len(typed) > 1 and typed.isupper() else word[:1].upper() + word[1:]
    return word
