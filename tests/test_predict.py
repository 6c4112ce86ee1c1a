"""Personalized suggestions ranked from the few ids the personal state moves equal a full-vocabulary softmax."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.model import EdgeModel
from tests.fixtures.texts import base_lines, user_lines


@pytest.fixture(scope="module")
def personal(trained_files, tmp_path_factory) -> EdgeModel:
    """A learned state (phrases, personal words), then a head change on many columns on top of it."""
    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path_factory.mktemp("state"), unsigned_local=True)
    assert m.personalize(user_lines(300)).adopted
    return m


def _contexts(m: EdgeModel) -> list[str]:
    lines = user_lines(40)[20:] + base_lines(20)
    return [" ".join(line.split()[:n]) + " " for line in lines for n in (1, 2, 4)] + [""]


def _full_vocabulary_top(m: EdgeModel, text: str, k: int) -> tuple[list[str], np.ndarray]:
    """The top ``k`` by ``probabilities`` (a softmax over every id, the phrase memory mixed in)."""
    context = m.tokenizer.split_partial(text, keep=m.context_length)[0]
    p = m.probabilities(m.vocab.context_ids(context, m.context_length)[None])[0].astype(np.float64)
    p[~m.vocab.suggestable_mask()] = 0.0
    best = np.lexsort((np.arange(len(p)), -p))[:k]
    return [m.vocab.word(i) for i in best], p[best] / p.sum()


def _check_against_full_vocabulary(m: EdgeModel) -> None:
    m._suggester.clear()
    for text in _contexts(m):
        got = m.suggest(text, k=5)
        words, probs = _full_vocabulary_top(m, text, 5)
        assert [s.word for s in got] == words, text
        assert np.allclose([s.probability for s in got], probs, rtol=1e-3, atol=1e-6), text


def test_sparse_ranking_is_the_full_softmax_with_phrases_and_personal_words(personal):
    ids = personal.vocab.context_ids(["hi"], personal.context_length)
    assert personal._p.scores(ids).top_ids is not None  # the interpreter ranks: the sparse path is in use
    assert personal.state.personal_words and personal.state.phrase_weight > 0
    _check_against_full_vocabulary(personal)


def test_sparse_ranking_is_the_full_softmax_with_a_head_change_on_many_columns(personal):
    state = personal.state
    rng = np.random.default_rng(0)
    cols = rng.choice(np.arange(personal.vocab.word_ids[0], len(personal.vocab)), len(personal.vocab) // 3,
                      replace=False)
    saved = state.delta_w.copy(), state.delta_b.copy()
    try:
        state.delta_w[:, cols] += rng.normal(0, 0.5, (state.delta_w.shape[0], len(cols))).astype(np.float32)
        state.delta_b[cols] += rng.normal(0, 1.0, len(cols)).astype(np.float32)
        personal._set_state(state)
        _check_against_full_vocabulary(personal)
    finally:
        state.delta_w, state.delta_b = saved
        personal._set_state(state)
