"""The options one personalization tries, and how they are scored together."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.personal import train
from edgekit.personal.learner import HEAD_STEPS, PHRASE_WEIGHTS, option_set
from edgekit.personal.phrases import PhraseMemory
from edgekit.personal.rows import CHUNK, TEACHER_SCALE, Rows, Teacher, expected_top
from edgekit.personal.train import Option, TrainConfig, anchor_scores, for_small_text, score_options

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


def _dense(rows: Rows, option: Option, columns: np.ndarray):
    """Per chunk: (its first row, rows, the option's mixture over every candidate, the others' best three)."""
    head, memory, share = option
    for start in range(0, len(rows), CHUNK):
        sl = slice(start, start + CHUNK)
        r = rows.take(sl)
        p, rest = train._neural(r, head)
        lam = np.zeros(len(r), np.float32) if share is None else share[sl]
        m = np.zeros_like(p) if memory is None else memory.probs_columns(r.contexts, columns)
        yield start, r, (m - p) * lam[:, None] + p, (1 - lam)[:, None] * rest


def _dense_scores(rows: Rows, option: Option, groups: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """What ``score_options`` must give: each row's target ranked column by column (ties to the lower id,
    an outside word ahead on a tie)."""
    out = np.zeros((len(groups), 3))
    for start, r, mixed, rest in _dense(rows, option, columns):
        for j in range(len(r)):
            t = mixed[j, r.targets[j]]
            ahead = sum(v > t or (v == t and columns[c] < columns[r.targets[j]]) for c, v in enumerate(mixed[j]))
            ahead += int((rest[j] >= t).sum())
            out += groups[:, start + j, None] * np.array([ahead < 1, ahead < 3, -np.log(max(t, 1e-12))])
    return out / np.maximum(groups.sum(axis=1), 1)[:, None]


def test_a_word_neither_list_holds_still_counts_ahead(monkeypatch):
    """Two lists of two can be as long as four columns and still miss one: it must count."""
    monkeypatch.setattr(train, "TOP", 2)
    p = np.array([[0.4, 0.3, 0.2, 0.1]], np.float32)
    m = np.array([[0.5, 0.5, 0.0, 0.0]], np.float32)
    listed = train._Listed(train._Ranked(p, np.zeros((1, 3), np.float32)), train._Ranked(m, None))
    ahead, _ = listed.ahead(np.array([3]), np.arange(4), np.array([[0.0], [0.5]], np.float32))
    assert ahead.tolist() == [[3], [3]]


def _dense_anchor(rows: Rows, teacher: Teacher, option: Option, columns: np.ndarray) -> np.ndarray:
    """What ``anchor_scores`` must give: each row's best three over every candidate and the others' three."""
    return sum((expected_top(mixed, rest, teacher.take(slice(start, start + len(r)))).sum(axis=0)
                for start, r, mixed, rest in _dense(rows, option, columns)), np.zeros(2)) / len(rows)


@pytest.mark.parametrize(("top", "words"), [(1, 35), (2, 35), (8, 35), (8, 12), (8, 6)])
def test_options_are_ranked_as_over_every_candidate(monkeypatch, top, words):
    """Options are ranked from each head's and memory's few best columns: the counts (and the best three
    on anchor text) must be those of the whole mixture, ties included (columns with equal weights tie
    under a head; the memory's unigram ties many), also when few columns are listed and most rows need
    the whole row, and when both lists together are longer than the columns but miss some."""
    monkeypatch.setattr(train, "TOP", top)
    rng = np.random.default_rng(1)
    columns = np.arange(5, 5 + words)
    rows = _rows(rng, columns)
    memory = PhraseMemory(V, skip_ids=range(5))
    for _ in range(100):
        memory.add([2, *rng.integers(5, 12, 5).tolist()])
    w = rng.normal(0, 1, (F, len(columns))).astype(np.float32)
    w[:, words // 2 :] = w[:, : words - words // 2]  # equal columns: equal probabilities
    heads = [(w, np.zeros(len(columns), np.float32)), (w * 0.5, rng.normal(0, 1, len(columns)).astype(np.float32))]
    options = [Option(heads[0], None, None)] + [
        Option(h, memory, np.where(rng.random(N) < 0.7, rng.random(N) * s, 0.0).astype(np.float32))
        for h in heads for s in (0.0, 0.5, 0.95)]
    groups = np.stack([np.ones(N, bool), rng.random(N) < 0.5])
    got = score_options(rows, options, groups, columns)
    want = np.stack([_dense_scores(rows, o, groups, columns) for o in options])
    np.testing.assert_array_equal(got[..., :2], want[..., :2])
    np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=1e-12)
    taught = rng.dirichlet(np.ones(len(columns) + 3), N).astype(np.float32)
    teacher = Teacher((taught[:, :-3] * TEACHER_SCALE).astype(np.float16), taught[:, -3:], np.zeros((N, 2)))
    every = anchor_scores(rows, teacher, options, columns)
    np.testing.assert_array_equal(every, np.stack([_dense_anchor(rows, teacher, o, columns) for o in options]))
    np.testing.assert_array_equal(anchor_scores(rows, teacher, options[2:5], columns), every[2:5])  # a few asked


def test_option_set_steps_part_of_the_way_to_the_trained_head():
    current = (np.zeros((2, 3)), np.zeros(3))
    trained = (np.ones((2, 3)), np.full(3, 2.0))
    options = option_set(current, trained)
    assert len(options) == (1 + len(HEAD_STEPS)) * len(PHRASE_WEIGHTS)
    steps = sorted({float(h[1][0]) / 2 for h, _ in options})
    assert steps == [0.0, *sorted(HEAD_STEPS)] and 0 < min(HEAD_STEPS) < 1 and max(HEAD_STEPS) == 1.0
    assert {w for _, w in options} == set(PHRASE_WEIGHTS)
    assert any(h is current for h, _ in options) and any(h is trained for h, _ in options)


def test_a_small_text_trains_half_the_minimum_steps_at_twice_the_rate():
    """A few lines' epochs give fewer than ``min_steps`` steps: half of them (or the epochs' own, if more),
    at twice the rate. A text whose epochs give enough keeps its configuration."""
    cfg = TrainConfig(epochs=4, min_steps=150, batch_size=256, learning_rate=3e-3)
    few = for_small_text(cfg, 564)  # 3 steps an epoch: 12
    assert (few.min_steps, few.learning_rate, few.epochs) == (75, 6e-3, 4)
    two = TrainConfig(epochs=2, min_steps=150)
    assert for_small_text(two, 50 * 256).min_steps == 100  # the 2 epochs asked for: 100 steps
    assert for_small_text(cfg, 38 * 256) is cfg  # 152 steps


def test_held_out_loss_is_read_only_to_compare_epochs(monkeypatch):
    """A run whose only checked epoch is its last has nothing to compare that loss with: it is not computed
    (nor its rows made), and the weights are those trained without held-out rows. Longer runs still check
    every epoch, their rows made once."""
    rng = np.random.default_rng(0)
    columns = np.arange(5, V)
    rows = _rows(rng, columns)
    w0, b0 = np.zeros((F, len(columns)), np.float32), np.zeros(len(columns), np.float32)
    calls = []
    loss = train.heldout_loss
    monkeypatch.setattr(train, "heldout_loss", lambda *a: (calls.append(1), loss(*a))[1])
    cfg = TrainConfig(epochs=1, min_steps=0, batch_size=64)
    alone = train.train_head(rows.features, rows.targets, w0, b0, cfg, rest_lse=rows.rest_lse)
    made = []

    def held():
        made.append(1)
        return rows

    checked = train.train_head(rows.features, rows.targets, w0, b0, cfg, rest_lse=rows.rest_lse, heldout=held)
    assert not calls and not made and all(np.array_equal(a, b) for a, b in zip(alone, checked, strict=True))
    train.train_head(rows.features, rows.targets, w0, b0, TrainConfig(epochs=3, min_steps=0, batch_size=64),
                     rest_lse=rows.rest_lse, heldout=held)
    assert len(calls) >= 2 and made == [1]
