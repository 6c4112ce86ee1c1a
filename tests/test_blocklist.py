"""The blocked-words filter (by default edgekit's profanity list) on suggestions and completions."""
from __future__ import annotations

import pytest

from edgekit import EdgeModel
from edgekit.blocklist import PROFANITY
from edgekit.model import default_model_path


@pytest.fixture()
def model(trained_files) -> EdgeModel:
    m = EdgeModel.load(trained_files["int8"], stateless=True, unsigned_local=True)
    m.blocked_words = ()
    return m


def test_profanity_is_blocked_by_default_and_matches_the_bundled_vocabulary():
    m = EdgeModel.load(default_model_path(), stateless=True)
    assert m.blocked_words == PROFANITY
    assert all(w == w.lower() and " " not in w for w in PROFANITY)
    in_vocab = [w for w in PROFANITY if w in m.vocab.ids]
    assert len(in_vocab) >= 10, in_vocab  # the list is spelled the way the tokenizer writes words


def test_blocked_words_leave_next_words_and_keep_the_others_probabilities(model):
    free = model.suggest("", k=6)
    model.blocked_words = {free[0].word, free[2].word.upper()}  # case does not matter
    assert model.suggest("", k=3) == [free[1], free[3], free[4]]


def test_blocking_past_the_interpreter_ranking_ranks_on_the_host(model):
    width = model.max_k
    free = model.suggest("", k=width)
    model.blocked_words = {free[0].word}
    got = model.suggest("", k=width)
    assert len(got) == width and free[0].word not in [s.word for s in got]
    assert [s.word for s in got[:width - 1]] == [s.word for s in free[1:]]


def test_blocked_words_leave_completions(model):
    free = model.suggest("", k=1)[0].word
    prefix = free[:1]
    before = model.suggest(prefix, k=5)
    model.blocked_words = {before[0].word}
    after = model.suggest(prefix, k=5)
    assert before[0].word not in [s.word for s in after]
    assert after[0].word == before[1].word  # (the next places may hold ties: equal probabilities, either order)
    # renormalized over the completions left, in the same proportions
    assert after[0].probability / after[1].probability == pytest.approx(before[1].probability / before[2].probability)
    assert after[0].probability > before[1].probability


def test_one_string_is_refused(model):
    with pytest.raises(TypeError, match="collection of words"):
        model.blocked_words = "damn"


def test_a_blocked_personal_word_is_not_suggested(trained_files, tmp_path):
    from tests.fixtures.texts import user_lines

    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path, unsigned_local=True)
    m.blocked_words = {"zorblax"}  # before it has a slot: blocked once it gets one
    assert m.personalize(user_lines(300)).adopted and "zorblax" in m.state.personal_words
    assert "zorblax" not in [s.word for s in m.suggest("hi zo", k=3) + m.suggest("hi ", k=m.max_k)]
    m.blocked_words = ()
    assert m.suggest("hi zo", k=1)[0].word == "zorblax"


def test_the_cli_leaves_profanity_out_unless_allowed(tmp_path):
    """On the bundled model, "holy " is followed by words of the list; `suggest` offers them only when allowed."""
    import json

    from click.testing import CliRunner

    from edgekit.cli import main

    def cli(*flags: str) -> list[str]:
        args = ["suggest", "holy ", "-k", "5", "--json", "--state-dir", str(tmp_path), *flags]
        out = CliRunner().invoke(main, args, catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return [s["word"] for s in json.loads(out.output)]

    allowed = cli("--allow-profanity")
    assert set(allowed) & PROFANITY  # the bundled model learned them from unfiltered chat text
    filtered = cli()
    assert not set(filtered) & PROFANITY and len(filtered) == 5
    assert [w for w in allowed if w not in PROFANITY] == filtered[:len(allowed) - len(set(allowed) & PROFANITY)]
