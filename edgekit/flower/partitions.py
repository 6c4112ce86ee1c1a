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

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

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


def make_partitions(sources: dict[str, Sequence[str]], n_clients: int,
                    train_lines: int = 200, heldout_lines: int = 20) -> list[Partition]:
    """Deal ``n_clients`` contiguous, disjoint stretches round-robin over the sources.

    Held-out lines come right after a client's training lines, so they are the
    same writer's later text: the personalization question ("does it predict
    what this person types next?"). A source too short for another stretch
    starts over from its beginning rather than leaving a client empty.
    """
    if n_clients < 1:
        raise ValueError("need at least one client")
    names = sorted(sources)
    used = {name: 0 for name in names}
    size = train_lines + heldout_lines
    parts = []
    for i in range(n_clients):
        name = names[i % len(names)]
        lines = sources[name]
        start = used[name] if used[name] + size <= len(lines) else 0
        chunk = list(lines[start:start + size])
        used[name] = start + size
        cut = max(1, len(chunk) * train_lines // size)
        parts.append(Partition(f"{name}@{start}", tuple(chunk[:cut]), tuple(chunk[cut:])))
    return parts


def synthetic_sources(n_writers: int, lines: int = 60, seed: int = 0) -> dict[str, list[str]]:
    """Small writers with their own habits, for tests that must not need corpora.

    Each writer repeats a few favourite phrases amid common words, which is
    what makes last-layer personalization measurably help.
    """
    rng = random.Random(seed)
    common = "the a and to of i you it is was for on my we".split()
    nouns = "cat dog tea boat lab code rain train music garden".split()
    sources = {}
    for w in range(n_writers):
        favourite = [f"{rng.choice(common)} {nouns[w % len(nouns)]} {nouns[(w * 3 + 1) % len(nouns)]}"
                     for _ in range(3)]
        sources[f"writer{w}"] = [
            " ".join([rng.choice(favourite)] + rng.sample(common, 3) + [rng.choice(favourite)])
            for _ in range(lines)]
    return sources


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
