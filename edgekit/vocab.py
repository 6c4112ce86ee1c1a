"""Vocabulary: token <-> id, special ids, personal slots, prefix lookup for completion."""
from __future__ import annotations

import bisect
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .tokenizer import BOS, EOS, NUM, PAD, SPECIAL_TOKENS, UNK

PERSONAL_PREFIX = "<personal_"


def personal_slot_name(i: int) -> str:
    return f"{PERSONAL_PREFIX}{i}>"


class _Ids(dict):
    """Token -> id, where a token not in it is ``<unk>``."""

    def __init__(self, unk: int, ids: dict[str, int]):
        super().__init__(ids)
        self.unk = unk

    def __missing__(self, token: str) -> int:
        return self.unk


class Vocabulary:
    """Ids of the model's output rows; the last ``personal_slots`` rows are reserved.

    ``personal_words`` maps a device's own words onto those reserved slots, so a
    personalized model can both read (as context) and suggest them.
    """

    def __init__(self, tokens: Sequence[str], personal_slots: int = 0):
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {' '.join(SPECIAL_TOKENS)}, got {' '.join(tokens[:5])}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"vocabulary has duplicate token {dup!r}")
        self.tokens = list(tokens)
        self.personal_slots = personal_slots
        self.first_slot = len(tokens) - personal_slots
        # The model's own words: after the specials, before the personal slots.
        self.word_ids: tuple[int, int] = (len(SPECIAL_TOKENS), self.first_slot)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.unk, self.bos, self.eos, self.num = (self.ids[t] for t in (PAD, UNK, BOS, EOS, NUM))
        self._personal: dict[str, int] = {}
        self._rebuild_prefix_index()

    @classmethod
    def build(cls, token_lines: Iterable[list[str]], size: int, personal_slots: int = 64) -> Vocabulary:
        """Most frequent ``size`` words of the text plus specials and reserved slots."""
        counts: Counter[str] = Counter()
        for line in token_lines:
            counts.update(t for t in line if t not in SPECIAL_TOKENS)
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]
        slots = [personal_slot_name(i) for i in range(personal_slots)]
        return cls(list(SPECIAL_TOKENS) + words + slots, personal_slots)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """A ``vocab.txt``: one token per line, line number = id; trailing ``<personal_N>`` are slots."""
        from .tokenizer import read_text_lines

        tokens = [line.rstrip("\n") for line in read_text_lines(path)]
        slots = 0
        while slots < len(tokens) and tokens[len(tokens) - 1 - slots].startswith(PERSONAL_PREFIX):
            slots += 1
        return cls(tokens, slots)

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_bytes

        atomic_write_bytes(path, "".join(t + "\n" for t in self.tokens).encode("utf-8"))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def special_ids(self) -> list[int]:
        """Ids of the special tokens (the vocabulary starts with them): never predicted."""
        return list(range(len(SPECIAL_TOKENS)))

    # -- personal words -------------------------------------------------
    @property
    def personal_words(self) -> dict[str, int]:
        return dict(self._personal)

    def assign_personal(self, words: Iterable[str]) -> dict[str, int]:
        """Give each new word a free slot (until full); returns the full mapping. The indexes are
        rebuilt only when a word was added (most learnings after the first add none)."""
        free = (i for i in range(self.first_slot, len(self.tokens)) if i not in self._personal.values())
        before = len(self._personal)
        for w in words:
            if w in self.ids or w in self._personal:
                continue
            slot = next(free, None)
            if slot is None:
                break
            self._personal[w] = slot
        if len(self._personal) != before:
            self._rebuild_prefix_index()
        return self.personal_words

    def set_personal(self, mapping: dict[str, int]) -> None:
        bad = [s for s in mapping.values() if not self.first_slot <= s < len(self.tokens)]
        if bad:
            raise ValueError(f"personal slot ids {bad[:3]} are outside the reserved range")
        if mapping != self._personal:  # the same words: the indexes stand
            self._personal = dict(mapping)
            self._rebuild_prefix_index()

    # -- lookup -----------------------------------------------------------
    def id_of(self, token: str) -> int:
        return self._lookup[token]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return list(map(self._lookup.__getitem__, tokens))  # a loop in C: this runs after every space typed

    def word(self, i: int) -> str:
        return self._slot_words.get(i) or self.tokens[i]

    def is_word_id(self, i: int) -> bool:
        """Can this id be suggested or scored (a real word, or an assigned slot)?"""
        return i in self._suggestable

    def suggestable_mask(self) -> np.ndarray:
        """Boolean [V]: which ids are words (read-only, cached)."""
        return self._mask

    def unsuggestable_ids(self) -> np.ndarray:
        """Specials and unassigned personal slots (cached)."""
        return self._banned

    def prefix_ids(self, prefix: str) -> np.ndarray:
        """Ids of suggestable words that start with ``prefix`` (all of them for "")."""
        if not prefix:
            return self._sorted_ids
        lo = bisect.bisect_left(self._sorted_words, prefix)
        hi = bisect.bisect_left(self._sorted_words, prefix + "\U0010ffff")
        return self._sorted_ids[lo:hi]

    def context_ids(self, tokens: Sequence[str], context_length: int) -> np.ndarray:
        ids = self.encode(tokens[-context_length:])
        return np.array([self.pad] * (context_length - len(ids)) + ids, dtype=np.int32)

    def _rebuild_prefix_index(self) -> None:
        start, end = self.word_ids
        words = {t: i for i, t in enumerate(self.tokens[start:end], start)}
        words.update(self._personal)
        self._lookup = _Ids(self.unk, {**self._personal, **self.ids})  # a model token wins over a personal word
        self._suggestable = set(words.values())
        self._slot_words = {s: w for w, s in self._personal.items()}
        self._mask = np.zeros(len(self.tokens), dtype=bool)
        self._mask[list(self._suggestable)] = True
        self._mask.flags.writeable = False
        self._banned = np.flatnonzero(~self._mask)
        pairs = sorted(words.items())
        self._sorted_words = [w for w, _ in pairs]
        self._sorted_ids = np.array([i for _, i in pairs], dtype=np.int64)
