"""Personal phrase memory: a small n-gram model of the user's own text.

People repeat their own phrases ("on my way", "love you x"); a last-layer
update learns that slowly, an n-gram cache learns it from one example. The
memory is interpolated with the neural probabilities, weighted by how much
evidence it has for the current context. It lives in the personal state file
and never leaves the device.

Probabilities use interpolated Witten-Bell smoothing (Witten & Bell 1991)
over orders 1..3, backing off to the user's unigram distribution.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

ORDER = 3  # trigram: two words of context
Context = Sequence[int] | np.ndarray  # token ids, oldest first
MAX_COUNT = 1 << 40  # times one phrase was seen: far beyond any user, small enough that sums stay exact


class PhraseMemory:
    """Counts of ``(previous words) -> next word`` over token ids."""

    def __init__(self, vocab_size: int, skip_ids: Iterable[int] = ()):
        self.vocab_size = vocab_size
        self.skip = frozenset(skip_ids)  # ids never predicted (unk, specials)
        self.unigram: Counter[int] = Counter()
        self.ngrams: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
        # Running sums, so a suggestion does not add up counters: tokens learned,
        # and how often each n-gram context was followed by anything.
        self._tokens = 0
        self._followed: Counter[tuple[int, ...]] = Counter()
        self._unigram_probs: np.ndarray | None = None
        self._cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, int]] = {}
        self._endings: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, float]] = {}  # ``_sparse``

    def __len__(self) -> int:
        return self._tokens

    def add(self, ids: Sequence[int]) -> None:
        """Learn one line of ids (starting with ``<s>``)."""
        for i in range(1, len(ids)):
            w = ids[i]
            if w in self.skip:
                continue
            self._count(w)
            for n in range(1, ORDER):
                if i - n >= 0:
                    self._count(w, tuple(ids[i - n : i]))
        self._unigram_probs = None
        self._cache, self._endings = {}, {}

    def _count(self, word: int, context: tuple[int, ...] = (), times: int = 1) -> None:
        if context:
            self.ngrams[context][word] += times
            self._followed[context] += times
        else:
            self.unigram[word] += times
            self._tokens += times

    def evidence(self, context: Context) -> int:
        """How often the last word of ``context`` was seen followed by anything."""
        return self._followed[(int(context[-1]),)]

    def followed(self, context: Context) -> int:
        """How often ``context`` (one or two word ids) was seen followed by anything."""
        return self._followed.get(tuple(int(t) for t in context), 0)

    def probs(self, context: Context) -> np.ndarray:
        """p(next | context) over the whole vocabulary ([V] float32, sums to 1 when any text was learned)."""
        p = np.zeros(self.vocab_size, dtype=np.float32)
        self.add_probs(context, 1.0, p)
        return p

    def add_probs(self, context: Context, scale: float, out: np.ndarray) -> None:
        """``out += scale * probs(context)``, touching the whole vocabulary once.

        Interpolation nests, ``p_n = f_n * p_(n-1) + seen_n``, so it unrolls
        from the longest context down: each order's seen words get the
        product of the back-off factors above them, and the unigram gets all.
        """
        left = scale  # the unigram gets what the shortest seen order leaves
        for ids, weights, rest in self.orders(context, scale):
            out[ids] += weights
            left = rest
        out += np.float32(left) * self.unigram_probs()

    def probs_columns(self, contexts: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``probs`` of each row of ``contexts [N, T]`` at ``columns`` only: ``[N, len(columns)]``.

        They depend on the last ``ORDER - 1`` words only: each distinct ending is looked up once
        (``_sparse``, kept until the memory learns more), then every ending's unigram share and
        n-gram weights are laid out at once.
        """
        where = np.full(self.vocab_size, -1, np.int64)
        where[columns] = np.arange(len(columns))
        endings, row_of = np.unique(np.asarray(contexts)[:, -(ORDER - 1):], axis=0, return_inverse=True)
        parts = [self._sparse(tuple(c)) for c in endings.tolist()]
        left = np.array([p[2] for p in parts], np.float32)
        out = left[:, None] * self.unigram_probs()[columns][None, :]
        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        weights = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
        rows = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
        at = where[ids]
        keep = at >= 0
        np.add.at(out, (rows[keep], at[keep]), weights[keep])
        return out[row_of.reshape(-1)]

    def _sparse(self, ending: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float]:
        """``probs(ending)`` less the unigram's share: (ids, weights, the unigram's scale), kept until the
        memory learns more."""
        got = self._endings.get(ending)
        if got is None:
            parts = list(self.orders(ending, 1.0))
            left = parts[-1][2] if parts else 1.0
            got = (np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64),
                   np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32), left)
            self._endings[ending] = got
        return got

    def orders(self, context: Context, scale: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """Per seen context order, longest first: (next-word ids, their weights, the scale left for the rest)."""
        seen: list[tuple[int, ...]] = []
        for n in range(1, min(ORDER, len(context) + 1)):
            key = tuple(int(t) for t in context[-n:])
            if key not in self._followed:
                break
            seen.append(key)
        for key in reversed(seen):
            ids, counts, total = self._arrays(key)
            types = len(ids)
            weights = counts * np.float32(scale / (total + types))
            scale *= types / (total + types)
            yield ids, weights, scale

    def _arrays(self, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
        """A context's next words and counts as arrays (cached until the memory learns more)."""
        got = self._cache.get(key)
        if got is None:
            counts = self.ngrams[key]
            got = (np.fromiter(counts.keys(), np.int64, len(counts)),
                   np.fromiter(counts.values(), np.float32, len(counts)), self._followed[key])
            self._cache[key] = got
        return got

    def unigram_probs(self) -> np.ndarray:
        """p(word) over the whole vocabulary ``[V]`` (cached until the memory learns more)."""
        if self._unigram_probs is None:
            p = np.zeros(self.vocab_size, dtype=np.float32)
            if self._tokens:
                ids = np.fromiter(self.unigram.keys(), dtype=np.int64)
                p[ids] = np.fromiter(self.unigram.values(), dtype=np.float32) / self._tokens
            self._unigram_probs = p
        return self._unigram_probs

    @property
    def n_phrases(self) -> int:
        """Entries (context, next word) held: word pairs and triples."""
        return sum(len(c) for c in self.ngrams.values())

    def phrases_with(self, word: int) -> int:
        """How many entries hold ``word``, in the context or as the next word."""
        return sum(len(c) if word in ctx else int(word in c) for ctx, c in self.ngrams.items())

    def without(self, word: int) -> PhraseMemory:
        """A copy that never saw ``word``: its count and every entry holding it are gone."""
        mem = PhraseMemory(self.vocab_size, self.skip)
        for w, c in self.unigram.items():
            if w != word:
                mem._count(w, times=c)
        for ctx, counts in self.ngrams.items():
            if word not in ctx:
                for w, c in counts.items():
                    if w != word:
                        mem._count(w, ctx, c)
        return mem

    def copy(self) -> PhraseMemory:
        """An independent memory with the same counts (learning adds to a copy until it is adopted)."""
        mem = PhraseMemory(self.vocab_size, self.skip)
        mem.unigram, mem._tokens = Counter(self.unigram), self._tokens
        mem.ngrams.update((ctx, counts.copy()) for ctx, counts in self.ngrams.items())
        mem._followed = Counter(self._followed)
        return mem

    # -- persistence: flat integer arrays, no pickle ---------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        rows = [(-1,) * (ORDER - 1 - len(ctx)) + ctx + (w, c)
                for ctx, cnt in self.ngrams.items() for w, c in cnt.items()]
        uni = np.array(sorted(self.unigram.items()), dtype=np.int64).reshape(-1, 2)
        return {"phrases_unigram": uni,
                "phrases_ngrams": np.array(rows, dtype=np.int64).reshape(-1, ORDER - 1 + 2)}

    @classmethod
    def from_arrays(cls, vocab_size: int, skip_ids: Iterable[int], arrays: dict) -> PhraseMemory:
        """The memory ``to_arrays`` saved; ``ValueError`` if an id or count is out of range (a damaged file)."""
        _check_arrays(vocab_size, arrays["phrases_unigram"], arrays["phrases_ngrams"])
        mem = cls(vocab_size, skip_ids)
        for w, c in arrays["phrases_unigram"]:
            mem._count(int(w), times=int(c))
        for row in arrays["phrases_ngrams"]:
            context = tuple(int(t) for t in row[: ORDER - 1] if t >= 0)
            if not context:
                raise ValueError("phrase memory has an n-gram row without context words")
            mem._count(int(row[-2]), context, int(row[-1]))
        if any(not 0 <= w < vocab_size for w in mem.unigram):
            raise ValueError("phrase memory refers to ids outside the vocabulary")
        return mem


def _check_arrays(vocab_size: int, unigram: np.ndarray, ngrams: np.ndarray) -> None:
    """Ids inside the vocabulary (context ids may be -1, left padding), counts from 1 to ``MAX_COUNT``."""
    if unigram.ndim != 2 or unigram.shape[1] != 2 or ngrams.ndim != 2 or ngrams.shape[1] != ORDER + 1:
        raise ValueError("phrase memory arrays have the wrong shape")
    contexts, words = ngrams[:, : ORDER - 1], np.concatenate([unigram[:, 0], ngrams[:, -2]])
    counts = np.concatenate([unigram[:, 1], ngrams[:, -1]])
    if len(words) and (words.min() < 0 or words.max() >= vocab_size):
        raise ValueError("phrase memory refers to ids outside the vocabulary")
    if contexts.size and (contexts.min() < -1 or contexts.max() >= vocab_size):
        raise ValueError("phrase memory refers to context ids outside the vocabulary")
    if len(counts) and (counts.min() < 1 or counts.max() > MAX_COUNT):
        raise ValueError(f"phrase memory has a count outside 1..{MAX_COUNT}")
