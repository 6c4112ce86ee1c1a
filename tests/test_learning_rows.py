"""What learning reads from the interpreter: each row's statistics over the other words, the version's
teacher on anchor text, whatever the size of the passes that read them."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.model import EdgeModel
from edgekit.personal import anchor, rows
from edgekit.personal.rows import TEACHER_SCALE, Scored, Teacher, best_of, candidate_rows, expected_top
from tests.fixtures.texts import user_lines

_draw = anchor._draw


@pytest.fixture
def model(trained_files, tmp_path) -> EdgeModel:
    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path, unsigned_local=True)
    m.personalize(user_lines(200))  # a head that differs from the version's: rows read the current one
    return m


def _contexts(m: EdgeModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low, high = m.vocab.word_ids
    ctx = rng.integers(low, high, (n, m.context_length)).astype(np.int32)
    return ctx, rng.integers(low, high, n)


def test_rows_hold_the_other_words_share_and_best_three(model):
    """rest_lse and rest_top are the log-sum-exp and the best three logits of the words outside the columns."""
    m = model
    ctx, targets = _contexts(m, 70)
    words = m.vocab.suggestable_mask()
    columns = np.unique(targets)
    got = candidate_rows(m._p.features_scores, ctx, targets, columns, words)
    scored = m._p.features_scores(ctx)
    logits = m._p.head.logits(scored.features, scored.logits)
    other = words.copy()
    other[columns] = False
    z = logits[:, other].astype(np.float64)
    np.testing.assert_allclose(got.rest_lse, np.log(np.exp(z).sum(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(np.sort(got.rest_top, axis=1), np.sort(z, axis=1)[:, -3:], rtol=1e-6, atol=1e-5)
    assert np.array_equal(columns[got.targets], targets)


def test_rows_are_the_same_whatever_the_passes(model, monkeypatch):
    """Reading 7 contexts a pass gives what reading them all at once does (the pass size is memory, not meaning)."""
    m = model
    ctx, targets = _contexts(m, 50, seed=1)
    columns = np.unique(targets)
    words = m.vocab.suggestable_mask()
    whole = candidate_rows(m._p.features_scores, ctx, targets, columns, words)
    an, teacher = anchor.anchor_rows(m._p.features_scores, m.vocab, m.context_length, columns, 300)
    monkeypatch.setattr(rows, "READ", 7)
    monkeypatch.setattr(anchor, "READ", 7)
    pieces = candidate_rows(m._p.features_scores, ctx, targets, columns, words)
    an7, teacher7 = anchor.anchor_rows(m._p.features_scores, m.vocab, m.context_length, columns, 300)
    # Equal up to float rounding: the personal head's host logits are a matrix product, whose
    # rounding depends on how many rows it multiplies at once.
    for a, b in ((whole, pieces), (an, an7), (teacher, teacher7)):
        assert all(np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b, strict=True))
    assert len(an) == 512  # whole steps of the 256 sentences written side by side


def test_a_repeated_context_is_read_once(model):
    """A context the text holds several times (or several anchor sentences share) is read once, and
    every row with it gets that read's statistics: the same rows as reading it alone."""
    m = model
    ctx, targets = _contexts(m, 20, seed=3)
    columns, words = np.unique(targets), m.vocab.suggestable_mask()
    read: list[int] = []

    def score(ids: np.ndarray) -> Scored:
        read.append(len(ids))
        return m._p.features_scores(ids)

    twice = candidate_rows(score, np.concatenate([ctx, ctx[::-1]]), np.concatenate([targets, targets[::-1]]),
                           columns, words)
    assert sum(read) == 20
    once = candidate_rows(m._p.features_scores, ctx, targets, columns, words)
    for first, second, alone in zip(twice.take(slice(0, 20)), twice.take(slice(39, 19, -1)), once, strict=True):
        assert np.array_equal(first, second)
        np.testing.assert_allclose(first, alone, rtol=1e-5, atol=1e-6)  # host logits: rounding may differ

    read.clear()
    an, teacher = anchor.anchor_rows(score, m.vocab, m.context_length, columns, 512)
    assert sum(read) == len(teacher.columns) < len(an) - anchor.SENTENCES  # every first context is one
    same = np.flatnonzero((an.contexts == an.contexts[0]).all(axis=1))
    assert len(same) >= anchor.SENTENCES and len(set(teacher.at[same].tolist())) == 1
    assert (teacher.probs(same) == teacher.probs(same[:1])).all() and (an.features[same] == an.features[0]).all()


@pytest.mark.parametrize("high", [3, 10_069, 1 << 16, 1 << 20])
def test_unique_rows_are_numpys_in_numpys_order(high):
    """The distinct contexts in np.unique's order (which decides the interpreter's passes), ids past 2^16
    and odd context lengths included; no rows, no distinct rows."""
    rng = np.random.default_rng(high)
    for t in (16, 5):
        base = rng.integers(0, high, (300, t)).astype(np.int32)
        contexts = base[rng.integers(0, 300, 700)]
        unique, index = np.unique(contexts, axis=0, return_inverse=True)
        got = rows.unique_rows(contexts)
        assert np.array_equal(got[0], unique) and np.array_equal(got[1], index.reshape(-1))
    empty = rows.unique_rows(np.zeros((0, 16), np.int32))
    assert empty[0].shape == (0, 16) and not len(empty[1])


def test_teacher_is_the_versions_softmax(model):
    """Teacher probabilities of the candidates (float16, scaled) match the version's softmax to 1e-3, small ones too."""
    m = model
    ctx, targets = _contexts(m, 10, seed=2)
    columns = np.unique(targets)
    an, teacher = anchor.anchor_rows(m._p.features_scores, m.vocab, m.context_length, columns, 256)
    base = m._p.features_scores(an.contexts).base_logits
    z = np.where(m.vocab.suggestable_mask(), base.astype(np.float64), -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert teacher.columns.dtype == np.float16
    np.testing.assert_allclose(teacher.probs(), p[:, columns], rtol=1e-3, atol=1e-9)
    best = np.sort(p, axis=1)[:, ::-1]
    np.testing.assert_allclose(teacher.top, np.stack([best[:, 0], best[:, :3].sum(axis=1)], 1), rtol=1e-5)


def test_anchor_contexts_drawn_once_serve_the_next_learning(model, monkeypatch):
    """The second learning in a process reads the contexts the first drew (a shorter text their first
    steps) and gets the same rows; another seed, or the version's distribution changed, draws anew."""
    m = model
    columns = np.unique(_contexts(m, 10, seed=2)[1])
    args = (m.vocab, m.context_length, columns)
    monkeypatch.setattr(anchor, "_DRAWN", {})
    first = anchor.anchor_rows(m._p.features_scores, *args, 512)
    draws = []
    monkeypatch.setattr(anchor, "_draw", lambda *a: (draws.append(1), _draw(*a))[1])
    again = anchor.anchor_rows(m._p.features_scores, *args, 256)
    assert not draws
    assert np.array_equal(again[0].contexts, first[0].contexts[:256])
    assert np.array_equal(again[0].features, first[0].features[:256])
    assert np.array_equal(again[1].probs(), first[1].probs(slice(0, 256)))
    anchor.anchor_rows(m._p.features_scores, *args, 256, seed=1)
    assert draws

    def shifted(ids):  # another version: its logits differ
        scored = m._p.features_scores(ids)
        base = scored.base_logits
        return scored._replace(base_logits=base + np.linspace(0, 1, base.shape[1], dtype=np.float32))

    draws.clear()
    anchor.anchor_rows(m._p.features_scores, *args, 256)  # seed 0 again: drawn again after seed 1's
    anchor.anchor_rows(shifted, *args, 256)
    assert len(draws) == 2  # one step each, its sentences all at their first context: one read


def test_teacher_probs_read_back_what_was_stored():
    """Every stored float16, float16's subnormals included, reads back as numpy's own cast would give it."""
    p = np.array([[1.0, 0.5, 1e-5, 3e-9, 1e-11, 0.0]], np.float32)
    stored = (p * TEACHER_SCALE).astype(np.float16)
    t = Teacher(stored, np.zeros((1, 3)), np.zeros((1, 2)))
    assert np.array_equal(t.probs(), stored.astype(np.float32) / TEACHER_SCALE) and t.probs().dtype == np.float32
    np.testing.assert_allclose(t.probs()[0, :4], p[0, :4], rtol=1e-3)


def test_expected_top_reads_the_teachers_mass_where_an_option_ranks_first_to_third():
    """The other words' best three can rank among an option's top three; their mass counts then."""
    rng = np.random.default_rng(0)
    p, rest = rng.random((50, 40)).astype(np.float32), rng.random((50, 3)).astype(np.float32)
    softmax = rng.dirichlet(np.ones(43), 50).astype(np.float32)  # the version's, over 40 candidates and 3 others
    taught, rest_mass = softmax[:, :40], softmax[:, 40:]
    t = Teacher((taught * TEACHER_SCALE).astype(np.float16), rest_mass, np.zeros((50, 2)))
    scores, mass = np.concatenate([p, rest], 1), np.concatenate([t.probs(), rest_mass], 1)
    order = np.argsort(-scores, axis=1)[:, :3]
    expected = np.stack([mass[np.arange(50), order[:, 0]], np.take_along_axis(mass, order, 1).sum(axis=1)], 1)
    assert (order >= 40).any()  # some rows rank another word in their top three
    np.testing.assert_allclose(expected_top(p, rest, t), expected, rtol=1e-6)


def test_best_three_finds_the_largest_and_leaves_the_row_alone():
    z = np.array([[0.0, 5.0, -np.inf, 3.0, 4.0], [1.0, -np.inf, -np.inf, -np.inf, 2.0]], np.float32)
    before = z.copy()
    ids, values = best_of(z)
    assert ids[0].tolist() == [1, 4, 3] and values[0].tolist() == [5, 4, 3]
    assert ids[1, :2].tolist() == [4, 0] and values[1].tolist() == [2, 1, -np.inf]  # fewer than three finite
    assert np.array_equal(z, before)


def test_a_few_new_lines_get_the_quick_anchor_check(model, monkeypatch):
    """The anchor text's size follows the new text, not the kept held-out lines of earlier learning."""
    from edgekit.personal import learner

    asked = []

    def recording(*args, **kwargs):
        asked.append(args[4])
        return anchor.anchor_rows(*args, **kwargs)

    model.personalize(user_lines(800, seed=4))
    assert sum(map(len, model.state.heldout)) > anchor.ANCHOR_ROWS // 4  # more than a quick check's worth
    monkeypatch.setattr(learner, "anchor_rows", recording)
    model.personalize(user_lines(3, seed=5))
    assert asked == [anchor.ANCHOR_ROWS // 4]


def test_anchor_words_are_drawn_from_the_versions_softmax_over_allowed_ids():
    """Frequencies match the softmax over the allowed ids; a masked id never comes, however likely. (All
    the sentences share one context, hence one row of logits, as every anchor sentence's first does.)"""
    from edgekit.personal.rows import minus_inf

    v = 401
    rng = np.random.default_rng(0)
    logits = np.full((1, v), -5.0, np.float32)
    chosen = np.array([0, 127, 128, 261, v - 1])
    logits[:, chosen] = [1.0, 0.0, 2.0, 0.5, 1.5]
    allowed = np.zeros(v, bool)
    allowed[chosen] = True
    allowed[7] = True  # allowed but unlikely
    logits[:, 3] = 50.0  # likely but not allowed
    drawn = anchor._draw(rng.random((20_000, 1)), minus_inf(allowed), logits, np.zeros(20_000, np.int64))
    assert set(np.unique(drawn)) <= set(np.flatnonzero(allowed))
    z = logits[0, allowed].astype(np.float64)
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    got = np.array([(drawn == i).mean() for i in np.flatnonzero(allowed)])
    np.testing.assert_allclose(got, want, atol=0.01)


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_anchor_words_are_where_each_rows_own_float32_running_sum_passes_the_draw(n):
    """Rows summed two at a time draw what each row's sequential float32 sum and a search in it draw,
    however many rows (odd counts too) and whichever rows the sentences read."""
    from edgekit.personal.rows import minus_inf

    rng = np.random.default_rng(n)
    logits = (rng.standard_normal((n, 3001)) * rng.uniform(0.5, 8, (n, 1))).astype(np.float32)
    allowed = minus_inf(rng.random(3001) < 0.9)
    which, draws = rng.integers(0, n, 40), rng.random((40, 1))
    z = np.exp((logits + allowed) - (logits + allowed).max(axis=1, keepdims=True))
    cum = np.cumsum(z, axis=1)
    want = [np.searchsorted(cum[w], d * cum[w, -1]) for w, d in zip(which, draws[:, 0], strict=True)]
    assert _draw(draws, allowed, logits, which).tolist() == want


def test_a_few_new_lines_train_half_the_minimum_steps_at_twice_the_rate(model, monkeypatch):
    from edgekit.personal import learner

    used, train = [], learner.train_head
    monkeypatch.setattr(learner, "train_head", lambda *a, **k: (used.append(a[4]), train(*a, **k))[1])
    model.personalize(user_lines(3, seed=5), save=False)
    default = learner.TrainConfig()
    assert [(c.min_steps, c.learning_rate) for c in used] == [(default.min_steps // 2, 2 * default.learning_rate)]


def test_examples_are_the_windows_evaluation_reads(model):
    """Learning reads every line's windows at once: the same contexts, targets and lines as ``iter_windows``
    one window at a time (targets that are words only), for lines of one token, none, or unknown words."""
    from edgekit.metrics import iter_windows
    from edgekit.personal.learner import Learner

    m = model
    lines = list(m.tokenizer.iter_lines(user_lines(60, seed=3))) + [["<s>"], [], ["<s>", "zzqx", "zzqx", "</s>"]]
    lines = [lines[i] for i in np.random.default_rng(0).permutation(len(lines))]
    want = [(w.context, w.target, i) for i, ln in enumerate(lines)
            for w in iter_windows([ln], m.vocab, m.context_length) if m.vocab.is_word_id(w.target)]
    learner = Learner(m.vocab, m.context_length, m._p.features_scores, m.head, m.base_head, m.state)
    contexts, targets, line_of = learner._examples(lines)
    assert contexts.dtype == np.int32 and len(want) > 100
    assert np.array_equal(contexts, np.stack([c for c, _, _ in want]))
    assert targets.tolist() == [t for _, t, _ in want] and line_of.tolist() == [i for _, _, i in want]
    assert learner._examples([])[0].shape == (0, m.context_length)


def test_narrowed_rows_count_the_dropped_candidates_in_the_rest():
    """Over fewer candidates, the dropped ones' logits under the head join the other words' log-sum-exp."""
    rng = np.random.default_rng(0)
    n, f, c = 100, 6, 9
    features = rng.normal(size=(n, f)).astype(np.float32)
    head = (rng.normal(size=(f, c)).astype(np.float32), rng.normal(size=c).astype(np.float32))
    keep = np.array([1, 4, 5, 8])
    r = rows.Rows(features, np.zeros((n, 3), np.int32), rng.choice(keep, n), rng.normal(size=n).astype(np.float32),
                  None)
    got = rows.narrowed(r, head, keep)
    dropped = (features @ head[0] + head[1])[:, np.setdiff1d(np.arange(c), keep)].astype(np.float64)
    want = np.log(np.exp(r.rest_lse.astype(np.float64)) + np.exp(dropped).sum(axis=1))
    np.testing.assert_allclose(got.rest_lse, want, rtol=1e-5)
    assert np.array_equal(keep[got.targets], r.targets) and got.features is features


def test_a_later_learning_trains_the_words_of_its_text_and_held_out_text_only(model, monkeypatch):
    """Candidates that only an earlier text trained (there for the phrase memory) keep their weights;
    the rest train."""
    from edgekit.personal import learner

    seen, train = [], learner.Learner._train

    def spy(self, tr, held, an, teacher, current, columns, words, cfg, progress):
        out = train(self, tr, held, an, teacher, current, columns, words, cfg, progress)
        seen.append((np.isin(columns, words), current, out))
        return out

    monkeypatch.setattr(learner.Learner, "_train", spy)
    monkeypatch.setattr(learner, "COMMON_WORDS", 8)  # the test model's vocabulary is hardly more than 512 words
    model.personalize(["hi zorblax w60 w63.", "w66 w69 hi."] * 3, save=False)
    (kept, (w0, b0), (w, b)), = seen
    assert 0 < kept.sum() < len(kept)
    assert np.array_equal(w[:, ~kept], w0[:, ~kept]) and np.array_equal(b[~kept], b0[~kept])
    assert not np.array_equal(w[:, kept], w0[:, kept])


def test_the_learners_windows_are_the_evaluations(trained_files):
    """``Learner._examples`` cuts every line's windows at once: the same contexts and targets as
    ``metrics.iter_windows`` one window at a time (words only), and the line each comes from."""
    from edgekit.metrics import iter_windows
    from edgekit.personal.learner import Learner

    m = EdgeModel.load(trained_files["int8"], stateless=True, unsigned_local=True)
    lines = list(m.tokenizer.iter_lines(user_lines(30) + ["", "w3", "w3 w4 <num> w5 zzunknown w6"]))
    learner = Learner(m.vocab, m.context_length, m._p.features_scores, m._p.head, m.state)
    contexts, targets, line_of = learner._examples(lines)
    want = [(w.context, w.target, i) for i, ln in enumerate(lines)
            for w in iter_windows([ln], m.vocab, m.context_length) if m.vocab.is_word_id(w.target)]
    assert len(want) == len(targets) > 0
    assert np.array_equal(contexts, np.stack([c for c, _, _ in want]))
    assert np.array_equal(targets, [t for _, t, _ in want]) and np.array_equal(line_of, [i for _, _, i in want])
