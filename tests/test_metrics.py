"""How evaluation counts a hit: the ranking a keyboard shows, ties included."""
from __future__ import annotations

import numpy as np

from edgekit.metrics import evaluate, top_k
from edgekit.vocab import Vocabulary

VOCAB = Vocabulary(["<pad>", "<unk>", "<s>", "</s>", "<num>", "a", "b", "c", "d"])


def test_a_tie_ranks_the_lower_id_first_as_suggest_does():
    """Four words with one probability (an int8 model's logits take a few dozen values): suggest()
    shows a, b, c, so d is no top-3 hit and c no top-1 hit, though nothing is more probable than either."""
    flat = np.zeros(len(VOCAB), np.float32)
    flat[5:] = 0.25

    def scorer(ids: np.ndarray) -> np.ndarray:
        return np.tile(flat, (len(ids), 1))

    def scores(word: str) -> tuple[float, float]:
        e = evaluate(scorer, VOCAB, [["<s>", word]], context_length=2)
        return e.top1, e.top3

    assert scores("a") == (1.0, 1.0)
    assert scores("c") == (0.0, 1.0)
    assert scores("d") == (0.0, 0.0)


def test_keystroke_savings_rank_tied_completions_as_suggest_does():
    """Completions tie too: the three shown are the lowest ids ("aa", "ab", "ac"), best first, so "ad"
    is typed out in full and "aa" is tapped at once, whatever order a partition leaves tied words in."""
    vocab = Vocabulary(["<pad>", "<unk>", "<s>", "</s>", "<num>", "aa", "ab", "ac", "ad"])
    flat = np.full(len(vocab), 0.25, np.float32)

    def savings(word: str) -> float:
        e = evaluate(lambda ids: np.tile(flat, (len(ids), 1)), vocab, [["<s>", word]], context_length=2)
        return e.keystroke_savings

    assert savings("ad") == 0.0
    assert savings("aa") == 1 - 1 / 3
    assert top_k(flat, np.array([8, 7, 6, 5]), 3).tolist() == [5, 6, 7]
