"""Keys from a terminal and the width of text on it, with the standard library only.

Why not curses: the keyboard demo redraws a single line, which two escape
codes do, and a test drives it through a pseudo-terminal byte by byte.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import termios
import tty
import unicodedata
from typing import Iterator

ACCEPT = "accept-"  # followed by the suggestion's number, "1" to "3"
ENTER, BACKSPACE, QUIT = "enter", "backspace", "quit"
ESC = "\x1b"
# Esc starts Alt-combinations, arrow keys, and "Esc then a digit" (accept that
# suggestion). A lone Esc never quits: a slow Esc-then-digit must not lose the
# line, so after a lone Esc the reader waits, without a time limit, for the next key.
_CONTROL = {"\t": ACCEPT + "1", "\r": ENTER, "\n": ENTER, "\x7f": BACKSPACE, "\b": BACKSPACE, "\x04": QUIT}


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys arrive one at a time and unechoed; Ctrl-C still interrupts; the terminal is restored after."""
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_keys(fd: int) -> Iterator[list[str]]:
    """Batches of keys, one batch per read: a paste arrives as one batch, so it costs one redraw.

    Input is UTF-8, decoded incrementally (a character may be split across reads).
    The end of input (the terminal closed) counts as a quit key.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data = os.read(fd, 4096)
        if not data:
            yield [QUIT]
            return
        chars = decoder.decode(data)
        if chars.endswith(ESC):  # the rest of the sequence, or the digit, however late it comes
            chars += decoder.decode(os.read(fd, 4096))
        yield list(parse_keys(chars))


def parse_keys(chars: str) -> Iterator[str]:
    """Printable characters as themselves, editing keys by name; other control keys are dropped."""
    i = 0
    while i < len(chars):
        c, i = chars[i], i + 1
        if c == ESC:
            key, i = _escape(chars, i)
        else:
            key = _CONTROL.get(c, c if c.isprintable() else None)
        if key is not None:
            yield key


def _escape(chars: str, i: int) -> tuple[str | None, int]:
    """Alt-1..3 (Esc + digit) accepts; arrows, function keys and Esc + anything else are skipped whole.

    Esc as the last thing read means the input ended (the terminal closed): quit.
    """
    if i == len(chars):
        return QUIT, i
    if chars[i] in "123":
        return ACCEPT + chars[i], i + 1
    if chars[i] == "[":  # CSI: parameter bytes, then one final byte in "@".."~"
        j = i + 1
        while j < len(chars) and not "@" <= chars[j] <= "~":
            j += 1
        return None, j + 1
    return None, i + (2 if chars[i] == "O" else 1)  # SS3 (F1-F4) has one more byte; Alt+other: ignored


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: wide (East Asian) characters two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def tail(text: str, columns: int) -> str:
    """The end of ``text`` that fits in ``columns``, marked with "…" when cut: the cursor stays in view."""
    if cells(text) <= columns:
        return text
    kept, used = [], 1  # one column for the "…"
    for c in reversed(text):
        used += cells(c)
        if used > columns:
            break
        kept.append(c)
    return "…" + "".join(reversed(kept))
