"""Hostile text (issue 15): bounded work on long lines, words and runs; suggest() linear in its input."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import EdgeModel, TrainConfig
from edgekit.personal.learner import read_lines
from edgekit.tokenizer import (
    MAX_LINE_CHARS,
    MAX_WORD_CHARS,
    UNK,
    Tokenizer,
    pieces,
    read_text_lines,
)

TOK = Tokenizer()


def cpu(fn, *args) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


@pytest.fixture(scope="module")
def model() -> EdgeModel:
    return EdgeModel.load(stateless=True)


def test_split_partial_refuses_keep_zero_instead_of_looping():
    with pytest.raises(ValueError, match="keep at least one"):
        TOK.split_partial("see you " * 100, keep=0)


@pytest.mark.parametrize("tail", ["", "''", "'a''", "1"])
def test_suggest_is_linear_in_a_trailing_run_of_letters(model, tail):
    """A 4,096-letter run ending in two apostrophes took 0.9 s (quadratic backtracking)."""
    text = "see you " + "a" * 4096 + tail
    model.suggest(text)
    assert cpu(model.suggest, text) < 0.05


def test_normalization_of_combining_marks_is_linear():
    marks = "\u0301\u0316" * 50_000  # 10.6 s per 100k characters once (canonical reordering is quadratic)
    assert cpu(TOK.normalize, marks) < 1.0
    assert TOK.normalize("a" + marks).startswith("\u00e1")  # still composed: a + acute


def test_long_words_are_unknown_and_lines_come_in_pieces():
    assert TOK.tokenize("hi " + "x" * (MAX_WORD_CHARS + 1) + " there") == ["hi", UNK, "there"]
    line = "see you at the cafe " * 15_000  # 300 KB, one line
    out = list(TOK.iter_lines([line]))
    assert len(out) >= len(line) // MAX_LINE_CHARS
    assert all(len(t) <= MAX_LINE_CHARS // 2 for t in out)
    assert sum(len(t) - 2 for t in out) == 5 * 15_000  # no word lost or split at a cut (cuts are before spaces)


@given(st.text(alphabet="ab \t.\u0301", max_size=300), st.integers(1, 40))
def test_pieces_cover_the_text_in_bounded_parts(text, size):
    parts = list(pieces(text, size))
    assert "".join(parts) == text and all(len(p) <= size for p in parts)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), k=st.integers(0, 5))
def test_suggest_takes_any_text(model, text, k):
    out = model.suggest(text, k)
    assert len(out) <= k and all(0.0 <= s.probability <= 1.0 for s in out)


def test_read_lines_bounds_lines_and_tokens():
    texts = ["w"] * 100  # three tokens a line: <s> w </s>
    assert len(read_lines(TOK, texts, TrainConfig(max_lines=10))) == 10
    assert len(read_lines(TOK, texts, TrainConfig(max_tokens=31))) == 10


def test_one_long_line_is_learned_from(model):
    """One long line was "not enough text" (a line is held out or not, as a whole); its pieces are lines."""
    line = ("see you " + "q" * 40 + " ") * 900 + "x" * 5000 + " zorblax" * 3  # 49 KB, few examples: quick
    t0 = time.process_time()
    result = model.personalize(line, TrainConfig(epochs=1, min_steps=1), save=False)
    assert result.heldout_examples > 0 and result.train_examples > result.heldout_examples
    assert all(len(w) <= 32 for w in model.state.personal_words)  # the 5,000-letter word is not one
    assert time.process_time() - t0 < 60


def test_the_non_utf8_message_names_the_right_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"fine line\n" * 100 + b"bad \xff byte\n" + b"more\n" * 10)
    with pytest.raises(ValueError, match=r"bad byte 0xff on line 101"):
        list(read_text_lines(path))


def test_unreadable_text_files_are_edgekit_errors_naming_the_file(model, tmp_path):
    """An app that catches EdgekitError (the README's promise) also catches a missing or non-UTF-8 text file."""
    from pathlib import Path

    from edgekit import EdgekitError, TextFileError

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    learned = len(model.state.history)
    for path, problem in ((tmp_path / "nope.txt", "no such text file"), (bad, "not UTF-8"),
                          (tmp_path, "a folder")):
        with pytest.raises(EdgekitError, match=problem) as caught:
            model.personalize(Path(path), save=False)
        assert isinstance(caught.value, TextFileError) and str(path) in str(caught.value)
    assert len(model.state.history) == learned  # nothing was learned or changed
