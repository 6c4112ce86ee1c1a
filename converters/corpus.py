"""Training and evaluation text for the default English model: the files of ``data/``, their splits, windows.

The raw corpora are cleaned once (``cleaning``) and the result ships in
``data/``, so the bundled model is rebuildable without them;
``python -m edgekit.converters.rebuild_data --shared /path/to/shared/data``
regenerates ``data/`` byte for byte.

Every output file holds one paragraph (or message part) per line, which is
what ``Tokenizer.iter_lines`` turns into one ``<s> ... </s>`` stream. The
version 2 sources (``SOURCES``: the email plus chat, comments and everyday
sentences) are split once, by a hash of each conversation or line
(``split_of``), into ``data/train``, ``data/valid`` and ``data/heldout``, and
shipped ``.xz``-compressed; ``edgekit.tokenizer.read_text_lines`` reads them directly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from edgekit.tokenizer import Tokenizer, read_text_lines
from edgekit.vocab import Vocabulary

from . import checkout_folder, require_checkout
from .cleaning import irc_lines, plain, user_turns, without_name_placeholder

DATA_DIR: Path | None = checkout_folder("data")  # None outside a source checkout

# name -> file; never used for training or for choosing the vocabulary. The test
# splits of the version 2 sources (``SOURCES``) join these in ``heldout_files``.
HELDOUT_FILES: dict[str, str] = {
    "email": "heldout/email_easy_ham_2.txt",
    "persuasion": "heldout/austen_persuasion.txt",
}
PERSONAL_FILE = "personal/sms_ham.txt"
PERSONAL_TRAIN_FRACTION = 0.8

T = TypeVar("T")


def data_root(data_dir: Path | str | None = None) -> Path:
    """``data_dir``, else the checkout's ``data/`` (:class:`CheckoutFolderMissing` without one)."""
    return Path(data_dir) if data_dir else require_checkout(DATA_DIR, "data_dir")


def train_files(data_dir: Path | str | None = None, sources: Sequence[str] | None = None) -> list[Path]:
    """The base model's training text, in a fixed order (vocabulary ties depend on it)."""
    return split_files("train", sources, data_dir)


def valid_files(data_dir: Path | str | None = None, sources: Sequence[str] | None = None) -> list[Path]:
    """Validation text (training-time loss, choices between configurations), never trained on."""
    return split_files("valid", sources, data_dir)


def heldout_files(data_dir: Path | str | None = None) -> dict[str, Path]:
    """Evaluation text: later email (a time split), a book, and every source's test split."""
    root = data_root(data_dir)
    tests = {name: root / src.file("heldout") for name, src in SOURCES.items() if src.has_test}
    return {key: root / name for key, name in HELDOUT_FILES.items()} | tests


def split_files(split: str, sources: Sequence[str] | None = None, data_dir: Path | str | None = None) -> list[Path]:
    """``data/<split>/<source>.txt.xz`` of each source, in the given order (default: ``TRAIN_SOURCES``)."""
    root = data_root(data_dir)
    names = TRAIN_SOURCES if sources is None else tuple(sources)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    return [root / SOURCES[n].file(split) for n in names]


def personal_file(data_dir: Path | str | None = None) -> Path:
    """SMS messages standing in for one user's own typing (never in base training)."""
    return data_root(data_dir) / PERSONAL_FILE


def personal_split(lines: Sequence[T], train_fraction: float = PERSONAL_TRAIN_FRACTION) -> tuple[list[T], list[T]]:
    """First ``train_fraction`` of the lines to learn from, the rest to test on.

    A prefix split (not random) mimics time: the device learns from what the
    user typed before and is tested on what they type next. Deterministic, so
    every experiment uses the same messages.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    cut = int(len(lines) * train_fraction)
    return list(lines[:cut]), list(lines[cut:])


# -- version 2: keyboard-like sources, each with a fixed train/valid/test split ----
SPLITS = ("train", "valid", "heldout")
TEST_PERCENT, VALID_PERCENT = 3, 2


def split_of(unit: str, has_test: bool = True) -> str:
    """The split ("train", "valid" or "heldout") of one conversation, line or message.

    Decided by the sha256 of the unit's cleaned text, not by its position or a
    random draw: the assignment stays fixed whatever order the corpus comes
    in, and exact duplicates (a "lol" line, a repeated template) all land in
    one split, so no held-out line is also a training line. Bucket = first 8
    bytes of the digest mod 100: 0-2 test (3%), 3-4 validation (2%), the rest
    train. ``has_test=False`` (the email, whose test set is the later time
    split): 0-4 validation, the rest train.
    """
    bucket = int.from_bytes(hashlib.sha256(unit.encode("utf-8")).digest()[:8], "big") % 100
    if has_test and bucket < TEST_PERCENT:
        return "heldout"
    return "valid" if bucket < TEST_PERCENT + VALID_PERCENT else "train"


@dataclass(frozen=True)
class Source:
    """One corpus of the version 2 training mixture and how it is cut into split units."""

    name: str
    raw: str  # under the shared ``corpora/`` directory
    unit: str  # "line", "conversation" (blank-line separated) or "email" (one message per file)
    clean: Callable[[list[str]], list[str]]  # a unit's raw lines (or paragraphs) -> the lines kept
    license: str
    license_file: str | None = None  # under ``corpora/licenses/``; shipped in ``data/licenses/``
    share_alike: bool = False  # its license file also sits beside each of its split files
    has_test: bool = True

    def file(self, split: str) -> str:
        return f"{split}/{self.name}.txt.xz"


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("email_easy_ham_1", "spamassassin/easy-ham-1", "email", plain, "PDDL-1.0 / CC0", has_test=False),
    Source("self_dialogue", "chat/self_dialogue.txt", "conversation", plain, "BSD-3-Clause",
           "self-dialogue-LICENSE.txt"),
    Source("irc_ubuntu_linux", "chat/irc_ubuntu_linux.txt", "line", irc_lines, "CC BY 4.0",
           "irc-disentanglement-LICENSE-data.txt"),
    Source("topical_chat", "chat/topical_chat_valid_test.txt", "conversation", plain, "CDLA-Sharing-1.0",
           "topical-chat-DATALICENSE.txt", share_alike=True),
    Source("goemotions_reddit", "chat/goemotions_reddit_comments.txt", "line", without_name_placeholder,
           "Apache-2.0", "goemotions-LICENSE.txt"),
    Source("sgd_user_turns", "chat/schema_guided_dialogue.txt", "conversation", user_turns, "CC BY-SA 4.0",
           "schema-guided-dialogue-LICENSE.txt", share_alike=True),
    Source("taskmaster4", "chat/taskmaster4.txt", "conversation", plain, "CC BY 4.0", "taskmaster4-license.md"),
    Source("tatoeba", "sentences/tatoeba_en.txt", "line", plain, "CC BY 2.0 FR", "tatoeba-laser-README.md"),
    Source("common_voice", "sentences/common_voice_en_2020.txt", "line", plain, "CC0 1.0",
           "common-voice-sentences-LICENSE.txt"),
)}
TRAIN_SOURCES: tuple[str, ...] = tuple(SOURCES)  # the version 2 mixture, each source once per epoch


# -- token lines -> (context, target) windows -----------------------------------
def content_sha256(path: Path | str) -> str:
    """sha256 of the text itself (decompressed for ``.xz``), so a different xz build hashes the same."""
    digest = hashlib.sha256()
    for line in read_text_lines(path):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def token_lines(paths: Iterable[Path | str], tokenizer: Tokenizer | None = None) -> Iterator[list[str]]:
    """``<s> ... </s>`` token lists of every line of the files (plain or ``.xz``), streamed."""
    tokenizer = tokenizer or Tokenizer()
    for path in paths:
        yield from tokenizer.iter_lines(read_text_lines(path))


def windows(lines: Iterable[list[str]], vocab: Vocabulary, context_length: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(context ids [context_length] int32, target id)`` for every predictable position.

    The context is the previous ``context_length`` ids of the same line,
    left-padded with ``<pad>``, exactly what the device builds while typing.
    ``<pad>``/``<s>`` targets are skipped: nothing ever has to predict them.
    """
    for tokens in lines:
        ids = np.asarray(vocab.encode(tokens), dtype=np.int32)
        padded = np.concatenate([np.full(context_length, vocab.pad, np.int32), ids])
        for i in range(1, len(ids)):
            if ids[i] not in (vocab.pad, vocab.bos):
                yield padded[i : i + context_length], int(ids[i])


def window_arrays(lines: Iterable[list[str]], vocab: Vocabulary, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows stacked: contexts ``[N, context_length]`` int32, targets ``[N]`` int32.

    Vectorized per line (a sliding view), since training makes millions of windows.
    """
    contexts, targets = [], []
    for tokens in lines:
        ids = np.asarray(vocab.encode(tokens), dtype=np.int32)
        padded = np.concatenate([np.full(context_length, vocab.pad, np.int32), ids[:-1]])
        keep = (ids[1:] != vocab.pad) & (ids[1:] != vocab.bos)
        view = np.lib.stride_tricks.sliding_window_view(padded, context_length)[1:]
        contexts.append(view[keep])
        targets.append(ids[1:][keep])
    if not contexts:
        return np.zeros((0, context_length), np.int32), np.zeros(0, np.int32)
    return np.concatenate(contexts).astype(np.int32), np.concatenate(targets).astype(np.int32)


@dataclass(frozen=True)
class Windows:
    """Every (context, target) window of a text, without materializing the contexts.

    Millions of ``[context_length]`` contexts would take gigabytes; this keeps
    the flat token ids and, per target, its position and its line's start, and
    builds a batch of contexts on demand. ``take(range(len(w)))`` equals
    ``window_arrays`` on the same lines.
    """

    ids: np.ndarray  # all lines' ids, concatenated
    positions: np.ndarray  # index in ``ids`` of each target
    line_starts: np.ndarray  # index in ``ids`` of each target's line start (its ``<s>``)
    context_length: int
    pad: int

    @classmethod
    def from_lines(cls, lines: Iterable[list[str]], vocab: Vocabulary, context_length: int) -> Windows:
        chunks, positions, starts, offset = [], [], [], 0
        for tokens in lines:
            ids = np.asarray(vocab.encode(tokens), dtype=np.int32)
            (keep,) = np.nonzero((ids[1:] != vocab.pad) & (ids[1:] != vocab.bos))
            chunks.append(ids)
            positions.append(offset + 1 + keep)
            starts.append(np.full(len(keep), offset, np.int64))
            offset += len(ids)
        if not chunks:
            empty = np.zeros(0, np.int64)
            return cls(np.zeros(0, np.int32), empty, empty, context_length, vocab.pad)
        return cls(np.concatenate(chunks), np.concatenate(positions), np.concatenate(starts), context_length, vocab.pad)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def targets(self) -> np.ndarray:
        return self.ids[self.positions]

    def take(self, index: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Contexts ``[n, context_length]`` int32 (left-padded within the line) and targets ``[n]``."""
        index = np.asarray(index, dtype=np.int64)
        pos = self.positions[index]
        cols = pos[:, None] + np.arange(-self.context_length, 0)
        inside = cols >= self.line_starts[index][:, None]
        contexts = np.where(inside, self.ids[np.maximum(cols, 0)], self.pad).astype(np.int32)
        return contexts, self.ids[pos]
