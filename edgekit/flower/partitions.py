"""Non-IID client partitions: one writer per simulated device.

Federated averaging is only interesting when devices differ, so a client never
gets a random shuffle of the pooled corpora. Each client gets a contiguous
stretch of ONE source: one email sender's messages, a run of SMS, a chapter of
an Austen novel, a scene of Shakespeare. Clients are dealt round-robin over the
sources so a hundred clients cover every style.

A partition is written as a directory with ``train.txt`` (the text the device
learns from) and ``heldout.txt`` (later text of the same writer, never trained
on), the same two files a real device points its SuperNode at (see
``docs/deploy-flower.md``). Simulation and deployment therefore read text the
same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..tokenizer import read_text_lines

TRAIN_FILE = "train.txt"
HELDOUT_FILE = "heldout.txt"
NAME_FILE = "source.txt"


@dataclass(frozen=True)
class Partition:
    """The text of one simulated device."""

    name: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]


def text_sources(data_dir: str | Path) -> dict[str, list[str]]:
    """Every ``*.txt`` under ``data_dir`` is one writer (non-empty lines kept).

    The data directory's layout decides what a writer is: a file per email
    sender gives per-sender clients, one file of SMS gives clients that are
    stretches of that file.
    """
    root = Path(data_dir)
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no *.txt corpora found to build clients from")
    sources = {}
    for path in files:
        lines = [ln.strip() for ln in read_text_lines(path) if ln.strip()]
        if lines:
            sources[str(path.relative_to(root))] = lines
    return sources


def make_partitions(sources: Mapping[str, Sequence[str]], n_clients: int,
                    train_words: int = 1500, heldout_words: int = 300) -> list[Partition]:
    """Deal ``n_clients`` contiguous, disjoint stretches round-robin over the sources.

    Budgets are in words, not lines: a line is an SMS in one corpus and a
    whole paragraph in another, and a device's cost grows with its words.
    Held-out text comes right after a client's training text, so it is the
    same writer's later text: the personalization question ("does it predict
    what this person types next?"). A source too short for another stretch
    starts over from its beginning rather than leaving a client empty.
    """
    if n_clients < 1:
        raise ValueError("need at least one client")
    names = sorted(sources)
    next_line = {name: 0 for name in names}
    parts = []
    for i in range(n_clients):
        name = names[i % len(names)]
        lines = sources[name]
        start = next_line[name]
        train, heldout, end = _stretch(lines, start, train_words, heldout_words)
        if not heldout and start > 0:  # this writer's text is used up: start over
            start = 0
            train, heldout, end = _stretch(lines, start, train_words, heldout_words)
        next_line[name] = end
        parts.append(Partition(f"{name}@{start}", tuple(train), tuple(heldout)))
    return parts


def _stretch(lines: Sequence[str], start: int, train_words: int,
             heldout_words: int) -> tuple[list[str], list[str], int]:
    train, middle = take_words(lines, start, train_words)
    heldout, end = take_words(lines, middle, heldout_words)
    return train, heldout, end


def take_words(lines: Sequence[str], start: int, words: int) -> tuple[list[str], int]:
    """Lines from ``start`` until they hold ``words`` words (or the text ends); and where they stop."""
    taken, count, i = [], 0, start
    while i < len(lines) and count < words:
        taken.append(lines[i])
        count += len(lines[i].split())
        i += 1
    return taken, i


def write_partition(part: Partition, folder: str | Path) -> Path:
    """Lay a partition out the way a device's text is laid out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_lines(folder / TRAIN_FILE, part.train)
    _write_lines(folder / HELDOUT_FILE, part.heldout)
    (folder / NAME_FILE).write_text(part.name + "\n", encoding="utf-8")
    return folder


def write_partitions(parts: Iterable[Partition], root: str | Path) -> list[Path]:
    """One folder per client, ``client-0000`` ... in partition-id order."""
    return [write_partition(p, Path(root) / client_folder_name(i)) for i, p in enumerate(parts)]


def client_folder_name(partition_id: int) -> str:
    return f"client-{partition_id:04d}"


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a device text file (missing file: a clear error)."""
    return [ln for ln in read_text_lines(path) if ln.strip()]


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
