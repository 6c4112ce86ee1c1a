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


def test_counts_of_many_contexts_are_those_of_each_alone():
    """The gate's inputs read every row's context counts at once: the same as one context at a time, for
    seen and unseen endings, ids outside the vocabulary, and a memory that learned nothing."""
    from edgekit.personal.gate import _counts, gate_inputs

    rng = np.random.default_rng(0)
    contexts = np.concatenate([rng.integers(9, 14, (40, 3)), [[BOS, 10, 11], [BOS, 20, 21], [BOS, 10, V + 3]]])
    for mem in (memory(), PhraseMemory(V, skip_ids=[0, 1, BOS])):
        want = np.array([_counts(mem, c) for c in contexts])
        assert np.array_equal(np.stack([mem.followed_rows(contexts, 2), mem.followed_rows(contexts, 1)], 1), want)
        best = rng.random(len(contexts)).astype(np.float32)
        assert np.array_equal(gate_inputs(mem, contexts, best)[:, 1:3], np.log1p(want.astype(np.float32)))
    assert memory().followed_rows(contexts, 2).any()


def test_suggestions_mix_the_memory_by_the_same_gate_learning_scored():
    """``mix`` (one context at a time, on the keyboard's path) and ``share`` (learning's batches) agree."""
    from edgekit.personal.gate import gate_inputs, share

    mem, theta = memory(), np.array([0.3, 0.5, -0.2, 1.0], np.float32)
    contexts = np.array([[BOS, 10, 11], [BOS, 30, 31], [BOS, 20, 21]])
    neural = np.full((3, V), 1 / V, dtype=np.float32)
    best = np.array([mem.probs(c).max() for c in contexts], np.float32)
    lam = share(theta, gate_inputs(mem, contexts, best), 0.8)
    assert lam[1] == 0 and lam[0] > 0  # never seen: no share
    expected = np.stack([(1 - s) * neural[i] + s * mem.probs(c)
                         for i, (s, c) in enumerate(zip(lam, contexts, strict=True))])
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


def _witten_bell(lines: list[list[int]], context: list[int], skip: set[int]) -> np.ndarray:
    """Interpolated Witten-Bell over orders 1..3 from plain counters: what the memory must compute."""
    from collections import Counter, defaultdict

    uni: Counter[int] = Counter()
    grams: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
    for ln in lines:
        for i in range(1, len(ln)):
            if ln[i] in skip:
                continue
            uni[ln[i]] += 1
            for n in (1, 2):
                if i - n >= 0:
                    grams[tuple(ln[i - n : i])][ln[i]] += 1
    p = np.zeros(V)
    for w, c in uni.items():
        p[w] = c / sum(uni.values())
    for n in (1, 2):  # shortest first; a longer context counts only where the shorter one was seen
        key = tuple(context[-n:])
        if len(context) < n or key not in grams:
            break
        counts, types = grams[key], len(grams[key])
        total = sum(counts.values())
        seen = np.zeros(V)
        for w, c in counts.items():
            seen[w] = c
        p = (seen + types * p) / (total + types)
    return p


def _random_lines(seed: int, n: int = 60) -> list[list[int]]:
    rng = np.random.default_rng(seed)  # a small vocabulary: many repeated pairs and triples
    return [[BOS] + rng.integers(3, 15, size=rng.integers(1, 9)).tolist() for _ in range(n)]


def test_probabilities_are_witten_bell_over_the_counts_on_random_text():
    for seed in range(3):
        lines = _random_lines(seed)
        mem = PhraseMemory(V, skip_ids=[0, 1, BOS])
        for ln in lines:
            mem.add(ln)
        contexts = [ln[: j + 1] for ln in lines[:20] for j in range(len(ln))] + [[40, 41], [3, 40], [40, 3], []]
        for c in contexts:
            assert np.allclose(mem.probs(c), _witten_bell(lines, c, {0, 1, BOS}), atol=1e-6), c
        rows = np.array([([BOS, BOS, BOS] + c)[-3:] for c in contexts])
        columns = np.arange(0, V, 2)
        expected = np.stack([mem.probs(c)[columns] for c in rows])
        assert np.allclose(mem.probs_columns(rows, columns), expected, atol=1e-7)


def test_learning_in_steps_counts_what_learning_at_once_does():
    lines = _random_lines(4)
    once, steps = PhraseMemory(V, [0, 1, BOS]), PhraseMemory(V, [0, 1, BOS])
    for ln in lines:
        once.add(ln)
    for ln in lines:
        steps.add(ln)
        steps.followed([3, 4])  # read between lines: what was added so far is folded in
    assert once.n_phrases == steps.n_phrases
    assert all(np.array_equal(a, b) for a, b in zip(once.to_arrays().values(), steps.to_arrays().values(), strict=True))


def test_lines_learned_together_count_what_they_count_one_by_one():
    """The same counts, phrases and order of first-seen words; skipped ids still count as context, short
    lines add nothing; a batch with an id outside the vocabulary adds nothing at all."""
    from collections import Counter

    import pytest

    lines = _random_lines(7) + [[], [BOS], [BOS, 1, 5, 0, 5], [BOS, 44, 44, 44, 1]]
    words, phrases = Counter(), Counter()  # counted a word at a time, here
    for ln in lines:
        for i, w in enumerate(ln[1:], 1):
            if w not in (0, 1, BOS):
                words[w] += 1
                phrases.update((tuple(ln[i - n : i]), w) for n in range(1, min(3, i + 1)))
    one, many = PhraseMemory(V, [0, 1, BOS]), PhraseMemory(V, [0, 1, BOS])
    for ln in lines:
        one.add(ln)
    many.add_lines(lines[:3])
    many.add_lines(iter(lines[3:]))
    for mem in (one, many):
        rows = mem.to_arrays()["phrases_ngrams"].tolist()
        assert {(tuple(c for c in r[:2] if c >= 0), r[2]): r[3] for r in rows} == phrases
        assert list(mem.unigram.items()) == list(words.items()) and len(mem) == words.total()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        many.add_lines([[BOS, 3, 4], [BOS, V]])
    assert list(many.unigram.items()) == list(words.items()) and many.n_phrases == len(phrases)


def test_a_saved_memory_loads_the_same_whatever_the_row_order():
    lines = _random_lines(5)
    mem = PhraseMemory(V, [0, 1, BOS])
    for ln in lines:
        mem.add(ln)
    arrays = mem.to_arrays()
    rng = np.random.default_rng(0)
    shuffled = {**arrays, "phrases_ngrams": arrays["phrases_ngrams"][rng.permutation(len(arrays["phrases_ngrams"]))]}
    split = {**arrays, "phrases_ngrams": np.vstack([arrays["phrases_ngrams"], [[-1, 3, 4, 2]]])}  # a pair twice
    for back in (PhraseMemory.from_arrays(V, [0, 1, BOS], arrays), PhraseMemory.from_arrays(V, [0, 1, BOS], shuffled)):
        assert back.n_phrases == mem.n_phrases and len(back) == len(mem)
        for ln in lines[:10]:
            assert np.array_equal(back.probs(ln), mem.probs(ln)) and back.followed(ln[-2:]) == mem.followed(ln[-2:])
    twice = PhraseMemory.from_arrays(V, [0, 1, BOS], split)
    had = any(r[:3] == [-1, 3, 4] for r in arrays["phrases_ngrams"].tolist())
    assert twice.n_phrases == mem.n_phrases + (not had)
    assert twice.followed([3]) == mem.followed([3]) + 2


def test_forgetting_a_word_removes_every_phrase_holding_it():
    lines = _random_lines(6)
    mem = PhraseMemory(V, [0, 1, BOS])
    for ln in lines:
        mem.add(ln)
    gone = mem.without(7)
    assert gone.phrases_with(7) == 0 and 7 not in gone.unigram and mem.phrases_with(7) > 0
    assert gone.n_phrases == mem.n_phrases - mem.phrases_with(7)
    assert gone.probs([BOS, 3])[7] == 0 and gone.followed([7]) == 0 and len(gone) == len(mem) - mem.unigram[7]
    assert mem.phrases_with(7) > 0 and mem.unigram[7] > 0  # the memory it was made from is untouched


def test_ids_outside_the_vocabulary_are_refused():
    import pytest

    with pytest.raises(ValueError, match="outside the vocabulary"):
        PhraseMemory(V, [0, 1, BOS]).add([BOS, 3, V])
    assert memory().followed([V, 3]) == 0 and memory().followed([-1]) == 0


def test_a_gate_fitted_from_the_last_one_ends_near_a_fit_from_scratch(monkeypatch):
    """Learning a few lines starts the gate's fit where the last one ended, with half the steps: from there,
    and from a start well off, it must land where a long fit from scratch does."""
    from edgekit.personal import gate

    rng = np.random.default_rng(0)
    n, m, k = 2000, 600, 8
    x_u = np.column_stack([np.ones(n), rng.exponential(1, (n, 2)), rng.random(n)]).astype(np.float32)
    p_u = rng.uniform(0.01, 0.3, n).astype(np.float32)
    m_u = (rng.uniform(0.0, 0.3, n) + 0.2 * x_u[:, 3]).astype(np.float32)  # surer where it knows more
    x_a = np.column_stack([np.ones(m), rng.exponential(1, (m, 2)), rng.random(m)]).astype(np.float32)
    rows = (x_u, p_u, m_u), (x_a, *(rng.dirichlet(np.ones(k), m).astype(np.float32) for _ in range(3)))
    last = gate.fit_gate(*rows)
    monkeypatch.setattr(gate, "STEPS", 4 * gate.STEPS)
    settled = gate.fit_gate(*rows)
    monkeypatch.undo()
    assert settled[3] > 0  # the memory's confidence earns it a share
    assert np.abs(gate.fit_gate(*rows, start=last) - settled).max() < 0.005
    assert np.abs(gate.fit_gate(*rows, start=last + 1.0) - settled).max() < 0.05


def test_repeated_and_unknown_endings_read_as_their_own_rows():
    """Rows sharing an ending are computed once; ids outside the vocabulary are unseen, whatever their value."""
    mem, columns = memory(), np.array([3, 10, 12, 13, 20, 21])
    contexts = np.array([[BOS, 10, 11], [5, 10, 11], [BOS, V + 7, 11], [BOS, -3, 11], [BOS, 30, 31], [1, 10, 11]])
    got = mem.probs_columns(contexts, columns)
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], got[5]) and np.array_equal(got[2], got[3])
    expected = np.stack([mem.probs(c)[columns] for c in contexts[[0, 4]]])
    assert np.allclose(got[[0, 4]], expected, atol=1e-7)
    assert np.array_equal(mem.best_columns(contexts, columns), got.max(axis=1))
