"""The terminal keyboard demo (examples/raspberry_pi/keyboard.py), driven through a real pseudo-terminal.

The bundled model is retrained now and then, so no test here depends on which
words it suggests: only on what the demo does with them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="the demo needs a POSIX terminal (termios)")

ROOT = Path(__file__).resolve().parents[1]
KEYBOARD = ROOT / "examples" / "raspberry_pi" / "keyboard.py"
# A short, realistic session: a place with a made-up name the base model has never seen.
SESSION = [
    "meet at the zorbly cafe at noon", "the zorbly cafe has the best coffee",
    "running late, save me a seat at the zorbly cafe", "see you at the zorbly cafe tomorrow",
    "are you coming to the zorbly cafe tonight", "i left my umbrella at the zorbly cafe",
    "lunch at the zorbly cafe again?", "the zorbly cafe is closed on monday",
    "let's meet at the zorbly cafe after work", "i am at the zorbly cafe now",
    "coffee at the zorbly cafe this morning", "the zorbly cafe was busy today",
    "meet me at the zorbly cafe at six", "thanks for the coffee at the zorbly cafe",
    "see you at the zorbly cafe on friday",
]


class Keyboard:
    """One run of the demo in a pseudo-terminal, with a private state folder."""

    def __init__(self, state_dir: Path, *args: str):
        env = {**os.environ, "EDGEKIT_STATE_DIR": str(state_dir)}
        self.child = pexpect.spawn(sys.executable, [str(KEYBOARD), *args], env=env, encoding="utf-8",
                                   dimensions=(24, 200), timeout=60)
        # Wait for the first draw: keys typed earlier reach a terminal not yet in cbreak mode.
        self.at_start = self.suggestions("")
        self.banner = self.child.before  # what it printed before the first draw

    def type(self, keys: str) -> None:
        self.child.send(keys)

    def suggestions(self, text: str) -> list[str]:
        """Wait until the live line shows ``text``; the words of its suggestion strip."""
        self.child.expect(r"\r\[([^\]]*)\] > " + re.escape(text) + r"\x1b\[K")
        strip = self.child.match.group(1)
        return [item.split(" ", 1)[1] for item in strip.split(" | ")] if strip else []

    def suggestions_after_accept(self) -> str:
        """The live line after a suggestion was accepted (a word and a space)."""
        self.child.expect(r"\r\[[^\]]*\] > (\S+ )\x1b\[K")
        return self.child.match.group(1)

    def send_line(self, text: str) -> None:
        self.type(text + "\r")
        self.child.expect("sent: " + re.escape(text))

    def quit(self, key: str = "\x04") -> str:
        """Quit with ``key``; everything printed after the live line, and the exit status."""
        self.type(key)
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.before


def journal(state_dir: Path) -> list[str]:
    return (state_dir / "typed.txt").read_text(encoding="utf-8").splitlines()


def learned_after_quit(state_dir: Path, lines: int) -> str:
    """The report of the learning a quit started, once the journal's mark reaches ``lines``."""
    mark, report = state_dir / "typed.txt.learned", state_dir / "typed.txt.report"
    deadline = time.monotonic() + 120
    while not (mark.exists() and mark.read_text() == str(lines) and report.exists()):
        assert time.monotonic() < deadline, "the learning that quitting started did not finish"
        time.sleep(0.1)
    return report.read_text(encoding="utf-8")


def test_suggests_accepts_edits_and_sends(tmp_path):
    kb = Keyboard(tmp_path)
    kb.type("see you tomo")
    first = kb.suggestions("see you tomo")
    assert first and all(w.lower().startswith("tomo") for w in first)
    kb.type("\t")  # Tab accepts the first suggestion in place of the partial word
    kb.suggestions(f"see you {first[0]} ")
    kb.type("at the caf\u00e9 \u65e5\u672c")  # UTF-8 in, including wide characters
    kb.type("\x7f\x7f")  # Backspace removes whole characters, not bytes
    third = kb.suggestions(f"see you {first[0]} at the caf\u00e9 ")[2]
    kb.type("\x1b3")  # Alt-3: the third suggestion, after a space
    kb.suggestions(f"see you {first[0]} at the caf\u00e9 {third} ")
    kb.type("\r")
    kb.child.expect("sent: ")
    kb.quit("\x03")  # Ctrl-C: no learning
    assert kb.child.exitstatus == 130
    assert journal(tmp_path) == [f"see you {first[0]} at the caf\u00e9 {third}"]
    assert not list(tmp_path.glob("*.edgekit-state"))


def test_learns_the_session_and_suggests_its_words_next_time(tmp_path):
    kb = Keyboard(tmp_path)
    assert "zorbly" not in kb.at_start
    kb.type("meet at the zor")
    assert "zorbly" not in kb.suggestions("meet at the zor")  # not a word the base model knows
    kb.type("\x7f" * 3)
    assert "zorbly" not in kb.suggestions("meet at the ")
    kb.type("\x7f" * len("meet at the "))
    kb.suggestions("")
    for line in SESSION:
        kb.send_line(line)
    assert "(15 new) after quitting" in kb.quit()  # Ctrl-D: quit at once, learn in a process of its own
    assert kb.child.exitstatus == 0
    assert journal(tmp_path) == SESSION
    report = learned_after_quit(tmp_path, len(SESSION))
    assert "adopted" in report and "zorbly" in report, report

    again = Keyboard(tmp_path)
    assert "after your last session: learned from" in again.banner and "zorbly" in again.banner  # shown once
    again.type("meet at the ")
    assert "zorbly" in again.suggestions("meet at the ")
    again.type("zor")
    assert again.suggestions("meet at the zor")[0] == "zorbly"
    again.type("\x7f" * len("meet at the zor"))
    again.suggestions("")
    again.type("\x1b")  # Esc, then the digit a second later: still accepts (a lone Esc never quits)
    time.sleep(1.0)
    again.type("1")
    accepted = again.suggestions_after_accept()
    again.type("\x7f" * len(accepted))
    again.suggestions("")
    again.send_line("ok")
    assert "(1 new)" in again.quit()
    assert again.child.exitstatus == 0
    report = learned_after_quit(tmp_path, len(SESSION) + 1)  # only what is new, judged on all held-out text so far
    assert "(1 new)" in report and "held-out top-3" in report, report

    idle = Keyboard(tmp_path)
    assert "after your last session" in idle.banner
    assert "new)" not in idle.quit("\x04")  # learned lines never come back
    last = Keyboard(tmp_path)
    assert "after your last session" not in last.banner  # a report is shown once
    last.quit("\x03")
    assert (tmp_path / "typed.txt.learned").read_text() == str(len(SESSION) + 1)


def test_refuses_a_stdin_that_is_not_a_terminal(tmp_path):
    run = subprocess.run([sys.executable, str(KEYBOARD)], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, env={**os.environ, "EDGEKIT_STATE_DIR": str(tmp_path)}, timeout=60)
    assert run.returncode == 1
    assert "not one" in run.stderr and "edgekit personalize --text" in run.stderr
