"""The personal phrase memory: an n-gram model of the user's own text, mixed into suggestions."""
from __future__ import annotations

import numpy as np

from edgekit.personal.gate import mix
from edgekit.personal.phrases import PhraseMemory

V, BOS = 50, 2


def memory() -> PhraseMemory:
    mem = PhraseMemory(V, skip_ids=[0, 1, BOS])
    for line in ([BOS, 10, 11, 12], [BOS, 10, 11, 13], [BOS, 10, 11, 12], [BOS, 20, 21]):
        mem.add(line)
    return mem


def test_probabilities_follow_the_users_phrases():
    mem = memory()
    p = mem.probs([BOS, 10, 11])
    assert abs(p.sum() - 1) < 1e-5 and p.argmax() == 12 and p[12] > p[13] > p[20] > 0
    assert p[[0, 1, BOS]].sum() == 0  # never predicts what it skips
    assert abs(mem.probs([]).sum() - 1) < 1e-5 and mem.probs([]).argmax() in (10, 11)  # unigram only


def test_add_probs_is_a_scaled_probs_added_in_place():
    mem, out = memory(), np.full(V, 0.01, dtype=np.float32)
    mem.add_probs([BOS, 10, 11], 0.3, out)
    assert np.allclose(out, 0.01 + 0.3 * mem.probs([BOS, 10, 11]), atol=1e-7)


def test_counts_survive_the_state_file_arrays():
    mem = memory()
    back = PhraseMemory.from_arrays(V, [0, 1, BOS], mem.to_arrays())
    assert len(back) == len(mem) == 11 and back.evidence([11]) == mem.evidence([11]) == 3
    assert np.array_equal(back.probs([10, 11]), mem.probs([10, 11]))


def test_mix_moves_only_contexts_with_evidence():
    mem = memory()
    neural = np.full((2, V), 1 / V, dtype=np.float32)
    contexts = np.array([[BOS, 10, 11], [BOS, 30, 31]])  # 11 was seen followed by words; 31 never
    mixed = mix(neural.copy(), mem, contexts, weight=0.5)
    assert np.array_equal(mixed[1], neural[1])
    assert mixed[0].argmax() == 12 and abs(mixed[0].sum() - 1) < 1e-5
    assert mix(neural.copy(), mem, contexts, weight=0.0)[0].argmax() == 0  # weight 0: neural as it was


def test_a_row_without_context_is_refused_as_corrupt():
    import pytest

    arrays = memory().to_arrays()
    arrays["phrases_ngrams"] = np.vstack([arrays["phrases_ngrams"], [[-1, -1, 10, 5]]])
    with pytest.raises(ValueError, match="without context"):
        PhraseMemory.from_arrays(V, [0, 1, BOS], arrays)


def test_probabilities_at_some_columns_are_the_full_ones_read_there():
    mem, columns = memory(), np.array([3, 10, 12, 13, 20, 21])
    contexts = np.array([[BOS, 10, 11], [BOS, 30, 31], [BOS, BOS, 10]])
    expected = np.stack([mem.probs(c)[columns] for c in contexts])
    assert np.allclose(mem.probs_columns(contexts, columns), expected, atol=1e-7)
    mem.add([BOS, 10, 11, 20])  # learning more invalidates what was cached
    assert np.allclose(mem.probs_columns(contexts[:1], columns)[0], mem.probs(contexts[0])[columns], atol=1e-7)


def test_suggestions_mix_the_memory_by_the_same_gate_learning_scored():
    """``mix`` (one context at a time, on the keyboard's path) and ``share`` (learning's batches) agree."""
    from edgekit.personal.gate import gate_inputs, share

    mem, theta = memory(), np.array([0.3, 0.5, -0.2, 1.0], np.float32)
    contexts = np.array([[BOS, 10, 11], [BOS, 30, 31], [BOS, 20, 21]])
    neural = np.full((3, V), 1 / V, dtype=np.float32)
    best = np.array([mem.probs(c).max() for c in contexts], np.float32)
    lam = share(theta, gate_inputs(mem, contexts, best), 0.8)
    assert lam[1] == 0 and lam[0] > 0  # never seen: no share
    expected = np.stack([(1 - s) * neural[i] + s * mem.probs(c) for i, (s, c) in enumerate(zip(lam, contexts))])
    assert np.allclose(mix(neural.copy(), mem, contexts, 0.8, theta), expected, atol=1e-6)


def test_a_copy_predicts_the_same_and_learns_on_its_own():
    mem = memory()
    mem.probs([BOS, 10, 11])  # cached arrays are the original's
    copy = mem.copy()
    assert copy.to_arrays().keys() == mem.to_arrays().keys()
    assert all(np.array_equal(a, b) for a, b in zip(copy.to_arrays().values(), mem.to_arrays().values(), strict=True))
    copy.add([BOS, 10, 11, 30])
    assert copy.probs([BOS, 10, 11])[30] > 0 and mem.probs([BOS, 10, 11])[30] == 0
    assert len(copy) == len(mem) + 3 and mem.followed([10, 11]) == 3
