"""Personalized suggestions: the personal head runs inside the interpreter, and merging its ranking with the
personal words and the phrase memory gives the words and probabilities of a full-vocabulary softmax."""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest

from edgekit.model import EdgeModel
from tests.fixtures.texts import base_lines, user_lines


def _learned(path, folder) -> EdgeModel:
    """A learned state (phrases, personal words)."""
    m = EdgeModel.load(path, state_dir=folder, unsigned_local=True)
    assert m.personalize(user_lines(300)).adopted
    return m


@pytest.fixture(scope="module")
def personal(trained_files, tmp_path_factory) -> EdgeModel:
    return _learned(trained_files["int8"], tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def personal_float(trained_files, tmp_path_factory) -> EdgeModel:
    """The float file: the personal head inside the interpreter computes the host's logits exactly."""
    return _learned(trained_files["none"], tmp_path_factory.mktemp("state-float"))


@contextlib.contextmanager
def _head_change(m: EdgeModel, scale: float = 1.0, cols: np.ndarray | None = None) -> Iterator[None]:
    """A random change of the head on a third of the columns (or ``cols``), for the duration."""
    state = m.state
    rng = np.random.default_rng(0)
    if cols is None:
        cols = rng.choice(np.arange(m.vocab.word_ids[0], len(m.vocab)), len(m.vocab) // 3, replace=False)
    saved = state.delta_w.copy(), state.delta_b.copy()
    try:
        state.delta_w.put(cols, scale * rng.normal(0, 0.5, (state.delta_w.shape[0], len(cols))).astype(np.float32),
                          add=True)
        state.delta_b[cols] += scale * rng.normal(0, 1.0, len(cols)).astype(np.float32)
        m._set_state(state)
        yield
    finally:
        state.delta_w, state.delta_b = saved
        m._set_state(state)


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


def test_the_merge_is_the_full_softmax_with_phrases_and_personal_words(personal_float):
    m = personal_float
    ids = m.vocab.context_ids(["hi"], m.context_length)
    assert m._p.scores(ids).top_ids is not None  # the interpreter ranks: the merge is in use
    assert m.state.personal_words and m.state.phrase_weight > 0
    _check_against_full_vocabulary(m)


def test_a_personal_head_ranks_inside_the_interpreter_as_the_full_softmax_does(personal_float):
    m = personal_float
    with _head_change(m):
        ids = m.vocab.context_ids(["hi"], m.context_length)
        assert m._p.scores(ids).top_ids is not None
        assert m._p._ranker() not in (None, m._runtime)  # a flatbuffer copy with the personal head
        _check_against_full_vocabulary(m)


def test_an_int8_personal_head_ranks_inside_the_interpreter_near_the_host(personal):
    """int8 rounds the personal head as it rounds the version's: words nearly always agree, probabilities
    within the logits' quantization step."""
    m = personal
    with _head_change(m):
        assert m._p._ranker() not in (None, m._runtime)
        agree = 0
        for text in _contexts(m):
            m._suggester.clear()
            got = m.suggest(text, k=3)
            words, probs = _full_vocabulary_top(m, text, 3)
            agree += [s.word for s in got][:1] == words[:1]
            assert np.allclose([s.probability for s in got][:1], probs[:1], rtol=0.25), text
        assert agree >= 0.9 * len(_contexts(m))


def test_a_head_past_the_int8_ceiling_ranks_on_the_host(personal):
    """A personal word pushed past the range of the file's int8 logits would saturate (ties at the
    ceiling): the host computes every logit instead, and the ranking is the full softmax's."""
    m = personal
    m._suggester.clear()
    second = m.suggest("hi ")[1].word
    with _head_change(m, scale=0.0):  # no change but a bias far past the ceiling on one word
        m.state.delta_b[m.vocab.encode([second])[0]] += 2 * m._runtime.logit_ceiling + 50
        m._set_state(m.state)
        ids = m.vocab.context_ids(["hi"], m.context_length)
        assert m._p._ranker() not in (None, m._runtime)
        assert m._p.scores(ids).top_ids is None  # saturated in the interpreter: every logit on the host
        m._suggester.clear()
        assert second in [s.word for s in m.suggest("hi ", k=3)]
        _check_against_full_vocabulary(m)


def test_the_personal_copy_ranks_the_personal_words_and_reads_them_as_unk(personal_float):
    """The copy's ranking (top ids, sum of exps) runs on to the last personal word, and a personal word
    in the context reaches the body as ``<unk>``: the host adds nothing for them."""
    m = personal_float
    ranker, slots = m._p._ranker(), m._p._slot_ids
    start, end = m.vocab.word_ids[0], int(slots[-1]) + 1
    ids = m.vocab.context_ids(["hi"], m.context_length)
    got = ranker.invoke(ids[None])
    z = got.values[start:end].astype(np.float64)
    assert np.isclose(got.sum_exp, np.exp(z).sum(), rtol=1e-5)
    assert got.top_ids == (np.lexsort((np.arange(len(z)), -z))[: len(got.top_ids)] + start).tolist()
    as_slot, as_unk = ids.copy(), ids.copy()
    as_slot[-1], as_unk[-1] = slots[0], m.vocab.unk
    assert np.array_equal(ranker.invoke(as_slot[None]).values, ranker.invoke(as_unk[None]).values)


def test_a_forgotten_personal_word_leaves_a_free_slot_the_merge_never_offers(trained_files, tmp_path):
    """A free slot below the last personal word is in the copy's ranking: it is taken out of the total and
    the ranked words."""
    import dataclasses

    m = _learned(trained_files["none"], tmp_path)
    words = m.state.personal_words
    first = min(words, key=words.get)
    m._set_state(dataclasses.replace(m.state, personal_words={**words, "qwertzuiop": max(words.values()) + 1}))
    hole = words[first]
    m.forget_word(first)
    m.state.delta_b[hole] += 12.0  # a free slot the head would rank first: never offered, out of the total
    m._set_state(m.state)
    m._suggester.clear()
    m.suggest("hi ")
    assert m._p._holes.tolist() == [hole] and first not in m.state.personal_words
    assert m._p._ranker().invoke(m.vocab.context_ids(["hi"], m.context_length)[None]).top_ids[0] == hole
    _check_against_full_vocabulary(m)


def test_a_ranking_not_ending_at_the_first_slot_is_not_widened(trained_files):
    from edgekit.flatbuffer_head import FlatHeadError, rank_slots

    m = EdgeModel.load(trained_files["int8"], stateless=True, unsigned_local=True)
    slots = (m.vocab.first_slot + 1, len(m.vocab))
    with pytest.raises(FlatHeadError, match="first personal slot"):
        rank_slots(m.file.flatbuffer, m._runtime.io.logits, slots, len(m.vocab), m.vocab.unk)


def test_a_narrowed_ranking_is_the_versions_first_words(trained_files):
    """The personal copy's top-k keeps fewer words: the same first words, values and total as the version's.
    A k the file shares with another layer (the tiny model's) is left alone."""
    from edgekit.flatbuffer_head import FlatHeadError, narrow_ranking

    m = EdgeModel.load(stateless=True)  # the bundled int8-mixed file
    narrow = m._runtime.with_head(None, width=5)
    ids = m.vocab.context_ids(m.tokenizer.split_partial("see you at the ")[0], m.context_length)[None]
    wide, got = m._runtime.invoke(ids), narrow.invoke(ids)
    assert narrow.max_k == 5 and got.top_ids == wide.top_ids[:5]
    assert got.top_values == wide.top_values[:5] and got.sum_exp == wide.sum_exp
    with pytest.raises(FlatHeadError, match="wide|cannot rank"):
        narrow_ranking(narrow.file.flatbuffer, 6)
    tiny = EdgeModel.load(trained_files["none"], stateless=True, unsigned_local=True)
    with pytest.raises(FlatHeadError, match="shared"):
        narrow_ranking(tiny.file.flatbuffer, 5)


def test_the_merge_over_a_narrowed_ranking_is_the_full_softmax(tmp_path):
    """On the bundled file the personal copy ranks ``RANKING_WIDTH`` words; suggestions, fewer or more
    than it ranks, are still the full softmax's mixed with the phrase memory. (The head's change is left
    out: an int8 personal head rounds as the version's does, and only then are the two exact.)"""
    import dataclasses

    from benchmarks.bench_runtime import PERSONAL_TEXT
    from edgekit.head import Columns
    from edgekit.personal.predict import RANKING_WIDTH

    m = EdgeModel.load(state_dir=tmp_path)
    lines = PERSONAL_TEXT.read_text(encoding="utf-8").splitlines()
    m.personalize(lines[:300])
    st = m.state
    m._set_state(dataclasses.replace(st, delta_w=Columns.zeros(*st.delta_w.shape), delta_b=st.delta_b * 0))
    assert m.state.phrase_weight > 0 and m._p._ranker().max_k == RANKING_WIDTH
    for k in (3, RANKING_WIDTH + 2):
        for text in [" ".join(ln.split()[:n]) + " " for ln in lines[300:330] for n in (1, 3)]:
            m._suggester.clear()
            got = m.suggest(text, k=k)
            words, probs = _full_vocabulary_top(m, text, k)
            assert [s.word for s in got] == words, text
            assert np.allclose([s.probability for s in got], probs, rtol=1e-3, atol=1e-6), text
        # More words than it ranked: the copy is made again, wider, and the interpreter still ranks.
        assert m._p._ranker().max_k == max(RANKING_WIDTH, k + 3)
        assert m._p.scores(m.vocab.context_ids(["i"], m.context_length), k + 1).top_ids is not None


def test_the_merge_ranks_ties_lower_id_first():
    """int8 logits tie often; two words the memory holds equally then tie in the mixture too: the lower id
    first, as the full-vocabulary ranking does, whatever order the merge scored them in."""
    import math

    from edgekit.personal.predict import Predictor, _Parts, _View
    from edgekit.runtime import Scores

    logits = np.array([0, 0, 0, 0.5, 0, 0, 0, 5.0], np.float32)  # ids 0-2 never suggested
    own = Scores(logits, [7, 3, 4, 5, 6], [5.0, 0.5, 0.0, 0.0, 0.0], float(np.exp(logits[3:].astype(np.float64)).sum()))
    share, unigram = 0.5, {5: 0.4, 4: 0.4, 6: 0.2}  # 5 first in the memory's order
    view = _View(share, {}, share, [(5, share * 0.4), (4, share * 0.4), (6, share * 0.2)], 0.0)
    words, logs, _ = Predictor._merge(None, own, view, _Parts(slice(0, 3), unigram, [], True, None, {}), 2)
    full = np.exp(logits.astype(np.float64))
    mixed = {w: (1 - share) * full[w] / full.sum() + share * unigram.get(w, 0.0) for w in range(3, 8)}
    assert words == sorted(mixed, key=lambda w: (-mixed[w], w))[:2] == [7, 4]
    assert np.allclose([math.exp(v) for v in logs], [mixed[w] for w in words])


def test_narrowing_follows_the_top_k_through_either_operand_and_refuses_other_readers():
    """A graph that is not the converter's: the id offset added the other way round narrows all the same;
    an operator other than an elementwise one or the offset reading the top-k is refused (the personal
    copy then ranks as wide as the version: still right)."""
    import dataclasses

    from edgekit.flatbuffer_head import FlatHeadError, _builtin, _model, narrow_ranking
    from edgekit.flatbuffer_schema import BuiltinOperator
    from edgekit.runtime import Runtime

    m = EdgeModel.load(stateless=True)
    model = _model(m.file.flatbuffer)
    ops = [model.Subgraphs(0).Operators(i) for i in range(model.Subgraphs(0).OperatorsLength())]
    top = next(op for op in ops if _builtin(model, op) == BuiltinOperator.TOPK_V2)
    add = next(op for op in ops if _builtin(model, op) == BuiltinOperator.ADD and op.Inputs(0) == top.Outputs(1))
    mul = next(op for op in ops if _builtin(model, op) == BuiltinOperator.MUL)
    ids = m.vocab.context_ids(m.tokenizer.split_partial("see you at the ")[0], m.context_length)[None]

    swapped = bytearray(m.file.flatbuffer)
    at = add._tab.Vector(add._tab.Offset(6))  # the operator's inputs
    swapped[at : at + 8] = swapped[at + 4 : at + 8] + swapped[at : at + 4]
    narrow = Runtime(dataclasses.replace(m.file, flatbuffer=bytes(swapped)), m.vocab).with_head(None, width=5)
    assert narrow.max_k == 5 and narrow.invoke(ids).top_ids == m._runtime.invoke(ids).top_ids[:5]

    relabelled = bytearray(m.file.flatbuffer)
    at = add._tab.Pos + add._tab.Offset(4)  # the operator's code: the top-k's ids now go to a product
    relabelled[at : at + 4] = np.uint32(mul.OpcodeIndex()).tobytes()
    with pytest.raises(FlatHeadError, match="reads the top-k"):
        narrow_ranking(bytes(relabelled), 5)


def test_a_huge_logit_on_a_word_never_suggested_falls_back_to_the_full_softmax(personal_float):
    """``<unk>``'s logit past float64's exp range (a damaged or hostile head): the merge cannot total the
    softmax, and the scores come from the full softmax, which subtracts the largest logit first: three
    words, none of them a special token, and no ``OverflowError``."""
    m = personal_float
    with _head_change(m, scale=0.0):
        m.state.delta_b[m.vocab.unk] += 800.0
        m._set_state(m.state)
        dense = 0
        for text in _contexts(m):
            context = m.tokenizer.split_partial(text, keep=m.context_length)[0]
            if m._p.scores(m.vocab.context_ids(context, m.context_length)).top_ids is None:  # no merge: every id
                dense += 1
                m._suggester.clear()
                got = [s.word for s in m.suggest(text, k=3)]
                assert len(got) == 3 and all(m.vocab.is_word_id(i) for i in m.vocab.encode(got)), text
        assert dense  # the contexts the memory knows
