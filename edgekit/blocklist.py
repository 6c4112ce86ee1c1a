"""Words that suggestions leave out by default: edgekit's profanity list.

The list (``assets/profanity.txt``, its header says what is in it and why)
is read only by ranking. The model is trained on unfiltered text and scores
these words like any other, so the words around them are predicted as well
as ever; the filter only keeps them out of what the keyboard offers.
"""
from __future__ import annotations

from pathlib import Path

from .trust import ASSETS


def read_word_list(path: Path) -> frozenset[str]:
    """One lower-case word a line; ``#`` starts a comment line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.lstrip().startswith("#"))


PROFANITY: frozenset[str] = read_word_list(ASSETS / "profanity.txt")
