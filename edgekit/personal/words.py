"""What the device learned, word by word, and how a user takes a word back.

A password or a name typed by mistake must not stay in the suggestions for
good. ``forget_word`` returns a *new* state without the word: its personal
slot (head columns included), every phrase in the phrase memory that holds
it, the kept held-out lines that hold it, and the pending federated
contribution (what head training learned from text that held the word cannot
be separated from the rest, so the whole pending contribution goes; the next
export carries only text learned afterwards). The caller saves that state
atomically and only then uses it, so a crash leaves the state before or after.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..vocab import Vocabulary
from .phrases import PhraseMemory
from .state import PersonalState


@dataclass(frozen=True)
class LearnedWord:
    """One word the device learned: its personal slot (``None``: a model word) and how often it was seen."""

    word: str
    slot: int | None
    count: int  # times the phrase memory saw it
    phrases: int  # phrase-memory entries (word pairs and triples) that hold it

    def to_dict(self) -> dict:
        return {"word": self.word, "slot": self.slot, "count": self.count, "phrases": self.phrases}


def learned_words(state: PersonalState) -> list[LearnedWord]:
    """The personal words (unknown to the model, given a slot), most often seen first."""
    memory = state.phrases
    out = [LearnedWord(w, s, memory.unigram.get(s, 0), memory.phrases_with(s)) for w, s in state.personal_words.items()]
    return sorted(out, key=lambda w: (-w.count, w.word))


def forget_word(state: PersonalState, vocab: Vocabulary, word: str) -> PersonalState:
    """A copy of ``state`` with nothing left of ``word``; raises ``KeyError`` if the state never saw it.

    ``word`` is matched as the tokenizer writes it (lower case for the
    bundled model). Its head columns go back to the model version's
    (delta zero), so a model word is ranked as before any personalization.
    """
    slot = state.personal_words.get(word)
    wid = slot if slot is not None else vocab.ids.get(word)
    held = {i for i, line in enumerate(state.heldout) if word in line}
    in_memory = wid is not None and (wid in state.phrases.unigram or state.phrases.phrases_with(wid) > 0)
    if slot is None and not in_memory and not held:
        raise KeyError(word)
    new = copy.copy(state)
    new.personal_words = {w: s for w, s in state.personal_words.items() if w != word}
    new.heldout = [line for i, line in enumerate(state.heldout) if i not in held]
    new.heldout_new = [f for i, f in enumerate(state.heldout_new) if i not in held]
    if wid is not None:
        new.phrases = state.phrases.without(wid)
        new.delta_w, new.delta_b = state.delta_w.without(wid), state.delta_b.copy()
        new.delta_b[wid] = 0.0
    new.clear_contribution()
    return new


def forget_phrases(state: PersonalState) -> PersonalState:
    """A copy of ``state`` with an empty phrase memory (the head, words and contribution stay)."""
    new = copy.copy(state)
    new.phrases = PhraseMemory(state.phrases.vocab_size, state.phrases.skip)
    return new

