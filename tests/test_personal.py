"""What personalization may change: bounds on other text and new lines; listing and forgetting words (atomically); exports."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit.model import EdgeModel
from tests.fixtures.texts import base_lines, user_lines

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def tiny_int8(trained_files) -> Path:
    return trained_files["int8"]


@pytest.fixture
def learned(tiny_int8, tmp_path) -> EdgeModel:
    """A model that learned the user's text, "zorblax" (a word the model lacks) included."""
    m = EdgeModel.load(tiny_int8, state_dir=tmp_path / "state", unsigned_local=True)
    report = m.personalize(user_lines(300))
    assert report.adopted and "zorblax" in m.state.personal_words
    return m


def _holds(m: EdgeModel, word: str) -> dict:
    """Everywhere a word can live in the personal state."""
    wid = m.state.personal_words.get(word, m.vocab.ids.get(word))
    return {"slot": word in m.state.personal_words,
            "phrases": wid is not None and (wid in m.state.phrases.unigram or m.state.phrases.phrases_with(wid) > 0),
            "heldout": any(word in line for line in m.state.heldout),
            "delta": wid is not None and bool(m.state.delta_w.dense()[:, wid].any() or m.state.delta_b[wid]),
            "suggested": any(s.word == word for s in m.suggest("hi ", k=5))}


def test_words_lists_personal_words_with_counts(learned):
    words = learned.learned_words()
    zorblax = next(w for w in words if w.word == "zorblax")
    assert zorblax.count > 50 and zorblax.phrases > 0  # "hi zorblax" opens half the lines
    assert zorblax.slot == learned.state.personal_words["zorblax"]


def test_forget_word_removes_it_everywhere_and_survives_reload(learned):
    before = _holds(learned, "zorblax")
    assert before["slot"] and before["phrases"] and before["suggested"]
    assert learned.state.n_examples > 0
    learned.forget_word("Zorblax")  # matched as the tokenizer writes it
    for m in (learned, EdgeModel.load(learned.path, state_dir=learned.state_dir, unsigned_local=True)):
        assert not any(_holds(m, "zorblax").values())
        assert m.state.n_examples == 0 and m.state.contrib_w is None  # the pending contribution is gone
        assert "zorblax" not in [w.word for w in m.learned_words()]
    with pytest.raises(KeyError):
        learned.forget_word("zorblax")


def test_forget_a_model_word_resets_its_head_column_and_phrases(learned):
    word = next(w for w in ("w120", "w117", "w114") if _holds(learned, w)["phrases"])
    learned.forget_word(word)
    assert not any(_holds(learned, word).values())
    assert learned.state.personal_words  # other words stay


def test_forget_all_phrases_keeps_words_and_head(learned):
    words, delta = dict(learned.state.personal_words), learned.state.delta_w.copy()
    learned.forget_phrases()
    again = EdgeModel.load(learned.path, state_dir=learned.state_dir, unsigned_local=True)
    assert len(again.state.phrases) == 0 and again.state.phrases.n_phrases == 0
    assert again.state.personal_words == words and np.array_equal(again.state.delta_w.dense(), delta.dense())


def test_a_version_1_state_file_suggests_and_learns_as_it_did(learned):
    """A state saved before the head changes were kept by column (whole [F, V] arrays, format 1) loads to
    the same head and suggestions, learns on, and is saved by column."""
    path, texts = learned.state_file, [" ".join(line.split()[:2]) + " " for line in user_lines(30)]
    assert path is not None
    before = [learned.suggest(t) for t in texts]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {**json.loads(arrays.pop("meta").tobytes()), "format_version": 1}
    for key in ("delta", "contrib"):
        ids = arrays.pop(f"{key}_ids")
        dense = np.zeros((learned.feature_dim, len(learned.vocab)), np.float32)
        dense[:, ids] = arrays[f"{key}_w"]
        arrays[f"{key}_w"] = dense
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    old = EdgeModel.load(learned.path, state_dir=learned.state_dir, unsigned_local=True)
    assert np.array_equal(old.state.delta_w.ids, learned.state.delta_w.ids)
    assert np.array_equal(old.state.delta_w.values, learned.state.delta_w.values)
    assert [old.suggest(t) for t in texts] == before
    old.personalize(user_lines(40, seed=9))
    with np.load(path) as z:
        assert "delta_ids" in z.files and z["delta_w"].shape[1] == len(old.state.delta_w.ids)


# A process that forgets "zorblax" and is killed while the state file is written:
# HOLD ("replace" or "fsync_dir") blocks just before or just after the rename.
KILL_SCRIPT = """
import os, sys, time
import edgekit.atomic as atomic
from edgekit.model import EdgeModel
def hold(*a, **k):
    print("holding", flush=True)
    time.sleep(600)
if sys.argv[1] == "replace":
    atomic.os = type("os", (), {**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")}, "replace": hold})
else:
    atomic._fsync_dir = hold
m = EdgeModel.load(sys.argv[2], state_dir=sys.argv[3], unsigned_local=True)
m.forget_word("zorblax")
"""


@pytest.mark.parametrize("hold, forgotten", [("replace", False), ("fsync_dir", True)])
def test_a_kill_during_forget_leaves_the_state_before_or_after(learned, hold, forgotten):
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, hold, str(learned.path), str(learned.state_dir)],
                            stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == b"holding"
    finally:
        proc.kill()
        proc.wait()
    m = EdgeModel.load(learned.path, state_dir=learned.state_dir, unsigned_local=True)  # loads: never half-written
    assert _holds(m, "zorblax")["slot"] is not forgotten
    assert _holds(m, "zorblax")["phrases"] is not forgotten


def test_an_export_never_carries_a_personal_slot(learned):
    """The contribution's columns stop before the first slot: nothing a slot learned can be exported."""
    slot = learned.state.personal_words["zorblax"]
    assert learned.state.contrib_w is not None and learned.state.contrib_w.dense()[:, slot].any()
    w, b = learned.head_delta()
    first = learned.vocab.first_slot
    assert slot >= first and w.shape[1] == first and b.shape == (first,)
    assert np.array_equal(w, learned.state.contrib_w.dense()[:, :first])


def test_words_cli_lists_and_forgets(learned):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "edgekit.cli", *args, "-m", str(learned.path), "--unsigned-local",
                               "--state-dir", str(learned.state_dir)], capture_output=True, text=True, cwd=ROOT)

    listed = cli("words", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "zorblax" in [w["word"] for w in json.loads(listed.stdout)["words"]]
    assert cli("words", "forget", "zorblax").returncode == 0
    assert "zorblax" not in cli("words").stdout
    missing = cli("words", "forget", "zorblax")
    assert missing.returncode == 1 and "nothing forgotten" in missing.stderr
    assert cli("words", "forget").returncode == 2  # neither a word nor --all-phrases
    assert cli("words", "forget", "--all-phrases").returncode == 0
    assert json.loads(cli("words", "--json").stdout)["phrases"] == 0


def test_learning_one_domain_costs_another_at_most_a_point(tiny_int8, tmp_path):
    """After the user's style, top-3 on the base language's held-out text falls by at most 1 point."""
    m = EdgeModel.load(tiny_int8, state_dir=tmp_path, unsigned_local=True)
    other = base_lines(200, seed=9)
    before = m.evaluate(other).top3
    report = m.personalize(user_lines(300))
    assert report.adopted and report.after.top3 > report.before.top3 + 0.1
    assert m.evaluate(other).top3 >= before - 0.01


def test_lines_not_written_before_never_get_worse(tiny_int8, tmp_path):
    """A user who repeats a few messages: the held-out check scores the lines that are not repeats on their own."""
    m = EdgeModel.load(tiny_int8, state_dir=tmp_path, unsigned_local=True)
    repeats = user_lines(12, seed=3)
    text = [repeats[i % 12] if i % 4 else line for i, line in enumerate(user_lines(300, seed=4))]
    seen = set(text[:240])
    new = [ln for ln in text[240:] if ln not in seen]
    before = m.evaluate(new).top3
    report = m.personalize(text[:240])
    assert report.before_new is not None and report.after_new.top3 >= report.before_new.top3
    assert m.evaluate(new).top3 >= before


def test_learning_frees_the_interpreter_before_it_trains(tiny_int8, tmp_path, monkeypatch):
    """Training and scoring the options run no interpreter: a keyboard process peaks there, so the
    interpreter (its arena and packed weights) is gone by then, and made again when next asked."""
    import edgekit.personal.learner as learner

    m = EdgeModel.load(tiny_int8, state_dir=tmp_path / "state", unsigned_local=True)
    held: list[bool] = []
    train_head = learner.train_head

    def watched(*args, **kwargs):
        held.append(m._runtime._live is not None)
        return train_head(*args, **kwargs)

    monkeypatch.setattr(learner, "train_head", watched)
    m.personalize(user_lines(60), save=False)
    m.personalize(user_lines(60)[:10], save=False)
    assert held == [False, False]
