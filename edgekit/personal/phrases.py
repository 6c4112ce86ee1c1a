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

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

ORDER = 3  # trigram: two words of context
Context = Sequence[int] | np.ndarray  # token ids, oldest first
MAX_COUNT = 1 << 40  # times one phrase was seen: far beyond any user, small enough that sums stay exact
ENTRIES = 1 << 15  # n-gram entries ``probs_columns`` reads at a time


class _Table(NamedTuple):
    """One context length's entries, sorted by context then next word (compressed rows).

    A context of ``n`` ids ``c_1 .. c_n`` is the code ``sum c_i V^(n-i)``.
    Sorted arrays, not dicts of counters: a year of messages is a few
    hundred kilobytes, not megabytes of Python objects. Never changed in
    place (learning builds new arrays), so copies share them.
    """

    keys: np.ndarray  # [K] int64 context codes, ascending
    starts: np.ndarray  # [K + 1] int64: context i's entries are starts[i]:starts[i + 1]
    words: np.ndarray  # [E] int64 next-word ids
    counts: np.ndarray  # [E] int64
    weights: np.ndarray  # [E] float32: the counts as probabilities multiply them
    totals: np.ndarray  # [K] int64: how often each context was followed by anything

    @classmethod
    def build(cls, codes: np.ndarray, words: np.ndarray, counts: np.ndarray) -> _Table:
        """The table of entries ``(context code, next word, count)``, in any order; repeated pairs add up."""
        order = np.lexsort((words, codes))
        codes, words, counts = codes[order], words[order], counts[order]
        first = np.ones(len(codes), bool)
        first[1:] = (codes[1:] != codes[:-1]) | (words[1:] != words[:-1])
        at = np.flatnonzero(first)
        counts = np.add.reduceat(counts, at) if len(at) else counts[:0]
        codes, words = codes[at], words[at]
        keys, begin = np.unique(codes, return_index=True)
        totals = np.add.reduceat(counts, begin) if len(begin) else counts[:0]
        arrays = (keys, np.append(begin, len(codes)), words, counts, counts.astype(np.float32), totals)
        for a in arrays:
            a.flags.writeable = False
        return cls(*arrays)

    def entry_codes(self) -> np.ndarray:
        """Each entry's context code ``[E]``."""
        return np.repeat(self.keys, np.diff(self.starts))

    def find(self, codes: np.ndarray) -> np.ndarray:
        """Each code's context index, -1 where it was never seen."""
        if not len(self.keys):
            return np.full(len(codes), -1, np.int64)
        at = np.minimum(np.searchsorted(self.keys, codes), len(self.keys) - 1)
        return np.where(self.keys[at] == codes, at, -1)

    def keep(self, mask: np.ndarray) -> _Table:
        """A table of the entries where ``mask`` holds (totals summed again)."""
        return _Table.build(self.entry_codes()[mask], self.words[mask], self.counts[mask])


def _empty() -> _Table:
    return _Table.build(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


class PhraseMemory:
    """Counts of ``(previous words) -> next word`` over token ids.

    ``unigram`` maps each word to its count (in the order words were first
    learned); the n-grams live in one sorted ``_Table`` per context length.
    ``add`` appends to a flat list of pending entries, folded into the tables
    when the memory is next read: learning a thousand lines is one sort.
    """

    def __init__(self, vocab_size: int, skip_ids: Iterable[int] = ()):
        self.vocab_size = vocab_size
        self.skip = frozenset(skip_ids)  # ids never predicted (unk, specials)
        self.unigram: Counter[int] = Counter()
        self._tokens = 0  # tokens learned: the unigram's total
        self._tables = [_empty() for _ in range(ORDER - 1)]  # contexts of one word, of two, ...
        self._pending = array("q")  # (context length, context code, next word) per entry added since
        self._unigram_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return self._tokens

    def add(self, ids: Sequence[int]) -> None:
        """Learn one line of ids (starting with ``<s>``); ``ValueError`` for an id outside the vocabulary."""
        self.add_lines([ids])

    def add_lines(self, lines: Iterable[Sequence[int]]) -> None:
        """``add`` each line, all at once: every word after a line's first id that is not skipped counts,
        after each of its contexts of 1 .. ``ORDER - 1`` ids within the line (a word at a time in Python
        was 0.02 s of learning 1,000 lines). New words join ``unigram`` in the order they first come.
        Nothing is learned if any id is outside the vocabulary (``ValueError``)."""
        parts = [np.asarray(ln, np.int64).reshape(-1) for ln in lines]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError("phrase memory was given ids outside the vocabulary")
        lengths = np.array([len(x) for x in parts], np.int64)
        position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # within its line
        at = np.flatnonzero((position > 0) & ~np.isin(ids, list(self.skip)))
        words = ids[at]
        seen, first, counts = np.unique(words, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        self.unigram.update(dict(zip(seen[order].tolist(), counts[order].tolist(), strict=True)))
        self._tokens += len(words)
        code = np.zeros(len(at), np.int64)
        for n in range(1, ORDER):
            code += ids[at - n] * self.vocab_size ** (n - 1)  # kept only where the line is long enough
            has = position[at] >= n
            entries = np.column_stack([np.full(int(has.sum()), n), code[has], words[has]])
            self._pending.frombytes(entries.astype(np.int64).tobytes())
        self._unigram_probs = None

    def _settled(self) -> list[_Table]:
        """The tables with every pending entry folded in."""
        if self._pending:
            rows = np.frombuffer(self._pending, np.int64).reshape(-1, 3)
            for n, table in enumerate(self._tables, 1):
                new = rows[rows[:, 0] == n]
                if len(new):
                    self._tables[n - 1] = _Table.build(np.concatenate([table.entry_codes(), new[:, 1]]),
                                                       np.concatenate([table.words, new[:, 2]]),
                                                       np.concatenate([table.counts, np.ones(len(new), np.int64)]))
            self._pending = array("q")
        return self._tables

    def _find(self, context: Context) -> tuple[_Table, int] | None:
        """The table holding ``context`` (one or more ids) and its index there; ``None`` if never seen."""
        n = len(context)
        if not 0 < n < ORDER:
            return None
        code = 0
        for t in context:
            t = int(t)
            if not 0 <= t < self.vocab_size:
                return None
            code = code * self.vocab_size + t
        table = self._settled()[n - 1]
        i = int(table.keys.searchsorted(code))
        return (table, i) if i < len(table.keys) and table.keys[i] == code else None

    def evidence(self, context: Context) -> int:
        """How often the last word of ``context`` was seen followed by anything."""
        return self.followed(context[-1:])

    def followed(self, context: Context) -> int:
        """How often ``context`` (one or two word ids) was seen followed by anything."""
        found = self._find(context)
        return 0 if found is None else int(found[0].totals[found[1]])

    def followed_rows(self, contexts: np.ndarray, n: int) -> np.ndarray:
        """``followed`` of the last ``n`` words of each row of ``contexts [N, T]``, all rows at once ``[N]``
        (each distinct ending looked up once, as ``probs_columns`` does)."""
        ends = np.asarray(contexts, np.int64).reshape(len(contexts), -1)
        if not 0 < n < ORDER or ends.shape[1] < n:
            return np.zeros(len(ends), np.int64)
        totals = self._settled()[n - 1].totals
        endings, row_of = self._endings(ends)
        at = self._found(endings)[n - 1]  # a seen context's shorter endings were seen with it
        return np.where(at >= 0, totals[np.maximum(at, 0)] if len(totals) else 0, 0)[row_of]

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

        They depend on the last ``ORDER - 1`` words only: each distinct
        ending is looked up once, every order of every ending at once, with
        the same float32 and float64 steps as ``orders`` (so the same
        numbers); the entries are read ``ENTRIES`` at a time (a year's
        common words are followed by hundreds of others each: all of them at
        once would be megabytes of indices).
        """
        out, row_of = self._ending_columns(contexts, columns)
        return out[row_of]

    def best_columns(self, contexts: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``probs_columns(contexts, columns).max(axis=1)``, taken once per distinct ending."""
        out, row_of = self._ending_columns(contexts, columns)
        return out.max(axis=1)[row_of]

    def _ending_columns(self, contexts: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``probs_columns`` per distinct ending ``[U, len(columns)]``, and each row's ending ``[N]``."""
        where = np.full(self.vocab_size, -1, np.int64)
        where[columns] = np.arange(len(columns))
        endings, row_of = self._endings(contexts)
        tables, scale = self._settled(), np.ones(len(endings))
        steps = []
        for n, at in reversed(list(enumerate(self._found(endings), 1))):  # longest first, as ``orders`` yields them
            table, hit = tables[n - 1], np.flatnonzero(at >= 0)
            i = at[hit]
            types = table.starts[i + 1] - table.starts[i]
            denominator = table.totals[i] + types
            steps.append((table, hit, table.starts[i], types, (scale[hit] / denominator).astype(np.float32)))
            scale[hit] = scale[hit] * (types / denominator)
        out = scale.astype(np.float32)[:, None] * self.unigram_probs()[columns][None, :]
        for table, hit, begin, types, factor in steps:
            ends = np.cumsum(types)
            lo = 0
            while lo < len(hit):
                hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - types[lo] + ENTRIES, side="right")))
                n = types[lo:hi]
                entry = np.arange(n.sum()) + np.repeat(begin[lo:hi] - (np.cumsum(n) - n), n)
                at = where[table.words[entry]]
                keep = at >= 0
                weights = table.weights[entry[keep]] * np.repeat(factor[lo:hi], n)[keep]
                out[np.repeat(hit[lo:hi], n)[keep], at[keep]] += weights  # one entry per (ending, word): no repeats
                lo = hi
        return out, row_of

    def _endings(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct last ``ORDER - 1`` words of ``contexts [N, T]`` (any order), and each row's.

        Found as distinct numbers, one per ending (a few times faster than rows compared as rows); an id
        outside the vocabulary counts as unseen whatever it is (``_found``), so all of them are one.
        """
        ids = np.asarray(contexts, np.int64)[:, -(ORDER - 1):]
        ids = np.where((ids >= 0) & (ids < self.vocab_size), ids, -1)
        code = np.zeros(len(ids), np.int64)
        for column in ids.T:
            code = code * (self.vocab_size + 1) + column + 1
        _, first, row_of = np.unique(code, return_index=True, return_inverse=True)
        return ids[first], row_of.reshape(-1)

    def _found(self, endings: np.ndarray) -> list[np.ndarray]:
        """Per context length, shortest first: each ending's context index, -1 where it was never seen or a
        shorter one was not (``orders`` stops at the first unseen)."""
        seen, valid = np.ones(len(endings), bool), np.ones(len(endings), bool)
        code, found = np.zeros(len(endings), np.int64), []
        for n in range(1, min(ORDER, endings.shape[1] + 1)):
            ids = endings[:, -n]
            valid &= (ids >= 0) & (ids < self.vocab_size)
            code = code + np.where(valid, ids, 0) * self.vocab_size ** (n - 1)
            at = np.where(valid, self._tables[n - 1].find(code), -1)
            seen &= at >= 0
            found.append(np.where(seen, at, -1))
        return found

    def orders(self, context: Context, scale: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """Per seen context order, longest first: (next-word ids, their weights, the scale left for the rest)."""
        seen: list[tuple[_Table, int]] = []
        for n in range(1, min(ORDER, len(context) + 1)):
            found = self._find(context[-n:])
            if found is None:
                break
            seen.append(found)
        for table, i in reversed(seen):
            begin, end = int(table.starts[i]), int(table.starts[i + 1])
            types, total = end - begin, int(table.totals[i])
            weights = table.weights[begin:end] * np.float32(scale / (total + types))
            scale *= types / (total + types)
            yield table.words[begin:end], weights, scale

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
        return sum(len(t.words) for t in self._settled())

    def _holding(self, word: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per table, which entries have ``word`` in their context, and which have it as the next word."""
        out = []
        for n, table in enumerate(self._settled(), 1):
            codes, in_context = table.entry_codes(), np.zeros(len(table.words), bool)
            for _ in range(n):
                in_context |= codes % self.vocab_size == word
                codes = codes // self.vocab_size
            out.append((in_context, table.words == word))
        return out

    def phrases_with(self, word: int) -> int:
        """How many entries hold ``word``, in the context or as the next word."""
        return sum(int((ctx | nxt).sum()) for ctx, nxt in self._holding(word))

    def without(self, word: int) -> PhraseMemory:
        """A copy that never saw ``word``: its count and every entry holding it are gone."""
        mem = PhraseMemory(self.vocab_size, self.skip)
        mem.unigram = Counter({w: c for w, c in self.unigram.items() if w != word})
        mem._tokens = sum(mem.unigram.values())
        mem._tables = [t.keep(~(ctx | nxt)) for t, (ctx, nxt) in zip(self._tables, self._holding(word), strict=True)]
        return mem

    def copy(self) -> PhraseMemory:
        """An independent memory with the same counts (learning adds to a copy until it is adopted).

        The tables are shared: nothing changes them in place."""
        mem = PhraseMemory(self.vocab_size, self.skip)
        mem.unigram, mem._tokens = Counter(self.unigram), self._tokens
        mem._tables = list(self._settled())
        return mem

    # -- persistence: flat integer arrays, no pickle ---------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Unigram rows ``(word, count)`` and n-gram rows ``(context left-padded with -1, word, count)``."""
        rows = []
        for n, table in enumerate(self._settled(), 1):
            codes, context = table.entry_codes(), np.full((len(table.words), ORDER - 1), -1, np.int64)
            for j in range(n):
                context[:, ORDER - 2 - j] = codes % self.vocab_size
                codes = codes // self.vocab_size
            rows.append(np.column_stack([context, table.words, table.counts]))
        uni = np.array(sorted(self.unigram.items()), dtype=np.int64).reshape(-1, 2)
        return {"phrases_unigram": uni, "phrases_ngrams": np.concatenate(rows).reshape(-1, ORDER - 1 + 2)}

    @classmethod
    def from_arrays(cls, vocab_size: int, skip_ids: Iterable[int], arrays: dict) -> PhraseMemory:
        """The memory ``to_arrays`` saved; ``ValueError`` if an id or count is out of range (a damaged file)."""
        unigram, ngrams = arrays["phrases_unigram"], arrays["phrases_ngrams"]
        _check_arrays(vocab_size, unigram, ngrams)
        mem = cls(vocab_size, skip_ids)
        for w, c in unigram.tolist():
            mem.unigram[w] += c
            mem._tokens += c
        context = ngrams[:, : ORDER - 1].astype(np.int64)
        length = (context >= 0).sum(axis=1)  # the context's words: the ids that are not -1 padding
        if (length == 0).any():
            raise ValueError("phrase memory has an n-gram row without context words")
        code = np.zeros(len(ngrams), np.int64)
        for j in range(ORDER - 1):
            code = np.where(context[:, j] >= 0, code * vocab_size + context[:, j], code)
        words, counts = ngrams[:, -2].astype(np.int64), ngrams[:, -1].astype(np.int64)
        mem._tables = [_Table.build(code[length == n], words[length == n], counts[length == n])
                       for n in range(1, ORDER)]
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
