"""A predictive keyboard in a terminal (a Raspberry Pi's, or any): live suggestions, learns when you quit.

    python keyboard.py [--model FILE] [--state-dir DIR] [--journal FILE] [--no-learn]

The three likeliest next words (or completions of the word being typed) are
shown after every keystroke. Keys:

    Tab            accept the first suggestion
    Alt-1/2/3      accept that suggestion (Esc then the digit works too, however
                   slowly typed; Esc then any other key does nothing)
    Backspace      delete the last character
    Enter          send the line: it is appended to the journal, a local file
                   that never leaves the device
    Ctrl-D         quit, then learn from the lines not learned yet: the result
                   is kept only if it suggests better on held-out lines (never worse)
    Ctrl-C         quit without learning

The journal defaults to ``typed.txt`` in the personal state folder.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from common import add_model_arguments, describe, load_model
from edgekit import EdgeModel
from edgekit.journal import Journal
from terminal import ACCEPT, BACKSPACE, ENTER, QUIT, cbreak, cells, read_keys, tail

JOURNAL_NAME = "typed.txt"
KEYS_HELP = "Tab: accept 1st | Alt-1/2/3 or Esc 1/2/3: accept | Enter: send | Ctrl-D: quit and learn | Ctrl-C: quit"
ERASE_REST = "\x1b[K"  # erase what an older, longer line left right of the cursor


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not sys.stdin.isatty():
        raise SystemExit("keyboard.py reads keys from a terminal, and stdin is not one. "
                         "To learn from a text file instead: edgekit personalize --text FILE")
    model = load_model(args)
    journal = Journal(args.journal or model.state_dir / JOURNAL_NAME)
    sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show a character gets "?"
    print(f"edgekit keyboard: {model.metadata['name']} ({model.quantization}, {model.runtime}); journal {journal.path}")
    print(KEYS_HELP)
    try:
        with cbreak(sys.stdin.fileno()):
            sent = type_lines(model, journal, sys.stdin.fileno(), sys.stdout)
    except KeyboardInterrupt:
        print("\nquit without learning")
        return 130
    print(f"\n{sent} sent this session")
    if not args.no_learn:
        learn(model, journal)
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


def learn(model: EdgeModel, journal: Journal) -> None:
    """Personalize on the lines sent since the last learning; the model keeps the result only if it helps."""
    try:
        new = journal.pending()
        if not new:
            return
        print(f"learning from {journal.path} ({new} new) ...", flush=True)
        report = journal.learn(model)
    except ValueError as e:  # too little text so far (the lines wait for the next session), or a bad journal
        print(f"not learning yet: {e}")
        return
    print(describe(report))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(ap)
    ap.add_argument("--journal", type=Path, default=None,
                    help=f"where sent lines go [default: STATE_DIR/{JOURNAL_NAME}]")
    ap.add_argument("--no-learn", action="store_true",
                    help="quit without learning (the lines wait for the next run that learns)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
