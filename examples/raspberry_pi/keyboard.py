"""A predictive keyboard in a terminal (a Raspberry Pi's, or any): live suggestions, learns after you quit.

    python keyboard.py [--model FILE] [--state-dir DIR] [--journal FILE] [--no-learn]

The three likeliest next words (or completions of the word being typed) are
shown after every keystroke. Keys:

    Tab            accept the first suggestion
    Alt-1/2/3      accept that suggestion (Esc then the digit works too, however
                   slowly typed; Esc then any other key does nothing)
    Backspace      delete the last character
    Enter          send the line: it is appended to the journal, a local file
                   that never leaves the device
    Ctrl-D         quit at once; a process of its own then learns from the lines
                   not learned yet (the result is kept only if it suggests better
                   on held-out lines: never worse), and the next start shows what
                   it did
    Ctrl-C         quit without learning

The journal defaults to ``typed.txt`` in the personal state folder.

Why learning runs after the keyboard is gone: every line is on disk (the
journal, fsynced) when it is sent, but learning checks each candidate
against all kept held-out text and text the model writes itself, which
takes seconds, not the half second a quit may take. So quitting starts
``keyboard.py --learn-pending`` in a session of its own and returns; it
learns under a lock (one learner at a time), writes its report beside the
journal, and the next start prints it. Until it finishes, a new start
suggests from the state before; no line is lost or learned twice (the
journal's mark moves only after the state is saved).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from common import add_model_arguments, describe, load_model
from edgekit import EdgeModel
from edgekit.atomic import atomic_write_bytes
from edgekit.journal import PRIVATE_MODE, Journal
from edgekit.paths import default_state_dir
from terminal import ACCEPT, BACKSPACE, ENTER, QUIT, cbreak, cells, read_keys, tail

JOURNAL_NAME = "typed.txt"
KEYS_HELP = "Tab: accept 1st | Alt-1/2/3 or Esc 1/2/3: accept | Enter: send | Ctrl-D: quit and learn | Ctrl-C: quit"
REPORT_SUFFIX = ".report"  # beside the journal: what the last learning after a quit did
LOCK_SUFFIX = ".lock"  # beside the journal: held while one learns
LEARNER_NICENESS = 10  # the learning after a quit runs behind anything the user is doing
ERASE_REST = "\x1b[K"  # erase what an older, longer line left right of the cursor


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.learn_pending:
        return learn_pending(args)
    if not sys.stdin.isatty():
        raise SystemExit("keyboard.py reads keys from a terminal, and stdin is not one. "
                         "To learn from a text file instead: edgekit personalize --text FILE")
    model = load_model(args)
    journal = Journal(args.journal or model.state_dir / JOURNAL_NAME)
    sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show a character gets "?"
    print(f"edgekit keyboard: {model.metadata['name']} ({model.quantization}, {model.runtime}); journal {journal.path}")
    show_last_report(journal)
    print(KEYS_HELP)
    # Started from a background job or nohup, the process inherits an ignored SIGINT: Ctrl-C must still quit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with cbreak(sys.stdin.fileno()):
            sent = type_lines(model, journal, sys.stdin.fileno(), sys.stdout)
    except KeyboardInterrupt:
        print("\nquit without learning")
        return 130
    print(f"\n{sent} sent this session")
    if not args.no_learn:
        start_learning(journal, args)
    return 0


def type_lines(model: EdgeModel, journal: Journal, fd: int, screen: TextIO) -> int:
    """The typing loop, until a quit key; returns how many lines were sent."""
    text, sent = "", 0
    words = suggest(model, text)
    draw(screen, words, text)
    for keys in read_keys(fd):
        for key in keys:
            if key == QUIT:
                return sent
            if key == ENTER:
                sent += send(journal, screen, text)
                text = ""
            else:
                text = edit(model, text, key, words)
            words = suggest(model, text)
        draw(screen, words, text)
    return sent


def suggest(model: EdgeModel, text: str) -> list[str]:
    return [s.word for s in model.suggest(text, k=3)]


def edit(model: EdgeModel, text: str, key: str, words: list[str]) -> str:
    """The line after one key: a character, Backspace, or accepting a suggestion."""
    if key == BACKSPACE:
        return text[:-1]
    if key.startswith(ACCEPT):
        n = int(key[len(ACCEPT):]) - 1
        return accept(model, text, words[n]) if n < len(words) else text
    return text + key


def accept(model: EdgeModel, text: str, word: str) -> str:
    """Replace the word being typed with ``word`` (or add it as the next word), then a space."""
    partial = model.tokenizer.split_partial(text)[1]
    if partial:
        return text[: len(text) - len(partial)] + word + " "
    gap = "" if not text or text[-1].isspace() else " "
    return text + gap + word + " "


def send(journal: Journal, screen: TextIO, text: str) -> int:
    """Append the line to the journal (on disk before this returns); 1 if sent, 0 for a blank line."""
    if not journal.append(text):
        return 0
    screen.write(f"\rsent: {text}{ERASE_REST}\n")
    return 1


def draw(screen: TextIO, words: list[str], text: str) -> None:
    """Redraw the live line in place, ``[1 word | 2 word | 3 word] > text``, the cursor after the text."""
    strip = "[" + " | ".join(f"{i} {w}" for i, w in enumerate(words, 1)) + "]"
    try:
        columns = os.get_terminal_size(screen.fileno()).columns
    except OSError:
        columns = 80
    screen.write(f"\r{strip} > {tail(text, max(10, columns - cells(strip) - 4))}{ERASE_REST}")
    screen.flush()


def start_learning(journal: Journal, args: argparse.Namespace) -> None:
    """Learn the journal's new lines in a process of its own, so that quitting takes no time."""
    try:
        new = journal.pending()
    except ValueError as e:  # a journal or mark that is not what this keyboard writes: say so, lose nothing
        print(f"not learning: {e}")
        return
    if not new:
        return
    cmd = [sys.executable, str(Path(__file__).resolve()), "--learn-pending", "--journal", str(journal.path)]
    for flag, value in (("--model", args.model), ("--state-dir", args.state_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    # Its own session: it outlives the terminal and prints nothing into the shell. Niced from the start
    # (before its imports): it must not slow this process's exit, nor the next session's typing.
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, preexec_fn=lambda: os.nice(LEARNER_NICENESS))
    print(f"learning from {journal.path} ({new} new) after quitting; the next start shows the result")


def learn_pending(args: argparse.Namespace) -> int:
    """``--learn-pending``: personalize on the journal's new lines, one learner at a time; the report
    (or why nothing was learned) goes to ``<journal>.report`` for the next start to show."""
    journal = Journal(args.journal or (args.state_dir or default_state_dir()) / JOURNAL_NAME)
    with open(journal.path.with_name(journal.path.name + LOCK_SUFFIX), "a", opener=_private) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a learner started by an earlier quit finishes first
        new = journal.pending()
        if not new:
            return 0
        model = load_model(args)  # after the lock: the state as an earlier learner left it
        try:
            text = f"learned from {journal.path} ({new} new): {describe(journal.learn(model))}"
        except ValueError as e:  # too little text so far (the lines wait for the next time), or a bad journal
            text = f"not learning yet: {e}"
        atomic_write_bytes(_report_path(journal), text.encode("utf-8"), mode=PRIVATE_MODE)
    return 0


def show_last_report(journal: Journal) -> None:
    """Print what the learning after the previous quit did, once."""
    path = _report_path(journal)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    print(f"after your last session: {text}")
    path.unlink(missing_ok=True)


def _report_path(journal: Journal) -> Path:
    return journal.path.with_name(journal.path.name + REPORT_SUFFIX)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, PRIVATE_MODE)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(ap)
    ap.add_argument("--journal", type=Path, default=None,
                    help=f"where sent lines go [default: STATE_DIR/{JOURNAL_NAME}]")
    ap.add_argument("--no-learn", action="store_true",
                    help="quit without learning (the lines wait for the next run that learns)")
    ap.add_argument("--learn-pending", action="store_true",
                    help="learn the journal's new lines and exit (what quitting starts in the background)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
