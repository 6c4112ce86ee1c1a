"""The typing journal: what the user sent, kept on the device, learned from once.

    from edgekit.journal import Journal
    journal = Journal(state_dir / "typed.txt")
    journal.append("see you at the cafe")   # when the user sends a message
    journal.learn(model)                    # later, when idle: only the lines not learned yet

Each line is learned once. Learning a line again would put it into the next
federated update a second time (an export consumes what was learned, so old
lines would come back as new) and over-train the head on old text.

The journal is a plain UTF-8 file, one message per line, created 0600: it is
the user's own typing. Beside it, ``<name>.learned`` holds how many of its
lines are learned.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .atomic import atomic_write_bytes
from .tokenizer import read_text_lines

if TYPE_CHECKING:  # the model module pulls in the runtime; appending must stay light
    from .model import EdgeModel
    from .personal.result import PersonalizeResult

PRIVATE_MODE = 0o600  # other accounts on the device must not read what the user typed


class Journal:
    """An append-only file of sent messages, and a mark of how many are learned."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.mark_path = self.path.with_name(self.path.name + ".learned")

    def append(self, text: str) -> bool:
        """Add one message as one line; returns False (and writes nothing) for blank text.

        Flushed and fsynced before returning, so a crash never loses a sent
        message; newlines inside it become spaces, so it stays one line.
        """
        line = " ".join(text.splitlines()).strip()
        if not line:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", opener=_private) as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def pending(self) -> int:
        """How many lines the next ``learn`` would learn from."""
        return len(self._unlearned()[1])

    def learn(self, model: EdgeModel) -> PersonalizeResult | None:
        """``model.personalize`` on the lines not learned yet; its report, or None if there are none.

        The mark moves only after personalize returns (and has saved the
        state): a crash in between learns the lines again rather than never.
        ``ValueError`` from personalize (too little text so far) propagates
        and leaves the mark, so those lines are learned later with more.
        """
        learned, lines = self._unlearned()
        if not lines:
            return None
        report = model.personalize(lines)
        atomic_write_bytes(self.mark_path, str(learned + len(lines)).encode(), mode=PRIVATE_MODE)
        return report

    def _unlearned(self) -> tuple[int, list[str]]:
        """(how many lines are learned, the lines after them), reading only those into memory."""
        if not self.path.exists():
            return 0, []
        mark = self._mark()
        total, lines = self._lines_after(mark)
        if total < mark:
            # Fewer lines than were learned: the user truncated or replaced the journal,
            # so the mark counts lines that are gone. Everything in it now is new.
            # (A count cannot tell a replaced journal that has since grown past the
            # mark; delete the .learned file to start over then.)
            return 0, self._lines_after(0)[1]
        return mark, lines

    def _lines_after(self, skip: int) -> tuple[int, list[str]]:
        """(how many complete lines the journal has, those after the first ``skip``)."""
        total, lines = 0, []
        for total, line in enumerate(self._complete_lines(), 1):
            if total > skip:
                lines.append(line)
        return total, lines

    def _complete_lines(self) -> Iterator[str]:
        """The journal's lines, streamed, except a last one with no newline yet.

        Such a line is still being written, or was cut short by a crash; it is
        neither learned nor counted, so the mark only ever counts whole lines.
        """
        pieces: list[str] = []
        for piece in read_text_lines(self.path):  # clear ValueError naming the file for non-UTF-8
            pieces.append(piece)
            if piece.endswith("\n"):
                yield "".join(pieces)[:-1]
                pieces = []

    def _mark(self) -> int:
        if not self.mark_path.exists():
            return 0
        text = self.mark_path.read_text(encoding="utf-8", errors="replace").strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"{self.mark_path}: expected the number of journal lines already learned, "
                             f"found {text[:40]!r}; delete it to learn the whole journal again")
        return int(text)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, PRIVATE_MODE)
