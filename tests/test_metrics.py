"""How evaluation counts a hit: the ranking a keyboard shows, ties included."""
from __future__ import annotations

import numpy as np

from edgekit.metrics import evaluate
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
