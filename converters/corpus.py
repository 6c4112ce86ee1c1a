"""Training and evaluation text for the default English model.

The raw corpora (mailing-list email, novels, chat logs) are full of things a
keyboard never sees: mail headers, quoted replies, signatures, list footers,
URLs, chapter headings, hard-wrapped lines. Cleaning them once, here, and
shipping the result in ``data/`` makes the bundled model rebuildable without
the raw corpora: ``python -m edgekit.converters.corpus --shared /path/to/shared/data``
regenerates ``data/`` byte for byte.

Every output file holds one paragraph (or message part) per line, which is
what ``Tokenizer.iter_lines`` turns into one ``<s> ... </s>`` stream. The
version 2 sources (``SOURCES``: the email plus chat, comments and everyday
sentences) are split once, by a hash of each conversation or line
(``split_of``), into ``data/train``, ``data/valid`` and ``data/heldout``, and
shipped ``.xz``-compressed; ``edgekit.tokenizer.read_text_lines`` reads them directly.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import lzma
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from edgekit.tokenizer import Tokenizer, read_text_lines
from edgekit.vocab import Vocabulary

from . import checkout_folder, require_checkout

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


# -- email ---------------------------------------------------------------
_QUOTED = re.compile(r"^\s*(>|\|)")
_ATTRIBUTION = re.compile(r"(wrote|writes|said)\s*:\s*$", re.IGNORECASE)
_FORWARDED_HEADER = re.compile(r"^\s*(from|to|cc|date|subject|sent|message-id|reply-to|hash)\s*:", re.IGNORECASE)
# Lines after which nothing is the author's own prose: signature, list footer,
# forwarded/quoted original, PGP signature.
_STOP = re.compile(
    r"^(-- ?$|_{10,}|-{10,}|-+ ?Original Message|-+ ?Forwarded message|-+BEGIN PGP SIGNATURE"
    r"|-{3,} ?In \S+ wrote|To unsubscribe|Do You Yahoo!?)",
    re.IGNORECASE,
)
_URL_OR_ADDRESS = re.compile(r"(\S+://\S+|www\.\S+|\S+@\S+|<\S+>)")
_MIN_EMAIL_WORDS = 3


def email_paragraphs(raw: bytes) -> list[str]:
    """The author's own paragraphs of one RFC 822 message, one per string."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [p for body in _plain_bodies(message) for p in _body_paragraphs(body)]


def _plain_bodies(message: email.message.Message) -> Iterator[str]:
    """Decoded text/plain parts; HTML and attachments carry no typing to learn from."""
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        yield payload.decode(part.get_content_charset() or "latin-1", errors="replace")


def _body_paragraphs(body: str) -> Iterator[str]:
    lines: list[str] = []
    for line in body.splitlines():
        if _STOP.match(line):
            break
        lines.append(_clean_email_line(line))
    for paragraph in _paragraphs(lines):
        if len(paragraph.split()) >= _MIN_EMAIL_WORDS:
            yield paragraph


def _clean_email_line(line: str) -> str:
    """The line's prose, or "" for quotes, headers, code, logs and encoded junk."""
    if _QUOTED.match(line) or _ATTRIBUTION.search(line) or _FORWARDED_HEADER.match(line):
        return ""
    line = " ".join(_URL_OR_ADDRESS.sub(" ", line).split())
    return line if _looks_like_prose(line) else ""


def _looks_like_prose(line: str) -> bool:
    """Mostly letters and spaces, no giant tokens (base64, paths, hashes)."""
    chars = line.replace(" ", "")
    if not chars or max(len(w) for w in line.split()) > 25:
        return False
    letters = sum(c.isalpha() for c in chars)
    return letters / len(chars) >= 0.75 and "\ufffd" not in line


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Join hard-wrapped lines; a blank line ends a paragraph."""
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


# -- books, plays, wikipedia -----------------------------------------------
_MIN_BOOK_WORDS = 4


def book_paragraphs(text: str) -> list[str]:
    """Paragraphs of a hard-wrapped novel; short ones (titles, chapter headings) dropped."""
    return [p for p in _paragraphs(text.splitlines()) if len(p.split()) >= _MIN_BOOK_WORDS]


_WIKI_GLUE = re.compile(r" @(.)@ ")
_WIKI_SPACE_BEFORE = re.compile(r" ([.,;:!?)'\"]|'s\b|n't\b)")
_WIKI_SPACE_AFTER = re.compile(r"([(]) ")
_SENTENCE = re.compile(r"(?<=[.!?]) +")


def wikitext_paragraphs(text: str) -> list[str]:
    """WikiText-2 de-tokenized; headings and sentences with ``<unk>`` dropped.

    Dropping only the sentence (not the paragraph) keeps most text while never
    teaching the model a bigram that spans a removed word.
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        line = _WIKI_SPACE_AFTER.sub(r"\1", _WIKI_SPACE_BEFORE.sub(r"\1", _WIKI_GLUE.sub(r"\1", line)))
        kept = [s for s in _SENTENCE.split(line) if "<unk>" not in s]
        if kept:
            out.append(" ".join(kept))
    return out


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


def _plain(lines: list[str]) -> list[str]:
    """Whitespace collapsed, empty lines dropped; the text is otherwise as people typed it."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def _irc(lines: list[str]) -> list[str]:
    """IRC without URLs/addresses, bot and client commands (``!ask``, ``/join``), control
    characters, and lines that are mostly paths, code or logs."""
    cleaned = _plain(["".join(c for c in _URL_OR_ADDRESS.sub(" ", line) if c.isprintable()) for line in lines])
    return [line for line in cleaned if line[0] not in "!/" and _looks_like_prose(line)]


def _without_name_placeholder(lines: list[str]) -> list[str]:
    """GoEmotions replaced names by ``[NAME]``: drop those sentences (as WikiText's ``<unk>`` ones),
    so the model never learns to suggest "name" where a person's name was."""
    return _plain([" ".join(s for s in _SENTENCE.split(line) if "[NAME]" not in s) for line in lines])


def _user_turns(lines: list[str]) -> list[str]:
    """Schema-Guided Dialogue: the user's turns (every other, from the first); the system's are templates."""
    return _plain(lines[0::2])


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
    Source("email_easy_ham_1", "spamassassin/easy-ham-1", "email", _plain, "PDDL-1.0 / CC0", has_test=False),
    Source("self_dialogue", "chat/self_dialogue.txt", "conversation", _plain, "BSD-3-Clause",
           "self-dialogue-LICENSE.txt"),
    Source("irc_ubuntu_linux", "chat/irc_ubuntu_linux.txt", "line", _irc, "CC BY 4.0",
           "irc-disentanglement-LICENSE-data.txt"),
    Source("topical_chat", "chat/topical_chat_valid_test.txt", "conversation", _plain, "CDLA-Sharing-1.0",
           "topical-chat-DATALICENSE.txt", share_alike=True),
    Source("goemotions_reddit", "chat/goemotions_reddit_comments.txt", "line", _without_name_placeholder,
           "Apache-2.0", "goemotions-LICENSE.txt"),
    Source("sgd_user_turns", "chat/schema_guided_dialogue.txt", "conversation", _user_turns, "CC BY-SA 4.0",
           "schema-guided-dialogue-LICENSE.txt", share_alike=True),
    Source("taskmaster4", "chat/taskmaster4.txt", "conversation", _plain, "CC BY 4.0", "taskmaster4-license.md"),
    Source("tatoeba", "sentences/tatoeba_en.txt", "line", _plain, "CC BY 2.0 FR", "tatoeba-laser-README.md"),
    Source("common_voice", "sentences/common_voice_en_2020.txt", "line", _plain, "CC0 1.0",
           "common-voice-sentences-LICENSE.txt"),
)}
TRAIN_SOURCES: tuple[str, ...] = tuple(SOURCES)  # the version 2 mixture, each source once per epoch


def source_units(source: Source, corpora: Path) -> Iterator[list[str]]:
    """The cleaned lines of each unit (line, conversation or message) of a source."""
    path = corpora / source.raw
    if source.unit == "email":
        for f in sorted(path.glob("*.txt")):
            yield source.clean(email_paragraphs(f.read_bytes()))
        return
    text = _read(path)
    if source.unit == "line":
        for line in text.splitlines():
            yield source.clean([line])
        return
    for block in re.split(r"\n\s*\n", text):
        yield source.clean(block.splitlines())


def split_source(source: Source, corpora: Path) -> dict[str, list[str]]:
    """Split name -> output lines; conversations stay whole and end with a blank line.

    The split is decided on the cleaned unit, so two raw lines that clean to
    the same text (differing only in a removed URL) share one split.
    """
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for lines in source_units(source, corpora):
        if lines:
            out[split_of("\n".join(lines), source.has_test)].extend(lines + [""] * (source.unit == "conversation"))
    return out


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


# -- rebuild data/ from the raw corpora -----------------------------------------
def _email_dir_paragraphs(directory: Path) -> list[str]:
    return [p for f in sorted(directory.glob("*.txt")) for p in email_paragraphs(f.read_bytes())]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def build_sources(shared: Path) -> dict[str, list[str]]:
    """Output file name (relative to ``data/``) -> its cleaned lines."""
    c = shared / "corpora"
    out = {"train/email_easy_ham_1.txt": _email_dir_paragraphs(c / "spamassassin" / "easy-ham-1")}
    for split in ("valid", "test"):
        out[f"train/wikitext2_{split}.txt"] = wikitext_paragraphs(_read(c / "wikitext2" / f"{split}.txt"))
    out["heldout/email_easy_ham_2.txt"] = _email_dir_paragraphs(c / "spamassassin" / "easy-ham-2")
    out["heldout/austen_persuasion.txt"] = book_paragraphs(_read(c / "austen" / "persuasion.txt"))
    out[PERSONAL_FILE] = [line.strip() for line in _read(c / "sms_ham.txt").splitlines() if line.strip()]
    return out


def rebuild(shared: Path | str, out_dir: Path | str | None = None) -> dict[str, int]:
    """Write every cleaned file under ``out_dir``; returns lines per file.

    The version 2 sources go out as ``.xz`` (preset 9; the text inside is
    what ``training.json`` hashes) with their license files.
    """
    shared = Path(shared)
    out_dir = Path(out_dir) if out_dir else require_checkout(DATA_DIR, "out_dir", exists=False)
    counts = {}
    for name, lines in build_sources(shared).items():
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts[name] = len(lines)
    for source in SOURCES.values():
        for split, lines in split_source(source, shared / "corpora").items():
            if split == "heldout" and not source.has_test:
                continue
            target = out_dir / source.file(split)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lzma.compress("".join(line + "\n" for line in lines).encode("utf-8"), preset=9))
            counts[source.file(split)] = len(lines)
        _copy_license(source, shared / "corpora" / "licenses", out_dir)
    return counts


def _copy_license(source: Source, licenses: Path, out_dir: Path) -> None:
    """``data/licenses/<file>``; a share-alike license also beside each split file of its source."""
    if source.license_file is None:
        return
    targets = [out_dir / "licenses" / source.license_file]
    if source.share_alike:
        targets += [out_dir / split / f"{source.name}.LICENSE{Path(source.license_file).suffix}" for split in SPLITS]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(licenses / source.license_file, target)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild data/ from the raw corpora.")
    parser.add_argument("--shared", required=True, help="directory holding corpora/ (see data/README.md)")
    parser.add_argument("--out", default=None, help="output directory (default: the source checkout's data/)")
    args = parser.parse_args(argv)
    for name, n in rebuild(args.shared, args.out).items():
        print(f"{n:8d} lines  {name}")


if __name__ == "__main__":
    main()
