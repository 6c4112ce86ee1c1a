"""The typing journal (edgekit.journal) with the bundled model: each sent line is learned once."""
from __future__ import annotations

import os
import stat

import pytest

from edgekit.journal import Journal
from edgekit.model import EdgeModel

CAFE = [
    "meet at the zorbly cafe at noon", "the zorbly cafe has the best coffee",
    "running late, save me a seat at the zorbly cafe", "see you at the zorbly cafe tomorrow",
    "are you coming to the zorbly cafe tonight", "i left my umbrella at the zorbly cafe",
    "lunch at the zorbly cafe again?", "the zorbly cafe is closed on monday",
]
# Common words only, none of them new: how many examples they make does not depend on what was learned before.
STATION = [
    "see you at the station tomorrow", "i am on the train now", "running late, be there soon",
    "call me when you get home", "see you at the station at six",
]


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    """Never the real home: any state the code finds on its own goes to the test's folder."""
    monkeypatch.setenv("EDGEKIT_STATE_DIR", str(tmp_path / "env-state"))


@pytest.fixture
def model(tmp_path):
    return EdgeModel.load(state_dir=tmp_path / "state")


def write_all(journal: Journal, lines: list[str]) -> None:
    for line in lines:
        assert journal.append(line)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_learns_the_journal_once(tmp_path, model):
    journal = Journal(tmp_path / "app" / "sent.txt")  # parent folders are created
    write_all(journal, CAFE)
    report = journal.learn(model)
    assert report.adopted and "zorbly" in report.new_personal_words
    assert journal.mark_path.read_text() == str(len(CAFE))
    assert journal.learn(model) is None and journal.pending() == 0
    if os.name == "posix":
        assert mode(journal.path) == 0o600 and mode(journal.mark_path) == 0o600


def test_next_learning_takes_only_the_new_lines(tmp_path, model):
    journal = Journal(tmp_path / "sent.txt")
    write_all(journal, CAFE)
    journal.learn(model)
    write_all(journal, STATION)
    assert journal.pending() == len(STATION)
    before = model.n_examples
    report = journal.learn(model)
    only_new = EdgeModel.load(state_dir=tmp_path / "fresh").personalize(STATION)
    assert report.train_examples == only_new.train_examples
    assert report.heldout_examples > only_new.heldout_examples  # earlier held-out lines judge too
    assert model.n_examples - before == only_new.train_examples
    assert journal.mark_path.read_text() == str(len(CAFE) + len(STATION))


def test_too_little_text_leaves_the_lines_for_later(tmp_path, model):
    journal = Journal(tmp_path / "sent.txt")
    journal.append("ok")
    with pytest.raises(ValueError, match="not enough text"):
        journal.learn(model)
    assert not journal.mark_path.exists() and journal.pending() == 1
    write_all(journal, CAFE)
    assert journal.learn(model).train_examples > 0  # "ok" is learned with the rest
    assert journal.mark_path.read_text() == str(1 + len(CAFE))


def test_append_keeps_one_message_per_line(tmp_path):
    journal = Journal(tmp_path / "sent.txt")
    assert not journal.append("  \n ") and not journal.path.exists()  # blank: nothing written
    assert journal.append("two\nlines\r\nin\rone ")  # a lone \r would read back as a line break too
    assert journal.path.read_text(encoding="utf-8") == "two lines in one\n"


def test_an_existing_mark_is_honoured(tmp_path):
    """The keyboard demo's journals (typed.txt + typed.txt.learned) keep working."""
    (tmp_path / "typed.txt").write_text("a b c\nd e f\ng h i\n", encoding="utf-8")
    (tmp_path / "typed.txt.learned").write_text("2")
    assert Journal(tmp_path / "typed.txt").pending() == 1


def test_a_truncated_journal_starts_over(tmp_path):
    journal = Journal(tmp_path / "sent.txt")
    write_all(journal, ["one", "two"])
    journal.mark_path.write_text("5")  # five lines were learned; the user has since cut the file down
    assert journal.pending() == 2


def test_a_line_without_its_newline_waits(tmp_path):
    """A last line cut short (a crash mid-write, or still being written) is neither learned nor counted."""
    journal = Journal(tmp_path / "sent.txt")
    journal.path.write_text("whole line\nhalf a li", encoding="utf-8")
    assert journal.pending() == 1


def test_bad_files_give_errors_naming_them(tmp_path, model):
    journal = Journal(tmp_path / "sent.txt")
    journal.path.write_bytes(b"fine\n\xff\xfe not utf-8\n")
    with pytest.raises(ValueError, match=r"sent\.txt: not UTF-8"):
        journal.learn(model)
    journal.path.write_text("fine\n", encoding="utf-8")
    journal.mark_path.write_text("lots")
    with pytest.raises(ValueError, match=r"sent\.txt\.learned: expected the number"):
        journal.pending()


def test_a_missing_journal_has_nothing_to_learn(tmp_path, model):
    assert Journal(tmp_path / "never.txt").learn(model) is None
