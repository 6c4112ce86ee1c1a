"""The options one personalization tries, and how they are scored together."""
from __future__ import annotations

import numpy as np

from edgekit.personal.learner import HEAD_STEPS, PHRASE_WEIGHTS, option_set
from edgekit.personal.phrases import PhraseMemory
from edgekit.personal.rows import Rows
from edgekit.personal.train import Option, score_options

V, F, T, N = 40, 6, 3, 300


def _rows(rng: np.random.Generator, columns: np.ndarray) -> Rows:
    contexts = rng.integers(5, V, (N, T)).astype(np.int32)
    rest_top = np.sort(rng.normal(0, 1, (N, 3)), axis=1)
    return Rows(rng.normal(0, 1, (N, F)).astype(np.float32), contexts, rng.integers(0, len(columns), N),
                rest_top[:, -1] + 1.0, rest_top)


def test_scoring_many_mixed_options_at_once_scores_each_as_alone():
    """Options are scored in one pass, sharing each head's probabilities: every option must still get
    its own score (a phrase mixture is a temporary array; caching by its id gave one option another's)."""
    rng = np.random.default_rng(0)
    columns = np.arange(5, V)
    rows = _rows(rng, columns)
    memory = PhraseMemory(V, skip_ids=range(5))
    for _ in range(200):
        memory.add([2, *rng.integers(5, 15, 6).tolist()])
    heads = [(rng.normal(0, 1, (F, len(columns))).astype(np.float32), rng.normal(0, 1, len(columns)))
             for _ in range(3)]
    options = [Option(h, memory, np.where(rng.random(N) < 0.7, rng.random(N) * w, 0.0).astype(np.float32))
               for h in heads for w in (0.0, 0.3, 0.6, 0.9)]
    groups = np.stack([np.ones(N, bool), rng.random(N) < 0.5])
    together = score_options(rows, options, groups, columns)
    alone = np.concatenate([score_options(rows, [o], groups, columns) for o in options])
    np.testing.assert_allclose(together, alone)


def test_option_set_steps_part_of_the_way_to_the_trained_head():
    current = (np.zeros((2, 3)), np.zeros(3))
    trained = (np.ones((2, 3)), np.full(3, 2.0))
    options = option_set(current, trained)
    assert len(options) == (1 + len(HEAD_STEPS)) * len(PHRASE_WEIGHTS)
    steps = sorted({float(h[1][0]) / 2 for h, _ in options})
    assert steps == [0.0, *sorted(HEAD_STEPS)] and 0 < min(HEAD_STEPS) < 1 and max(HEAD_STEPS) == 1.0
    assert {w for _, w in options} == set(PHRASE_WEIGHTS)
    assert any(h is current for h, _ in options) and any(h is trained for h, _ in options)
