"""Progress bars on stderr for long work (evaluation, feature extraction, training)."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Protocol


class Bar(Protocol):
    def update(self, n: int) -> None: ...


class _Silent:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def progress_bar(length: int | None, label: str, enabled: bool = True) -> Iterator[Bar]:
    """A click progress bar on stderr (a terminal), or a silent one; ``length`` may be unknown."""
    if not enabled or not sys.stderr.isatty():  # no bar in logs and pipes: it would print only its label
        yield _Silent()
        return
    import click

    known = length is not None and length > 0
    bar: Any  # click types the bar by its items; this one only counts
    with click.progressbar(length=length if known else 1, label=label, file=sys.stderr,
                           show_percent=known, show_eta=known, show_pos=True) as bar:
        yield bar
